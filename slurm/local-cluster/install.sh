#!/usr/bin/env bash
# Install what a single-node Slurm cluster with accounting needs (Debian packages), once.
# Exit 0 when everything is there; 3 when it is missing and cannot be installed here
# (not root or no apt-get), so callers can tell "cannot" from "failed".
set -euo pipefail

NEEDED=(munged mariadbd mariadb-install-db slurmdbd slurmctld slurmd sbatch sacct srun)
PACKAGES=(munge mariadb-server slurmdbd slurmctld slurmd slurm-client)

missing() {
    local command
    for command in "${NEEDED[@]}"; do
        PATH="$PATH:/usr/sbin:/sbin" command -v "$command" >/dev/null || { echo "$command"; return; }
    done
}

absent=$(missing)
[[ -z "$absent" ]] && exit 0
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "slurm local cluster: $absent is missing and this machine cannot install it" \
        "(needs root and apt-get): apt-get install ${PACKAGES[*]}" >&2
    exit 3
fi
echo "installing ${PACKAGES[*]} (missing: $absent)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
absent=$(missing)
[[ -z "$absent" ]] || { echo "installed, but $absent is still missing" >&2; exit 1; }
