#!/usr/bin/env bash
# End-to-end check of the test cluster: batch job + sacct, array job, requeue,
# scancel, then stop/start and sacct again. Needs a running cluster
# (bash slurm/cluster/start.sh); leaves it running. Takes ~1 minute.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

ok() { printf 'ok   %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*" >&2; exit 1; }
# sacct_state JOBID -> State of the job allocation (no steps)
sacct_state() { sacct -j "$1" -n -X -P -o State 2>/dev/null | tail -n1; }
# wait_state SECONDS CMD REGEX: poll until `CMD` output matches REGEX
wait_state() {
    local t=$1 cmd=$2 re=$3 i out=
    for ((i = 0; i < t * 2; i++)); do
        out=$(eval "$cmd" 2>/dev/null || true)
        [[ $out =~ $re ]] && return 0
        sleep 0.5
    done
    echo "last output of '$cmd': '$out'" >&2
    return 1
}

# 1. batch job, --wait, sacct COMPLETED
id=$(sbatch --parsable --wait -o out.txt --wrap 'sleep 1; echo hi')
[[ $(cat out.txt) == hi ]] || fail "job output: $(cat out.txt)"
wait_state 10 "sacct_state $id" '^COMPLETED$' || fail "sacct state of $id"
ok "sbatch --wait job $id COMPLETED in sacct"

# 2. array job: 4 tasks, 2 at a time on 2 CPUs
# shellcheck disable=SC2016  # expanded inside the job
id=$(sbatch --parsable --array=0-3 -c 1 -o 'arr_%a.txt' --wrap 'sleep 2; echo $SLURM_ARRAY_TASK_ID')
wait_state 10 "squeue -h -j $id -t R -o %i | wc -l" '^2$' || fail "array tasks not running 2 at once"
wait_state 30 "sacct -j $id -n -X -P -o State | sort -u" '^COMPLETED$' || fail "array $id"
ok "array job $id: 4 tasks COMPLETED, 2 ran concurrently"

# 3. requeue a running job; it must be RUNNING again within ~10 s
id=$(sbatch --parsable --requeue -o /dev/null --wrap 'sleep 30')
wait_state 15 "squeue -h -j $id -o %T" '^RUNNING$' || fail "job $id not running"
t0=$SECONDS
scontrol requeue "$id"
wait_state 5 "squeue -h -j $id -o %T" '^(PENDING|REQUEUED|COMPLETING)' || true
wait_state 20 "squeue -h -j $id -o %T" '^RUNNING$' || fail "requeued job $id not running again"
dt=$((SECONDS - t0))
sacct -j "$id" -D -n -X -P -o State | grep -x REQUEUED >/dev/null || fail "no REQUEUED in sacct -D"
ok "requeued job $id RUNNING again after ${dt}s; sacct -D shows REQUEUED"

# 4. scancel -> CANCELLED
scancel "$id"
wait_state 15 "sacct_state $id" '^CANCELLED' || fail "sacct state of cancelled $id"
ok "scancel'ed job $id CANCELLED in sacct"

# 5. restart the cluster: history must survive
bash "$HERE/stop.sh"
for d in slurmd slurmctld slurmdbd mariadbd munged slurmstepd; do
    if pgrep -x "$d" >/dev/null; then
        pgrep -a -x "$d" >&2
        fail "$d still running after stop.sh"
    fi
done
ok "stop.sh left no daemons"
t0=$SECONDS
bash "$HERE/start.sh"
ok "restart took $((SECONDS - t0))s"
wait_state 10 "sacct_state $id" '^CANCELLED' || fail "sacct history lost after restart"
id2=$(sbatch --parsable --wait -o /dev/null --wrap true)
wait_state 10 "sacct_state $id2" '^COMPLETED$' || fail "sacct after restart"
ok "sacct works after restart (old job $id, new job $id2)"
echo "selftest passed"
