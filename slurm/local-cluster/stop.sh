#!/usr/bin/env bash
# Stop the local cluster started by start.sh: each daemon by the pid it recorded, in reverse
# start order, waiting for each to exit (never by process name).
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
STATE=${1:-$HERE/../../.slurm-local}
[[ -d "$STATE" ]] || exit 0
for file in run/slurmd.pid run/slurmctld.pid run/slurmdbd.pid mysql/run/mysqld.pid munge/munged.pid; do
    [[ -s "$STATE/$file" ]] || continue
    pid=$(cat "$STATE/$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$STATE/$file"
done
