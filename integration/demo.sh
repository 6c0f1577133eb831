#!/usr/bin/env bash
# Demo: build slotgate, start a local 3-master/3-replica Redis Cluster (state in
# target/demo-cluster) and slotgate in front of it on 127.0.0.1:PORT, then wait
# in the foreground; Ctrl-C stops everything.
#
# Usage:
#   integration/demo.sh [PORT]    slotgate listen port, default 6380
#   integration/demo.sh --stop    stop a demo left running (e.g. after kill -9)
#
# Environment: REDIS_SERVER, REDIS_CLI, NODE_TIMEOUT (passed to cluster.sh).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd -P)
CLUSTER_SH=$ROOT/integration/cluster.sh
DEMO_DIR=$ROOT/target/demo-cluster
PIDFILE=$DEMO_DIR/slotgate.pid
LOGFILE=$DEMO_DIR/slotgate.log
BIN=$ROOT/target/release/slotgate
REDIS_SERVER=${REDIS_SERVER:-redis-server}
REDIS_CLI=${REDIS_CLI:-redis-cli}
export REDIS_SERVER REDIS_CLI

log() { printf 'demo.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# slotgate_pid: pid from the pidfile if that process is still a slotgate.
slotgate_pid() {
    local pid
    [[ -f $PIDFILE ]] || return 1
    pid=$(head -n1 "$PIDFILE" 2>/dev/null || true)
    if ! [[ $pid =~ ^[0-9]+$ ]] || ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    if [[ -r /proc/$pid/cmdline ]]; then
        [[ $(tr '\0' ' ' <"/proc/$pid/cmdline") == *slotgate* ]] || return 1
    fi
    echo "$pid"
}

stop_slotgate() {
    local pid i
    pid=$(slotgate_pid) || { rm -f "$PIDFILE"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "slotgate (pid $pid) ignored SIGTERM for 5s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
}

stop_all() {
    stop_slotgate
    "$CLUSTER_SH" stop "$DEMO_DIR"
}

port_in_use() {
    local port=$1
    if command -v ss >/dev/null 2>&1; then
        [[ -n $(ss -Hltn "sport = :$port" 2>/dev/null) ]]
    else
        timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null
    fi
}

if [[ ${1-} == --stop ]]; then
    (($# == 1)) || die "usage: integration/demo.sh --stop"
    stop_all
    log "demo stopped"
    exit 0
fi
if [[ ${1-} == -h || ${1-} == --help ]]; then
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"
    exit 0
fi
(($# <= 1)) || die "usage: integration/demo.sh [PORT] | --stop"
PORT=${1:-6380}
if ! [[ $PORT =~ ^[0-9]+$ ]] || ((PORT < 1 || PORT > 65535)); then
    die "PORT must be a TCP port number (got '$PORT')"
fi

# Prerequisites.
if ! command -v "$REDIS_SERVER" >/dev/null 2>&1; then
    die "redis-server not found. Install it (Debian/Ubuntu): sudo apt-get install -y redis-server redis-tools"
fi
if ! command -v "$REDIS_CLI" >/dev/null 2>&1; then
    die "redis-cli not found. Install it (Debian/Ubuntu): sudo apt-get install -y redis-tools"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust from https://rustup.rs"

if pid=$(slotgate_pid); then
    die "a demo slotgate is already running (pid $pid); stop it with: integration/demo.sh --stop"
fi
if port_in_use "$PORT"; then
    die "port $PORT is already in use; pass another one: integration/demo.sh PORT"
fi

log "building slotgate (cargo build --release --locked)"
cargo build --release --locked
[[ -x $BIN ]] || die "$BIN was not built"

# From here on, whatever happens, stop what we started.
SG_PID=""
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    trap '' INT TERM
    trap - EXIT
    log "stopping slotgate and the cluster"
    if [[ -n $SG_PID ]] && kill -0 "$SG_PID" 2>/dev/null; then
        stop_slotgate
    fi
    "$CLUSTER_SH" stop "$DEMO_DIR" || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# cluster.sh refuses (and says so) if a previous demo's nodes still run here.
# Node directories without a pidfile belong to stopped demos: drop them.
mkdir -p "$DEMO_DIR"
for d in "$DEMO_DIR"/[0-9]*/; do
    if [[ -d $d && ! -e $d/redis.pid ]]; then rm -rf "$d"; fi
done
SEEDS=""
for attempt in 1 2 3; do
    BASE=$("$CLUSTER_SH" free-base 6)
    log "starting a 3-master/3-replica cluster on 127.0.0.1:$BASE-$((BASE + 5))"
    rc=0
    SEEDS=$("$CLUSTER_SH" start "$DEMO_DIR" "$BASE" 3 1) || rc=$?
    ((rc == 3)) || break # 3 = port clash: try another base
    log "port clash, retrying (attempt $attempt)"
done
((rc == 0)) || die "could not start the cluster (see above; a demo left running is stopped by: integration/demo.sh --stop)"

log "starting slotgate on 127.0.0.1:$PORT (log: ${LOGFILE#"$ROOT"/})"
"$BIN" --listen "127.0.0.1:$PORT" --cluster "$SEEDS" >"$LOGFILE" 2>&1 &
SG_PID=$!
echo "$SG_PID" >"$PIDFILE"

deadline=$((SECONDS + 20))
until [[ $(timeout 2 "$REDIS_CLI" -h 127.0.0.1 -p "$PORT" ping 2>/dev/null) == PONG ]]; do
    if ! kill -0 "$SG_PID" 2>/dev/null; then
        tail -n 30 "$LOGFILE" >&2 || true
        die "slotgate exited during startup (log above: $LOGFILE)"
    fi
    if ((SECONDS >= deadline)); then
        tail -n 30 "$LOGFILE" >&2 || true
        die "slotgate did not answer PING on 127.0.0.1:$PORT within 20s"
    fi
    sleep 0.2
done

cat <<EOF

slotgate is running on 127.0.0.1:$PORT in front of the cluster $SEEDS

  redis-cli -p $PORT set a 1
  redis-cli -p $PORT get a
  redis-benchmark -p $PORT -t set,get -r 100000

slotgate log: $LOGFILE
cluster:      $DEMO_DIR (node logs in <port>/redis.log)
Press Ctrl-C to stop (or run: integration/demo.sh --stop).
EOF

rc=0
wait "$SG_PID" || rc=$?
log "slotgate exited with status $rc"
exit "$rc"
