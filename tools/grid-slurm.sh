#!/bin/sh
# tools/grid-slurm.sh DIR SHARDS EXPERIMENT [OPTIONS...]: an experiment's
# own grid (doc/sweeps.md) sharded over a job array of SHARDS tasks on the
# private one-node test cluster (tools/slurm-cluster.sh; root, make deps),
# as a user would run it: experiments/grid.sbatch per task with one CPU
# each (--jobs 1; the node's 2 CPUs run two tasks at once, like two
# one-CPU nodes), the doc's afterany merge job, then the cluster stopped.
# Shards in DIR/shard-I, the merged run in DIR/all, logs in DIR/logs;
# prints each task's run time and the whole wall time, and exits with the
# merge's status. The same command again continues an interrupted run
# (a new cluster; each task finds its shard's results.json and resumes).
# Not part of the suite (the whole NK Fig. 6 grid, 1,440 cells, takes
# about 15 minutes of CPU). Measured 2026-12-06 on 7bb336a at load 5-12:
# the 2-task array 1,335 s from submission to merged (763 CPU s in the
# cells), the local run 1,883 s wall (891 CPU s); findings.md, fig6.dat
# and all 1,440 cells' final figures identical:
#
#   nice -n 10 tools/grid-slurm.sh /tmp/fig6 2 experiments/nan_nk.lua
#   nice -n 10 ./neuromic experiments/nan_nk.lua --jobs 2 --out /tmp/fig6-local
#   diff <(sed -n '/^## Findings/,$p' /tmp/fig6-local/findings.md) \
#        <(sed -n '/^## Findings/,$p' /tmp/fig6/all/findings.md)
set -eu
[ $# -ge 3 ] || { echo "usage: $0 DIR SHARDS EXPERIMENT [OPTIONS...]" >&2; exit 2; }
dir=$1; shards=$2; exp=$3; shift 3
case "$shards" in *[!0-9]*|'') echo "$0: SHARDS must be a number, got '$shards'" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
mkdir -p "$dir/logs"
dir=$(cd "$dir" && pwd)
tools/slurm-cluster.sh start "$dir/cluster" >/dev/null
trap 'tools/slurm-cluster.sh stop "$dir/cluster"' EXIT
export SLURM_CONF="$dir/cluster/slurm.conf"
# a word quoted for the merge job's shell
quote() { printf "'%s'" "$(printf %s "$1" | sed "s/'/'\\\\''/g")"; }
opts=""
for a in "$@"; do opts="$opts $(quote "$a")"; done
t0=$(date +%s)
job=$(SHARDS=$shards RESULTS=$dir sbatch --parsable --cpus-per-task=1 --array=1-"$shards" \
      --output="$dir/logs/grid-%A_%a.out" experiments/grid.sbatch "$exp" "$@")
merge=$(sbatch --parsable --dependency=afterany:"$job" --output="$dir/logs/merge.out" --wrap \
        "./neuromic $(quote "$exp")$opts --merge $(quote "$dir")/shard-* --out $(quote "$dir/all")")
while [ -n "$(squeue -h -j "$job,$merge" -o %i 2>/dev/null)" ]; do sleep 2; done
t1=$(date +%s)
i=1
while [ "$i" -le "$shards" ]; do
  scontrol -o show job "${job}_$i" | tr ' ' '\n' | grep -E '^(JobState|ExitCode|RunTime)=' | tr '\n' ' '
  echo "(task $i)"
  i=$((i + 1))
done
scontrol -o show job "$merge" | tr ' ' '\n' | grep -E '^(JobState|ExitCode|RunTime)=' | tr '\n' ' '
echo "(merge)"
echo "wall time from submission to merged: $((t1 - t0)) s"
tail -n 3 "$dir/logs/merge.out"
status=$(scontrol -o show job "$merge" | sed -n 's/.*ExitCode=\([0-9]*\):.*/\1/p')
exit "${status:-1}"
