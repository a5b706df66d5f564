#!/usr/bin/env bash
# Stop the single-node SLURM test cluster started by start.sh. Idempotent.
#
#   bash slurm/cluster/stop.sh
#
# Running/pending jobs are cancelled first (set PRUNEBENCH_SLURM_KEEP_JOBS=1 to
# leave them queued in slurmctld's saved state instead). Daemons are stopped via
# their pid files, only after checking that the pid really is that daemon.
# State (job history in MariaDB, slurmctld state) is kept for the next start.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

[[ $(id -u) -eq 0 ]] || die "must run as root"
take_lock

if is_running "$SLURMCTLD_PIDFILE" slurmctld && [[ ${PRUNEBENCH_SLURM_KEEP_JOBS:-0} != 1 ]]; then
    if [[ -n $(timeout 10 squeue -h -o %i 2>/dev/null) ]]; then
        log "cancelling all jobs"
        timeout 10 scancel --partition=debug 2>/dev/null || true
        # Let slurmd tear down the job steps while it is still running.
        # shellcheck disable=SC2016
        wait_for 20 "jobs to finish" bash -c '[[ -z $(timeout 5 squeue -h -t R,CG -o %i) ]]' || true
    fi
fi

stop_daemon "$SLURMD_PIDFILE" slurmd
stop_daemon "$SLURMCTLD_PIDFILE" slurmctld
stop_daemon "$SLURMDBD_PIDFILE" slurmdbd
stop_daemon "$DB_PIDFILE" mariadbd 60
stop_daemon "$MUNGE_PIDFILE" munged

# slurmstepd outlives slurmd (by design: a restarted slurmd reattaches to it).
# Unless jobs are being kept, any left belong to this (only) node's cancelled
# jobs. pgrep -x matches the exact command name only.
if [[ ${PRUNEBENCH_SLURM_KEEP_JOBS:-0} != 1 ]]; then
    for pid in $(pgrep -x slurmstepd || true); do
        log "killing leftover slurmstepd (pid $pid)"
        kill -KILL "$pid" 2>/dev/null || true
    done
fi

log "stopped (state kept in $STATE_DIR)"
