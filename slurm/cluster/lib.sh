# Shared paths and helpers for start.sh / stop.sh (sourced, not executed).
# shellcheck shell=bash disable=SC2034  # variables are used by the sourcing scripts

STATE_DIR="${PRUNEBENCH_SLURM_DIR:-/tmp/prunebench-slurm}"
CLUSTER_NAME="${PRUNEBENCH_SLURM_CLUSTER:-prunebench}"
# MariaDB listens on loopback only, on a non-default port so it never clashes
# with a system MariaDB/MySQL on 3306.
DB_PORT="${PRUNEBENCH_SLURM_DB_PORT:-33306}"

# The client tools (sbatch, sacct, squeue, submitit...) read /etc/slurm/slurm.conf
# with no env vars needed; the copies in $STATE_DIR/etc are the source of truth.
ETC_DIR=/etc/slurm

RUN_DIR="$STATE_DIR/run"          # slurm pid files (owned by slurm)
LOG_DIR="$STATE_DIR/log"          # slurm daemon logs (owned by slurm)
SPOOL_DIR="$STATE_DIR/spool"      # slurmctld state + slurmd spool
DB_DIR="$STATE_DIR/mariadb"       # MariaDB datadir, socket, pid, log (owned by mysql)
DB_SOCKET="$DB_DIR/mariadbd.sock"
DB_PIDFILE="$DB_DIR/mariadbd.pid"

MUNGE_PIDFILE=/run/munge/munged.pid
SLURMDBD_PIDFILE="$RUN_DIR/slurmdbd.pid"
SLURMCTLD_PIDFILE="$RUN_DIR/slurmctld.pid"
SLURMD_PIDFILE="$RUN_DIR/slurmd.pid"

# Serialise concurrent start.sh/stop.sh calls (e.g. parallel test workers).
# The lock lives next to, not inside, the state dir so `rm -rf` of it is safe.
take_lock() {
    exec 9>"${STATE_DIR%/}.lock"
    flock -w 300 9 || die "could not get lock ${STATE_DIR%/}.lock"
}

log() { printf '[prunebench-slurm] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# pid_of PIDFILE NAME -> prints the pid if PIDFILE names a live process whose
# command name is NAME (guards against stale pid files and recycled pids).
pid_of() {
    local pidfile=$1 name=$2 pid comm
    [[ -r $pidfile ]] || return 1
    pid=$(tr -dc '0-9' <"$pidfile")
    [[ -n $pid && -r /proc/$pid/comm ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    # /proc/PID/comm is truncated to 15 chars; compare against the same prefix.
    [[ $comm == "${name:0:15}" ]] || return 1
    echo "$pid"
}

is_running() { pid_of "$1" "$2" >/dev/null; }

# stop_daemon PIDFILE NAME [TIMEOUT_S]: SIGTERM, wait, then SIGKILL.
stop_daemon() {
    local pidfile=$1 name=$2 timeout=${3:-30} pid i
    if ! pid=$(pid_of "$pidfile" "$name"); then
        rm -f "$pidfile"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
        [[ -d /proc/$pid ]] || break
        sleep 0.1
    done
    if [[ -d /proc/$pid ]]; then
        log "$name (pid $pid) ignored SIGTERM for ${timeout}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            [[ -d /proc/$pid ]] || break
            sleep 0.1
        done
    fi
    rm -f "$pidfile"
}

# wait_for SECONDS DESCRIPTION CMD...: poll CMD every 0.5 s until it succeeds.
wait_for() {
    local timeout=$1 what=$2 i
    shift 2
    for ((i = 0; i < timeout * 2; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    log "timed out after ${timeout}s waiting for $what"
    return 1
}
