#!/usr/bin/env bash
# Start a real single-node Slurm cluster on loopback, without systemd: munged, MariaDB,
# slurmdbd (accounting: submitit reads job states through sacct), slurmctld and slurmd,
# with a default `cpu` partition, a `v100` partition and two fake GPUs (GRES on /dev/null).
# Everything lives under STATE_DIR (default: .slurm-local/ at the repository root); each
# start begins with a fresh state. Idempotent: a running cluster is left alone.
# Prints the SLURM_CONF line to export; stop with stop.sh (by the recorded pids).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
STATE=$(mkdir -p "${1:-$HERE/../../.slurm-local}" && cd "${1:-$HERE/../../.slurm-local}" && pwd)
CONF="$STATE/etc/slurm.conf"
PIDS=(munge/munged.pid mysql/run/mysqld.pid run/slurmdbd.pid run/slurmctld.pid run/slurmd.pid)
CPUS=$(nproc)
PATH="$PATH:/usr/sbin:/sbin"

alive() { [[ -s "$STATE/$1" ]] && kill -0 "$(cat "$STATE/$1")" 2>/dev/null; }

running=0
for pid in "${PIDS[@]}"; do alive "$pid" && running=$((running + 1)); done
if [[ $running -eq ${#PIDS[@]} ]] && SLURM_CONF="$CONF" sinfo -h >/dev/null 2>&1; then
    echo "slurm local cluster: already running" >&2
    echo "export SLURM_CONF=$CONF"
    exit 0
fi
[[ $running -eq 0 ]] || "$HERE/stop.sh" "$STATE" >&2

[[ $(id -u) -eq 0 ]] || { echo "start.sh runs the daemons as root: run it as root" >&2; exit 3; }
"$HERE/install.sh"

rm -rf "${STATE:?}"/{etc,munge,mysql,run,log,ctld,spool,dev}
mkdir -p "$STATE"/{etc,munge,mysql/data,mysql/run,run,log,ctld,spool,dev}
chown munge:munge "$STATE/munge" && chmod 755 "$STATE/munge"
chown -R mysql:mysql "$STATE/mysql"
# Slurm 22.05 clients reach munge on its default socket whatever AuthInfo says
MUNGE_SOCKET=/run/munge/munge.socket.2
mkdir -p /run/munge && chown munge:munge /run/munge
MYSQL_SOCKET="$STATE/mysql/run/mysqld.sock"

cat > "$CONF" <<CONF
ClusterName=heritageseg
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=2
AuthInfo=cred_expire=10
KillWait=5
MinJobAge=300
MailProg=/bin/true
JobRequeue=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=20000 Gres=gpu:v100:2 State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=v100 Nodes=localhost MaxTime=INFINITE State=UP
CONF
# two fake GPUs: gres needs one character device per GPU (its number from the name); these
# are copies of /dev/null, never opened by anything
for gpu in 0 1; do mknod -m 666 "$STATE/dev/nvidia$gpu" c 1 3; done
echo "NodeName=localhost Name=gpu Type=v100 File=$STATE/dev/nvidia[0-1]" > "$STATE/etc/gres.conf"
cat > "$STATE/etc/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
CONF
chmod 600 "$STATE/etc/slurmdbd.conf"

wait_for() {  # wait_for SECONDS WHAT COMMAND...: poll until COMMAND succeeds
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        if [[ $SECONDS -ge $deadline ]]; then
            echo "slurm local cluster: $what did not come up; logs in $STATE/log" >&2
            exit 1
        fi
        sleep 0.2
    done
}

[[ -S "$MUNGE_SOCKET" ]] && ! munge -n >/dev/null 2>&1 && rm -f "$MUNGE_SOCKET"
runuser -u munge -- munged --pid-file="$STATE/munge/munged.pid" \
    --log-file="$STATE/munge/munged.log" --seed-file="$STATE/munge/munged.seed"
wait_for 10 munged munge -n

mariadb-install-db --user=mysql --datadir="$STATE/mysql/data" --skip-test-db \
    --auth-root-authentication-method=socket >"$STATE/log/mariadb-install.log" 2>&1
mariadbd --user=mysql --datadir="$STATE/mysql/data" --socket="$MYSQL_SOCKET" \
    --pid-file="$STATE/mysql/run/mysqld.pid" --skip-networking \
    --log-error="$STATE/log/mariadb.log" </dev/null >/dev/null 2>&1 &
wait_for 30 MariaDB mariadb --socket="$MYSQL_SOCKET" -e "select 1"

export SLURM_CONF="$CONF" MYSQL_UNIX_PORT="$MYSQL_SOCKET"
slurmdbd  # reads slurmdbd.conf next to $SLURM_CONF
wait_for 30 slurmdbd sacctmgr -n list cluster
slurmctld -c -f "$CONF"
slurmd -N localhost -f "$CONF" || { echo "slurmd failed: see $STATE/log/slurmd.log" >&2; exit 1; }
wait_for 30 "the idle node" bash -c "sinfo -h -o %t | grep -qx idle"
wait_for 30 accounting sacct -n -X
echo "export SLURM_CONF=$CONF"
