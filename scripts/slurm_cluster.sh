#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the `slurm` tests and for trying
# `hydra/launcher=slurm` before going to a real cluster: munged, slurmctld and slurmd, run as
# root, with everything they write (key, conf, state, spool, logs) in one folder owned by this
# script, $DANN_SLURM_DIR (default /tmp/dann-slurm). Nothing under /etc is touched: clients find
# the cluster through SLURM_CONF, which `start` and `env` print.
#
#   scripts/slurm_cluster.sh start    # idempotent: starts what is not running, waits for the node
#   scripts/slurm_cluster.sh status   # exit 0 when the node answers and accepts jobs
#   scripts/slurm_cluster.sh stop     # idempotent
#   scripts/slurm_cluster.sh env      # prints: export SLURM_CONF=...
#   eval "$(scripts/slurm_cluster.sh env)"; sinfo; sbatch --wrap hostname
#
# Packages (Debian/Ubuntu): apt-get install -y slurm-wlm munge (Debian 12: SLURM 22.05).
# One node named after this host, with this machine's CPUs and memory (`slurmd -C`), one
# partition `debug`. Process tracking by /proc (proctrack/linuxproc), no cgroup plugin and no
# accounting database: the cluster works in containers without a writable cgroup tree.
# Ports: DANN_SLURM_CTLD_PORT (6817), DANN_SLURM_SLURMD_PORT (6818).
set -euo pipefail

DIR="${DANN_SLURM_DIR:-/tmp/dann-slurm}"
CTLD_PORT="${DANN_SLURM_CTLD_PORT:-6817}"
SLURMD_PORT="${DANN_SLURM_SLURMD_PORT:-6818}"
CONF="$DIR/slurm.conf"
MUNGE_SOCKET="$DIR/munge/munge.socket.2"
NODE="$(hostname -s)"
export SLURM_CONF="$CONF"

die() {
    echo "slurm_cluster: $*" >&2
    exit 1
}

logs_hint() {
    echo "slurm_cluster: logs: $DIR/log/ (munged.log, slurmctld.log, slurmd.log); conf: $CONF" >&2
    for f in "$DIR"/log/*.log; do
        [ -s "$f" ] || continue
        echo "--- last lines of $f" >&2
        tail -n 15 "$f" >&2
    done
}

need_packages() {
    local missing=()
    for c in munged mungekey slurmctld slurmd sinfo sbatch scontrol; do
        command -v "$c" > /dev/null 2>&1 || missing+=("$c")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        die "missing ${missing[*]}: install the packages with 'apt-get install -y slurm-wlm munge' (as root)"
    fi
    [ "$(id -u)" = 0 ] || die "must run as root (slurmd starts jobs as their user; munged and the daemons run as root here)"
}

pid_alive() {  # pid file -> 0 when its process runs
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2> /dev/null
}

node_state() {  # idle, mixed, allocated, down*, ... or nothing when the controller does not answer
    { sinfo -h -n "$NODE" -o %T 2> /dev/null || true; } | head -n 1
}

write_conf() {
    # this machine's CPUs, sockets, cores and memory, as slurmd itself sees them
    local hw
    hw="$(slurmd -C | head -n 1)"
    [[ "$hw" == NodeName=* ]] || die "slurmd -C did not describe this node: $hw"
    hw="${hw#NodeName=* }"
    cat > "$CONF" << EOF
# written by scripts/slurm_cluster.sh: a one-node cluster on $(hostname)
ClusterName=dann
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
# tasks bound to their allocated CPUs by sched_setaffinity (no cgroup needed): a 1-CPU job sees 1 CPU
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
JobRequeue=1
# a requeued or timed-out job's processes: SIGTERM, then SIGKILL this many seconds later
KillWait=15
# finished jobs stay visible to squeue/scontrol for this long (no accounting database here)
MinJobAge=600
InactiveLimit=0
SlurmdTimeout=60
NodeName=$NODE NodeAddr=127.0.0.1 $hw State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    if pid_alive "$DIR/munge/munged.pid"; then
        return
    fi
    if [ ! -s "$DIR/munge/private/munge.key" ]; then
        mungekey --create --keyfile="$DIR/munge/private/munge.key" --force
    fi
    chmod 0600 "$DIR/munge/private/munge.key"
    munged --socket="$MUNGE_SOCKET" --key-file="$DIR/munge/private/munge.key" --pid-file="$DIR/munge/munged.pid" \
        --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/private/munged.seed" \
        || { logs_hint; die "munged did not start"; }
}

start() {
    need_packages
    if pid_alive "$DIR/run/slurmctld.pid" && pid_alive "$DIR/run/slurmd.pid" && pid_alive "$DIR/munge/munged.pid"; then
        local s
        s="$(node_state)"
        if [[ "$s" == idle* || "$s" == mixed* || "$s" == allocated* ]]; then
            echo "slurm_cluster: already running (node $NODE $s); state in $DIR"
            echo "export SLURM_CONF=$CONF"
            return
        fi
    fi
    local t0=$SECONDS
    # munged checks: the socket's folders writable by root only and searchable by all (jobs of
    # other users would authenticate through it), the key and seed readable by root only
    mkdir -p "$DIR" "$DIR/munge" "$DIR/munge/private" "$DIR/log" "$DIR/run" "$DIR/state" "$DIR/spool"
    chmod 0755 "$DIR" "$DIR/munge"
    chmod 0700 "$DIR/munge/private"
    start_munge
    local fresh=0
    if ! pid_alive "$DIR/run/slurmctld.pid" && ! pid_alive "$DIR/run/slurmd.pid"; then
        write_conf  # (re)written only while no daemon runs with the old one
        fresh=1
    fi
    if ! pid_alive "$DIR/run/slurmctld.pid"; then
        rm -f "$DIR/run/slurmctld.pid"  # stale: the daemon writes its own once it runs
        # -c: a fresh controller, no jobs from an earlier cluster
        slurmctld $([ "$fresh" = 1 ] && echo -c) || { logs_hint; die "slurmctld did not start"; }
    fi
    if ! pid_alive "$DIR/run/slurmd.pid"; then
        rm -f "$DIR/run/slurmd.pid"
        slurmd || { logs_hint; die "slurmd did not start"; }
    fi
    local s=""
    for i in $(seq 60); do
        for d in slurmctld slurmd; do
            # a daemon that wrote its pid file and is gone, or that never wrote it in 5 s, has failed
            if { [ -s "$DIR/run/$d.pid" ] || [ "$i" -gt 10 ]; } && ! pid_alive "$DIR/run/$d.pid"; then
                logs_hint
                die "$d exited (a port in use by another cluster? DANN_SLURM_CTLD_PORT, DANN_SLURM_SLURMD_PORT)"
            fi
        done
        s="$(node_state)"
        if [[ "$s" == idle* || "$s" == mixed* || "$s" == allocated* ]]; then
            break
        fi
        if [[ "$s" == down* || "$s" == drain* ]]; then
            scontrol update NodeName="$NODE" State=RESUME > /dev/null 2>&1 || true
        fi
        sleep 0.5
    done
    if [[ "$s" != idle* && "$s" != mixed* && "$s" != allocated* ]]; then
        logs_hint
        die "node $NODE is not up after 30 s (sinfo says '${s:-nothing}')"
    fi
    echo "slurm_cluster: up in $((SECONDS - t0)) s: node $NODE ($s), partition debug; state and logs in $DIR"
    echo "export SLURM_CONF=$CONF"
}

stop_pid() {  # name, pid file
    local pid
    pid_alive "$2" || return 0
    pid="$(cat "$2")"
    kill "$pid" 2> /dev/null || true
    for _ in $(seq 40); do
        kill -0 "$pid" 2> /dev/null || return 0
        sleep 0.25
    done
    echo "slurm_cluster: $1 ($pid) ignored SIGTERM for 10 s: SIGKILL" >&2
    kill -9 "$pid" 2> /dev/null || true
}

stop() {
    if [ ! -d "$DIR" ]; then
        echo "slurm_cluster: not running (no $DIR)"
        return
    fi
    # running jobs first, so no job outlives its cluster
    if pid_alive "$DIR/run/slurmctld.pid"; then
        scancel --full --quiet --user="$(id -un)" > /dev/null 2>&1 || true
    fi
    stop_pid slurmd "$DIR/run/slurmd.pid"
    stop_pid slurmctld "$DIR/run/slurmctld.pid"
    stop_pid munged "$DIR/munge/munged.pid"
    echo "slurm_cluster: stopped; logs kept in $DIR/log"
}

status() {
    local ok=0
    for d in munged:"$DIR/munge/munged.pid" slurmctld:"$DIR/run/slurmctld.pid" slurmd:"$DIR/run/slurmd.pid"; do
        if pid_alive "${d#*:}"; then
            echo "${d%%:*}: running (pid $(cat "${d#*:}"))"
        else
            echo "${d%%:*}: not running"
            ok=1
        fi
    done
    if [ "$ok" = 0 ]; then
        sinfo -N -o "%N %T %c %m %P" || ok=1
        local s
        s="$(node_state)"
        [[ "$s" == idle* || "$s" == mixed* || "$s" == allocated* ]] || ok=1
    fi
    echo "state and logs: $DIR; export SLURM_CONF=$CONF"
    return "$ok"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *)
        echo "usage: $0 start|stop|status|env   (state in \$DANN_SLURM_DIR, default /tmp/dann-slurm)" >&2
        exit 2
        ;;
esac
