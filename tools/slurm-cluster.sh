#!/bin/sh
# tools/slurm-cluster.sh: a private one-node Slurm cluster on this machine,
# for the tests (spec/slurm_spec.lua). Needs root and Debian's slurm-wlm and
# munge (make deps). Everything lives under DIR: its own munged (own key and
# socket), slurmctld and slurmd on loopback ports free at start, state,
# spool and logs. Nothing is installed or started outside DIR.
#
#   tools/slurm-cluster.sh start DIR   # starts it; prints the SLURM_CONF to export
#   tools/slurm-cluster.sh stop DIR    # cancels its jobs, stops every daemon it started, by PID
#
# start waits until the node is idle (about 1-2 s) and stops what it
# started if anything fails. Clients need SLURM_CONF=DIR/slurm.conf.
set -eu
cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

stop() {
  # The jobs first: a job's slurmstepd and processes outlive slurmd.
  ctld="$dir/slurmctld.pid"
  if [ -s "$ctld" ] && kill -0 "$(cat "$ctld")" 2>/dev/null; then
    SLURM_CONF="$dir/slurm.conf" scancel --user=root 2>/dev/null || true
    i=0
    while [ -n "$(SLURM_CONF="$dir/slurm.conf" squeue -h -o %i 2>/dev/null)" ] && [ $i -lt 150 ]; do
      sleep 0.1; i=$((i + 1))
    done
  fi
  for d in slurmd slurmctld munged; do
    f="$dir/$d.pid"
    [ -s "$f" ] || continue
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
  done
}

case "$cmd" in
  stop) stop; exit 0 ;;
  start) ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac

for p in /usr/sbin/munged /usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/sbatch; do
  [ -x "$p" ] || { echo "$0: $p missing (install slurm-wlm and munge: make deps)" >&2; exit 3; }
done
[ "$(id -u)" = 0 ] || { echo "$0: must run as root (slurmd runs jobs as their user)" >&2; exit 3; }

trap 'stop' EXIT
mkdir -p "$dir/munge" "$dir/state" "$dir/spool"
chmod 700 "$dir" "$dir/munge"
host=$(hostname -s)
# two loopback ports free now
ports=$(python3 -c 'import socket
ss=[socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
set -- $ports
ctld_port=$1; slurmd_port=$2

dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 2>/dev/null
chmod 400 "$dir/munge/munge.key"
sock="$dir/munge/munge.socket"
/usr/sbin/munged --foreground --force --socket="$sock" --key-file="$dir/munge/munge.key" \
  --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
  --seed-file="$dir/munge/munged.seed" >"$dir/munged.out" 2>&1 &
echo $! >"$dir/munged.pid"
i=0
while [ ! -S "$sock" ]; do
  i=$((i + 1)); [ $i -lt 100 ] || { echo "$0: munged did not start; see $dir/munged.out" >&2; exit 1; }
  sleep 0.05
done

cat >"$dir/slurm.conf" <<CONF
ClusterName=nmtest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$sock
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pidfile
SlurmdPidFile=$dir/slurmd.pidfile
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SchedulerParameters=sched_interval=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$dir/slurm.conf"
/usr/sbin/slurmctld -D -c -f "$SLURM_CONF" >"$dir/slurmctld.out" 2>&1 &
echo $! >"$dir/slurmctld.pid"
/usr/sbin/slurmd -D -N "$host" -f "$SLURM_CONF" >"$dir/slurmd.out" 2>&1 &
echo $! >"$dir/slurmd.pid"
i=0
until sinfo -h -N -o %t 2>/dev/null | grep -qx idle; do
  i=$((i + 1))
  [ $i -lt 150 ] || { echo "$0: the node did not become idle; see $dir/slurmctld.log and $dir/slurmd.log" >&2; exit 1; }
  sleep 0.1
done
trap - EXIT
echo "SLURM_CONF=$SLURM_CONF"
