#!/usr/bin/env bash
# A throw-away single-node SLURM cluster on this machine, for the tests (tests/test_slurm.py) and for trying the
# SLURM profile by hand. Debian packages slurmctld, slurmd and munge (22.05); no systemd needed.
#
#   scripts/slurm/cluster.sh start    write /etc/slurm/{slurm,gres}.conf (any existing ones are backed up), start
#                                     munged, slurmctld and slurmd in the background, wait until the node is idle
#   scripts/slurm/cluster.sh stop     cancel the cluster's jobs, stop the daemons by their PIDs, restore /etc/slurm
#   scripts/slurm/cluster.sh status   daemons, partition and node state
#   scripts/slurm/cluster.sh check    can a cluster start here? (exit 0, or 77 with the reason on stderr)
#
# The node declares one GPU (GRES gpu:1 backed by /dev/null) so that jobs asking for `--gpus=1` schedule on a
# machine without one. Everything the daemons write goes to $GENASTRO_SLURM_DIR (default /tmp/genastro-slurm):
# munge key and socket, spool and state directories, logs, PID files. Needs root (slurmd runs jobs as their
# user, and the plugin's job step reads /etc/slurm/slurm.conf because it drops SLURM_CONF).
#
# Environment: GENASTRO_SLURM_DIR, GENASTRO_SLURM_PARTITION (default "gpu"), GENASTRO_SLURM_NODE (default
# "genastro-node"), GENASTRO_SLURM_PORTS ("6817 6818": slurmctld and slurmd ports), GENASTRO_SLURM_TIMEOUT
# (seconds to wait for the node, default 60).
# Exit status: 0 ok, 1 failure (daemon logs printed), 77 cannot run here (reason on stderr; tests skip).
set -uo pipefail

STATE=${GENASTRO_SLURM_DIR:-/tmp/genastro-slurm}
PARTITION=${GENASTRO_SLURM_PARTITION:-gpu}
NODE=${GENASTRO_SLURM_NODE:-genastro-node}
read -r CTLD_PORT SLURMD_PORT <<<"${GENASTRO_SLURM_PORTS:-6817 6818}"
WAIT=${GENASTRO_SLURM_TIMEOUT:-60}
ETC=/etc/slurm
MARK="# genastro test cluster (scripts/slurm/cluster.sh); restored by 'cluster.sh stop'"
DAEMONS=(slurmd slurmctld munged)   # stop order

say() { echo "cluster.sh: $*" >&2; }

skip() { say "cannot start a SLURM cluster here: $*"; exit 77; }

check() {
    [[ $(id -u) -eq 0 ]] || skip "needs root (slurmd runs jobs as their submitting user)"
    local missing=()
    for exe in munged slurmctld slurmd sinfo sbatch squeue scontrol scancel srun; do
        command -v "$exe" >/dev/null 2>&1 || missing+=("$exe")
    done
    [[ ${#missing[@]} -eq 0 ]] || skip "missing ${missing[*]} (apt-get install slurmctld slurmd munge)"
    for port in "$CTLD_PORT" "$SLURMD_PORT"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            [[ -f $STATE/slurmctld.pid ]] || skip "port $port is in use (another SLURM?); set GENASTRO_SLURM_PORTS"
        fi
    done
}

pid_of() {  # the PID recorded for a daemon, if that process is still alive and is that daemon
    local name=$1 pid
    [[ -f $STATE/$name.pid ]] || return 1
    pid=$(cat "$STATE/$name.pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && [[ -d /proc/$pid ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name"* ]] || return 1
    echo "$pid"
}

alive() {  # the process recorded for a daemon still exists (it may still be the shell about to exec it)
    local pid
    pid=$(cat "$STATE/$1.pid" 2>/dev/null) && [[ $pid =~ ^[0-9]+$ ]] && [[ -d /proc/$pid ]]
}

write_config() {
    local cpus mem host
    # what slurmd sees on this machine: CPUs, and memory less a margin (a node with less memory than configured
    # is drained)
    local detected
    detected=$(slurmd -C 2>/dev/null | head -1)
    cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$detected")
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$detected")
    cpus=${cpus:-$(nproc)}
    mem=$(( ${mem:-$(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo)} * 9 / 10 ))
    host=$(hostname -s)
    mkdir -p "$ETC" "$STATE/backup"
    for f in slurm.conf gres.conf; do
        if [[ -e $ETC/$f ]] && ! head -1 "$ETC/$f" | grep -qF "$MARK"; then
            [[ -e $STATE/backup/$f ]] || cp -p "$ETC/$f" "$STATE/backup/$f"
        fi
    done
    cat >"$ETC/slurm.conf" <<CONF
$MARK
ClusterName=genastro
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge/munge.socket
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.daemon.pid
SlurmdPidFile=$STATE/slurmd.daemon.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# finished jobs stay visible to squeue/scontrol for an hour: the Snakemake plugin's status command is squeue here
# (no slurmdbd, so no sacct)
MinJobAge=3600
ReturnToService=2
KillWait=10
InactiveLimit=0
SchedulerParameters=sched_interval=2
GresTypes=gpu
NodeName=$NODE NodeHostname=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
    cat >"$ETC/gres.conf" <<CONF
$MARK
# one pretend GPU: lets --gpus=1 / --gres=gpu:1 jobs schedule on a machine without one
AutoDetect=off
NodeName=$NODE Name=gpu File=/dev/null Count=1
CONF
}

start_daemon() {  # name, command...: run in the background in a session of its own, record its PID
    local name=$1
    shift
    rm -f "$STATE/$name.pid"
    # the shell writes its own PID, then becomes the daemon (exec): right whether or not setsid forks
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$STATE/$name.pid" "$@" >"$STATE/log/$name.out" 2>&1 </dev/null &
    local t0=$SECONDS
    until [[ -s $STATE/$name.pid ]]; do
        (( SECONDS - t0 > 10 )) && { say "$name: no PID after 10 s"; return 1; }
        sleep 0.1
    done
}

dump_logs() {
    for f in "$STATE"/log/*; do
        [[ -f $f ]] || continue
        echo "----- $f" >&2
        tail -n 25 "$f" >&2
    done
}

start() {
    check
    if pid_of slurmctld >/dev/null || pid_of slurmd >/dev/null || pid_of munged >/dev/null; then
        say "already running (state in $STATE); 'cluster.sh stop' first"
        return 1
    fi
    rm -rf "$STATE/munge" "$STATE/slurmctld" "$STATE/slurmd" "$STATE/log"
    mkdir -p "$STATE"/{munge,slurmctld,slurmd,log}
    chmod 0755 "$STATE" "$STATE"/{slurmctld,slurmd,log}
    chmod 0755 "$STATE/munge"  # clients (any user) reach the socket; the key inside is 0400
    date +%s >"$STATE/started"
    write_config

    # munge: a fresh key and a socket of our own (a system munged, if any, is left alone)
    dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
    chmod 0400 "$STATE/munge/munge.key"
    start_daemon munged munged -F --force --key-file="$STATE/munge/munge.key" \
        --socket="$STATE/munge/munge.socket" --pid-file="$STATE/munge/munged.pid" \
        --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/munged.seed"
    local t0=$SECONDS
    until [[ -S $STATE/munge/munge.socket ]]; do
        if ! alive munged || (( SECONDS - t0 > 15 )); then
            say "munged did not start"; dump_logs; stop_daemons; restore_config; return 1
        fi
        sleep 0.2
    done

    if ! start_daemon slurmctld slurmctld -D -c -f "$ETC/slurm.conf" ||
            ! start_daemon slurmd slurmd -D -N "$NODE" -f "$ETC/slurm.conf"; then
        dump_logs; stop_daemons; restore_config; return 1
    fi

    t0=$SECONDS
    local state=""
    while (( SECONDS - t0 < WAIT )); do
        for name in munged slurmctld slurmd; do
            if ! alive "$name"; then
                say "$name exited during start-up"; dump_logs; stop_daemons; restore_config; return 1
            fi
        done
        state=$(timeout 10 sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1)
        if [[ $state == idle ]]; then
            say "up in $(( SECONDS - t0 )) s: partition $PARTITION, node $NODE ($(timeout 10 sinfo -h -n "$NODE" -o '%c CPUs, %m MB, %G'))"
            return 0
        fi
        sleep 1
    done
    say "node $NODE not idle after $WAIT s (state '${state:-unknown}')"
    dump_logs
    stop
    return 1
}

stop_daemons() {
    local name pid
    for name in "${DAEMONS[@]}"; do
        pid=$(pid_of "$name") || { rm -f "$STATE/$name.pid"; continue; }
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 50); do [[ -d /proc/$pid ]] || break; sleep 0.2; done
        if [[ -d /proc/$pid ]]; then
            say "$name ($pid) ignored SIGTERM for 10 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null
        fi
        rm -f "$STATE/$name.pid"
    done
}

stop_leftover_steps() {
    # job step daemons (slurmstepd) detach from slurmd; a job killed with its daemons leaves them behind. Only
    # those started after this cluster and re-parented to init are ours.
    local started pid
    started=$(cat "$STATE/started" 2>/dev/null || echo 0)
    local boot ticks
    boot=$(awk '/^btime/ {print $2}' /proc/stat)
    ticks=$(getconf CLK_TCK)
    for pid in $(pgrep -x slurmstepd 2>/dev/null); do
        local ppid start
        ppid=$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null) || continue
        start=$(( boot + $(awk '{print $22}' "/proc/$pid/stat" 2>/dev/null || echo 0) / ticks ))
        if [[ $ppid == 1 ]] && (( start >= started )); then
            say "stopping leftover slurmstepd $pid"
            kill -KILL "$pid" 2>/dev/null
        fi
    done
}

restore_config() {
    for f in slurm.conf gres.conf; do
        if [[ -e $STATE/backup/$f ]]; then
            mv -f "$STATE/backup/$f" "$ETC/$f"
        elif [[ -e $ETC/$f ]] && head -1 "$ETC/$f" | grep -qF "$MARK"; then
            rm -f "$ETC/$f"
        fi
    done
}

stop() {
    if pid_of slurmctld >/dev/null; then
        # cancel what is still queued or running, give it a few seconds to go
        timeout 10 scancel --partition="$PARTITION" >/dev/null 2>&1
        for _ in $(seq 15); do
            [[ -z $(timeout 5 squeue -h -t PD,R,CG -o %i 2>/dev/null) ]] && break
            sleep 1
        done
    fi
    stop_daemons
    stop_leftover_steps
    restore_config
    say "stopped"
}

status() {
    local rc=0 name pid
    for name in munged slurmctld slurmd; do
        if pid=$(pid_of "$name"); then echo "$name: running (pid $pid)"; else echo "$name: not running"; rc=3; fi
    done
    if pid_of slurmctld >/dev/null; then
        timeout 10 sinfo -N -o '%N %P %T %c %m %G' || rc=3
        timeout 10 squeue || rc=3
    fi
    return $rc
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    check) check ;;
    *) echo "usage: $0 start|stop|status|check" >&2; exit 2 ;;
esac
