#!/usr/bin/env bash
# A real 2-node Slurm cluster on this one machine, to try mgft (and test it) without a cluster.
#
#   slurm/cluster.sh up       start munge, mariadb, slurmdbd, slurmctld, slurmd node1 and node2
#   slurm/cluster.sh down     cancel its jobs and stop what `up` started (pid files), nothing else
#   slurm/cluster.sh status   one line per daemon; exit 0 when all run, 3 when none, 1 when some
#   slurm/cluster.sh env      print `export SLURM_CONF=...` for the client commands (eval it)
#   slurm/cluster.sh purge    down, then delete the state directory (job ids restart at 1)
#
# Debian's packages (slurmctld slurmd slurm-client munge slurmdbd mariadb-server, see
# slurm/install-deps.sh), run as root: slurmd must run jobs as any user and gets its own UTS
# namespace. Every file lives under $MGFT_SLURM_DIR (default /tmp/mgft-slurm-<id>, <id> from
# this checkout's path, so each checkout has its own and one's `down` or `purge` never touches
# another's); outside it only /etc/hosts gains "127.0.0.2 node1" and "127.0.0.3 node2", so the
# node names resolve in jobs.
# Ports: $MGFT_SLURM_PORT (default 6817) for slurmctld, +2 slurmdbd, +11/+12 the two slurmd,
# +20 mariadb; all bound to 127.0.0.0/8.
# The node names, their addresses and munge's socket belong to the machine, not the checkout:
# `up` refuses (exit 4) while another checkout's cluster runs, naming its state directory.
# Why a slurm.conf line is there: the comment above it.
set -euo pipefail

CHECKOUT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
DIR=${MGFT_SLURM_DIR:-/tmp/mgft-slurm-$(printf '%s' "$CHECKOUT" | sha256sum | cut -c1-8)}
PORT=${MGFT_SLURM_PORT:-6817}
NODES=(node1 node2)
ADDRS=(127.0.0.2 127.0.0.3)
CPUS=4        # advertised per node (config_overrides): more than this 2-core machine has
MEMORY=8000   # MB per node
CLUSTER=mgft
MUNGE_SOCKET=/run/munge/munge.socket.2  # the default: slurmdbd ignores AuthInfo=socket=
HOSTS_MARK="# mgft-slurm"
DB_PORT=$((PORT + 20))
DBD_PORT=$((PORT + 2))
CONF=$DIR/etc/slurm.conf
export SLURM_CONF=$CONF

log() { printf 'mgft-slurm: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# $1 seconds, then a command: retry it every 0.2 s until it succeeds or time runs out.
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# A pid file names a live process of ours only if that process runs the expected program:
# a stale file whose pid was reused by someone else must never get a signal from us.
live_pid() {  # $1 pid file, $2 program name
  local pid comm
  [[ -s $1 ]] || return 1
  pid=$(<"$1")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
  [[ $comm == "$2"* ]] || return 1
  echo "$pid"
}

# The state directory of a running daemon of ours, from how cluster.sh started it: slurm.conf
# (-f, or SLURM_CONF for slurmdbd) in DIR/etc, mariadbd's --datadir=DIR/db, munged's
# --pid-file=DIR/run/munged.pid. Empty for a daemon started some other way.
state_dir_of() {  # $1 pid
  local arg prev="" found=""
  while IFS= read -r -d '' arg; do
    case $prev:$arg in
      -f:*/etc/slurm.conf) found=${arg%/etc/slurm.conf} ;;
      *:--datadir=*/db) found=${arg#--datadir=}; found=${found%/db} ;;
      *:--pid-file=*/run/munged.pid) found=${arg#--pid-file=}; found=${found%/run/munged.pid} ;;
    esac
    prev=$arg
  done < "/proc/$1/cmdline"
  if [[ -z $found ]]; then
    found=$(tr '\0' '\n' < "/proc/$1/environ" 2>/dev/null | sed -n 's|^SLURM_CONF=\(.*\)/etc/slurm.conf$|\1|p')
  fi
  printf '%s' "$found"
}

# Daemons of a Slurm cluster other than this checkout's: "program (pid N, state in DIR)".
# A munged or mariadbd that no cluster.sh started is not one (the system's own munge is used).
other_clusters() {
  local pid comm dir file
  for file in /proc/[0-9]*/comm; do  # /proc, not pgrep: slim images lack procps
    { read -r comm < "$file"; } 2>/dev/null || continue
    case $comm in slurmctld|slurmd|slurmdbd|munged|mariadbd) ;; *) continue ;; esac
    pid=${file#/proc/} pid=${pid%/comm}
    dir=$(state_dir_of "$pid" 2>/dev/null) || dir=""
    [[ $dir -ef $DIR ]] && continue
    if [[ -n $dir ]]; then
      printf '%s (pid %s, state in %s)\n' "$comm" "$pid" "$dir"
    elif [[ $comm == slurm* ]]; then
      printf '%s (pid %s, not started by cluster.sh)\n' "$comm" "$pid"
    fi
  done
}

refuse_other_clusters() {
  local others
  others=$(other_clusters)
  [[ -z $others ]] && return 0
  log "error: another Slurm cluster runs on this machine, and both would use node1, node2 and their ports:"
  local line
  while IFS= read -r line; do printf '  %s\n' "$line" >&2; done <<< "$others"
  log "stop it from its checkout (slurm/cluster.sh down, or MGFT_SLURM_DIR=<its state dir> slurm/cluster.sh down), then run this again"
  exit 4
}

need_root_and_binaries() {
  [[ $(id -u) == 0 ]] || die "run as root (slurmd runs jobs as their users and needs its own UTS namespace)"
  local missing=() bin
  for bin in munged mungekey mariadbd mariadb-install-db mariadb slurmdbd slurmctld slurmd sbatch sacctmgr unshare; do
    command -v "$bin" >/dev/null || missing+=("$bin")
  done
  ((${#missing[@]} == 0)) || die "missing ${missing[*]}; install them with slurm/install-deps.sh"
}

add_hosts() {
  local i line
  for i in "${!NODES[@]}"; do
    line="${ADDRS[$i]} ${NODES[$i]} $HOSTS_MARK"
    grep -qxF "$line" /etc/hosts || printf '%s\n' "$line" >> /etc/hosts
  done
}

write_configs() {
  mkdir -p "$DIR"/{etc,run,log,state/ctld,munge,db}
  [[ -s $DIR/etc/dbpass ]] || (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$DIR/etc/dbpass")
  local ctld_host i
  ctld_host=$(hostname -s)
  {
    echo "# Written by slurm/cluster.sh; rewritten by every 'up'."
    echo "ClusterName=$CLUSTER"
    echo "SlurmctldHost=$ctld_host(127.0.0.1)"
    echo "SlurmctldPort=$PORT"
    echo "SlurmUser=root"
    echo "AuthType=auth/munge"
    echo "CredType=cred/munge"
    # The default 120 s credential lifetime delays every requeued job by 121 s; 5 is the least.
    echo "AuthInfo=cred_expire=5"
    echo "StateSaveLocation=$DIR/state/ctld"
    echo "SlurmdSpoolDir=$DIR/state/slurmd-%n"
    echo "SlurmctldPidFile=$DIR/run/slurmctld.pid"
    echo "SlurmdPidFile=$DIR/run/slurmd-%n.pid"
    echo "SlurmctldLogFile=$DIR/log/slurmctld.log"
    echo "SlurmdLogFile=$DIR/log/slurmd-%n.log"
    # cgroup tracking leaves directories behind and pins every task to CPU 0 here.
    echo "ProctrackType=proctrack/linuxproc"
    echo "TaskPlugin=task/none"
    echo "JobAcctGatherType=jobacct_gather/none"
    echo "MpiDefault=none"
    echo "SelectType=select/cons_tres"
    echo "SelectTypeParameters=CR_Core"
    echo "SchedulerType=sched/backfill"
    echo "SchedulerParameters=sched_interval=2,bf_interval=1"
    # Advertise more CPUs and memory than this machine has (CPUS, MEMORY above).
    echo "SlurmdParameters=config_overrides"
    echo "ReturnToService=2"
    echo "KillWait=15"
    echo "InactiveLimit=0"
    # sacct must work: without accounting submitit's job.state stays UNKNOWN and a job that
    # dies without a result makes result() wait forever.
    echo "AccountingStorageType=accounting_storage/slurmdbd"
    echo "AccountingStorageHost=127.0.0.1"
    echo "AccountingStoragePort=$DBD_PORT"
    echo "JobCompType=jobcomp/none"
    echo "MailProg=/bin/true"
    for i in "${!NODES[@]}"; do
      echo "NodeName=${NODES[$i]} NodeHostname=${NODES[$i]} NodeAddr=${ADDRS[$i]} Port=$((PORT + 11 + i)) CPUs=$CPUS RealMemory=$MEMORY State=UNKNOWN"
    done
    echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
  } > "$CONF"
  (
    umask 077  # slurmdbd refuses a readable slurmdbd.conf (it holds the database password)
    cat > "$DIR/etc/slurmdbd.conf" <<EOF
# Written by slurm/cluster.sh; rewritten by every 'up'.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(<"$DIR/etc/dbpass")
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/etc/slurmdbd.conf"
  )
}

munge_works() { munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET" >/dev/null; }

start_munge() {
  if live_pid "$DIR/run/munged.pid" munged >/dev/null; then return; fi
  if [[ -S $MUNGE_SOCKET ]] && munge_works 2>/dev/null; then
    log "munge: using the munged already serving $MUNGE_SOCKET (not ours, never stopped)"
    return
  fi
  [[ -s $DIR/munge/munge.key ]] || mungekey --create --keyfile="$DIR/munge/munge.key" --force
  chmod 600 "$DIR/munge/munge.key"
  # munged refuses a socket directory that others can write to.
  mkdir -p "${MUNGE_SOCKET%/*}" && chmod 755 "${MUNGE_SOCKET%/*}"
  munged --force --key-file="$DIR/munge/munge.key" --pid-file="$DIR/run/munged.pid" \
    --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" -S "$MUNGE_SOCKET" 9>&-
  wait_for 10 munge_works || die "munged did not start; see $DIR/log/munged.log"
}

sql() { mariadb --no-defaults --socket="$DIR/run/mysqld.sock" -u root "$@"; }

start_mariadb() {
  if ! live_pid "$DIR/run/mariadb.pid" mariadbd >/dev/null; then
    if [[ ! -d $DIR/db/mysql ]]; then
      mariadb-install-db --no-defaults --user=root --datadir="$DIR/db" \
        --auth-root-authentication-method=socket --skip-test-db > "$DIR/log/mariadb-install.log" 2>&1 \
        || die "mariadb-install-db failed; see $DIR/log/mariadb-install.log"
    fi
    # setsid: the server must outlive this script's session (make, CI steps, ssh).
    setsid mariadbd --no-defaults --user=root --datadir="$DIR/db" --socket="$DIR/run/mysqld.sock" \
      --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
      --pid-file="$DIR/run/mariadb.pid" --log-error="$DIR/log/mariadb.log" \
      --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 --innodb-flush-log-at-trx-commit=2 \
      < /dev/null > /dev/null 2>&1 9>&- &
    wait_for 30 sql -e 'SELECT 1' || die "mariadb did not start; see $DIR/log/mariadb.log"
  fi
  local pass
  pass=$(<"$DIR/etc/dbpass")
  sql -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
          ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
          GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

start_slurmdbd() {
  if ! live_pid "$DIR/run/slurmdbd.pid" slurmdbd >/dev/null; then
    SLURM_CONF=$CONF slurmdbd 9>&-
  fi
  wait_for 30 sacctmgr -n show cluster || die "slurmdbd did not answer; see $DIR/log/slurmdbd.log"
  if [[ -z $(sacctmgr -n -P show cluster "$CLUSTER" format=cluster) ]]; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
  fi
}

start_slurmctld() {
  if ! live_pid "$DIR/run/slurmctld.pid" slurmctld >/dev/null; then
    slurmctld -f "$CONF" 9>&-
  fi
  wait_for 30 scontrol ping || die "slurmctld did not answer; see $DIR/log/slurmctld.log"
}

start_slurmd() {
  local i node
  for i in "${!NODES[@]}"; do
    node=${NODES[$i]}
    live_pid "$DIR/run/slurmd-$node.pid" slurmd >/dev/null && continue
    mkdir -p "$DIR/state/slurmd-$node"
    # Its own UTS namespace, so `hostname` is the node name inside jobs: torchrun's c10d
    # rendezvous decides which agent hosts the store by comparing hostnames.
    # shellcheck disable=SC2016  # $1 and $2 are the inner sh's arguments
    unshare --uts sh -c 'hostname "$1" && exec slurmd -N "$1" -f "$2"' slurmd "$node" "$CONF" 9>&-
  done
  nodes_idle() { ! sinfo -h -N -o '%T' | grep -qvE '^(idle|mixed|allocated)$'; }
  wait_for 30 nodes_idle || die "nodes not idle: $(sinfo -h -N -o '%N %T %E' | tr '\n' ' ')"
}

up() {
  refuse_other_clusters
  need_root_and_binaries
  mkdir -p "$DIR"
  # One cluster.sh at a time. Every daemon is started with fd 9 closed (9>&-), or it would
  # hold the lock for as long as it runs.
  exec 9> "$DIR/lock"
  flock -w 120 9 || die "another cluster.sh holds $DIR/lock"
  local start=$SECONDS
  add_hosts
  write_configs
  start_munge
  start_mariadb
  start_slurmdbd
  start_slurmctld
  start_slurmd
  log "up in $((SECONDS - start)) s: ${NODES[*]} idle; state in $DIR"
  log "clients need: export SLURM_CONF=$CONF"
}

stop() {  # pairs of (pid file, program): SIGTERM to each, then SIGKILL what is left after 15 s
  local pids=() files=() pid
  while (($#)); do
    if pid=$(live_pid "$1" "$2"); then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
    files+=("$1")
    shift 2
  done
  local deadline=$((SECONDS + 15))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$(cat "/proc/$pid/comm" 2>/dev/null) ($pid) ignored SIGTERM for 15 s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  rm -f "${files[@]}"
}

down() {
  [[ -d $DIR ]] || { log "nothing to stop: no $DIR"; return 0; }
  exec 9> "$DIR/lock"
  flock -w 120 9 || die "another cluster.sh holds $DIR/lock"
  local start=$SECONDS node
  # Jobs first: slurmstepd outlives slurmd, so stopping the daemons alone would leave the jobs'
  # processes running with nobody to end them.
  local jobs=()
  if live_pid "$DIR/run/slurmctld.pid" slurmctld >/dev/null; then
    mapfile -t jobs < <(squeue -h -o %A)
  fi
  if ((${#jobs[@]})); then
    scancel --full --quiet "${jobs[@]}" || true
    no_jobs() { [[ -z $(squeue -h -o %A) ]]; }
    wait_for 30 no_jobs || log "jobs still listed after 30 s: $(squeue -h -o '%A %T' | tr '\n' ' ')"
  fi
  # Each takes about 2 s to go: stop them in three rounds, each in parallel.
  local slurmds=()
  for node in "${NODES[@]}"; do slurmds+=("$DIR/run/slurmd-$node.pid" slurmd); done
  stop "${slurmds[@]}" "$DIR/run/slurmctld.pid" slurmctld
  stop "$DIR/run/slurmdbd.pid" slurmdbd
  stop "$DIR/run/mariadb.pid" mariadbd "$DIR/run/munged.pid" munged
  log "down in $((SECONDS - start)) s"
}

status() {
  local up=0 total=0 name pidfile prog pid
  for name in munged mariadb slurmdbd slurmctld "${NODES[@]/#/slurmd-}"; do
    pidfile=$DIR/run/$name.pid prog=${name%%-*}
    [[ $name == mariadb ]] && prog=mariadbd
    total=$((total + 1))
    if pid=$(live_pid "$pidfile" "$prog"); then
      up=$((up + 1)); printf '%-14s running (pid %s)\n' "$name" "$pid"
    elif [[ $name == munged ]] && munge_works 2>/dev/null; then
      up=$((up + 1)); printf '%-14s running (not started by cluster.sh)\n' "$name"
    else
      printf '%-14s stopped\n' "$name"
    fi
  done
  ((up == total)) && return 0
  ((up == 0)) && return 3
  return 1
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  env) printf 'export SLURM_CONF=%q\n' "$CONF" ;;
  purge) down; rm -rf -- "$DIR"; log "removed $DIR" ;;
  *) echo "usage: $0 up|down|status|env|purge" >&2; exit 2 ;;
esac
