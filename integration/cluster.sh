#!/usr/bin/env bash
# Manage a throw-away local Redis Cluster made of real redis-server processes
# (loopback only), for slotgate's integration tests and demo.
#
# Usage:
#   integration/cluster.sh start DIR BASE_PORT [MASTERS=3] [REPLICAS_PER_MASTER=1]
#       Start MASTERS*(1+REPLICAS_PER_MASTER) nodes on 127.0.0.1 ports
#       BASE_PORT.. (cluster bus = port+10000), state under DIR/<port>/, form
#       the cluster and wait until it is fully up. Progress goes to stderr; the
#       only stdout line is the comma-separated master seed list, e.g.
#       127.0.0.1:30001,127.0.0.1:30002,127.0.0.1:30003
#       BASE_PORT may be "auto": pick one with free-base, retrying on clashes.
#       Exit codes: 0 ok, 1 failure (nodes stopped, logs shown), 2 usage,
#       3 a port was already in use.
#   integration/cluster.sh stop DIR
#       Stop every node whose pidfile is under DIR (idempotent).
#   integration/cluster.sh free-base [COUNT=6]
#       Print a random base port P in 20000..29999 with P..P+COUNT-1 and
#       P+10000..P+10000+COUNT-1 free.
#
# Environment: REDIS_SERVER, REDIS_CLI (binary paths), NODE_TIMEOUT (ms,
# cluster-node-timeout, default 2000), READY_TIMEOUT (s, default 30),
# CLUSTER_CREATE=manual (form the cluster with CLUSTER ADDSLOTSRANGE/MEET/
# REPLICATE instead of `redis-cli --cluster create`, which sleeps; ~0.5 s faster),
# TLS_CERTS=DIR (also serve TLS on port+20000 with DIR/ca.crt, DIR/node.crt and
# DIR/node.key, and run the cluster bus (on the TLS port+10000) and replication
# over TLS; the plain port stays for administration).
set -euo pipefail

REDIS_SERVER=${REDIS_SERVER:-redis-server}
REDIS_CLI=${REDIS_CLI:-redis-cli}
NODE_TIMEOUT=${NODE_TIMEOUT:-2000}
READY_TIMEOUT=${READY_TIMEOUT:-30}
CLUSTER_CREATE=${CLUSTER_CREATE:-redis-cli}
TLS_CERTS=${TLS_CERTS:-}
# Offset of a node's TLS port from its plain port (TLS_CERTS).
TLS_OFFSET=20000
HOST=127.0.0.1
SELF=$0

log() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() { local code=$1; shift; log "error: $*"; exit "$code"; }
usage() {
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$SELF" >&2
    exit "${1:-2}"
}

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

# redis-cli against one local node, bounded so a wedged node cannot hang us.
rcli() {
    local port=$1; shift
    timeout 5 "$REDIS_CLI" -h "$HOST" -p "$port" "$@"
}

# Ports of all TCP sockets (any state except TIME-WAIT, which redis' SO_REUSEADDR
# tolerates), one per line. Empty output with status 1 if `ss` is unavailable.
used_ports() {
    command -v ss >/dev/null 2>&1 || return 1
    ss -Htan 2>/dev/null | awk '$1 != "TIME-WAIT" { n = split($4, a, ":"); print a[n] }' | sort -un
}

# port_free PORT [USED_PORTS_TEXT]
port_free() {
    local p=$1 used=${2-}
    if [[ -n $used ]]; then
        if grep -qx "$p" <<<"$used"; then return 1; fi
    else
        # Fallback: a successful connect means something listens there.
        if timeout 1 bash -c "exec 3<>/dev/tcp/$HOST/$p" 2>/dev/null; then return 1; fi
    fi
    return 0
}

cmd_free_base() {
    local count=${1:-6} used p i tries ok
    if ! is_uint "$count" || ((count < 1 || count > 1000)); then die 2 "free-base: bad COUNT '$count'"; fi
    used=$(used_ports || true)
    for ((tries = 0; tries < 500; tries++)); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % (10000 - count + 1)))
        ok=1
        for ((i = 0; i < count; i++)); do
            if ! port_free $((p + i)) "$used" || ! port_free $((p + 10000 + i)) "$used" ||
                { [[ -n $TLS_CERTS ]] && { ! port_free $((p + TLS_OFFSET + i)) "$used" ||
                    ! port_free $((p + TLS_OFFSET + 10000 + i)) "$used"; }; }; then
                ok=0
                break
            fi
        done
        if ((ok)); then
            echo "$p"
            return 0
        fi
    done
    die 1 "free-base: no free range of $count ports found in 20000..29999"
}

# alive PID PORT: PID is a live redis-server serving PORT (guards against pid reuse).
alive() {
    local pid=$1 port=$2 cmdline
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r /proc/$pid/cmdline ]]; then
        cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
        [[ $cmdline == *":$port"* ]] || return 1
    fi
    return 0
}

# Stop the nodes in DIR (all of them, or only the given ports).
stop_nodes() {
    local dir=$1; shift
    local pidfile port pid ports=() pids=() i deadline
    for pidfile in "$dir"/*/redis.pid; do
        [[ -f $pidfile ]] || continue
        port=$(basename "$(dirname "$pidfile")")
        is_uint "$port" || continue
        if (($# > 0)) && [[ " $* " != *" $port "* ]]; then continue; fi
        pid=$(head -n1 "$pidfile" 2>/dev/null || true)
        if alive "$pid" "$port"; then
            ports+=("$port")
            pids+=("$pid")
            # NOW: don't wait for lagging replicas (Redis >= 7); fall back to plain NOSAVE.
            { rcli "$port" shutdown nosave now || rcli "$port" shutdown nosave; } >/dev/null 2>&1 &
        else
            rm -f "$pidfile"
        fi
    done
    ((${#pids[@]} > 0)) || return 0
    wait || true
    deadline=$((SECONDS + 5))
    for i in "${!pids[@]}"; do
        while alive "${pids[$i]}" "${ports[$i]}" && ((SECONDS < deadline)); do
            sleep 0.05
        done
        if alive "${pids[$i]}" "${ports[$i]}"; then
            log "node ${ports[$i]} (pid ${pids[$i]}) did not shut down, sending SIGKILL"
            kill -9 "${pids[$i]}" 2>/dev/null || true
        fi
        rm -f "$dir/${ports[$i]}/redis.pid"
    done
}

cmd_stop() {
    (($# == 1)) || usage
    local dir=$1
    [[ -d $dir ]] || return 0
    stop_nodes "$dir"
}

# ---------------------------------------------------------------- start ----

DIR=""
STARTED_PORTS=()
START_OK=0

on_start_exit() {
    local rc=$? port
    ((START_OK)) && return 0
    if ((${#STARTED_PORTS[@]} > 0)); then
        for port in "${STARTED_PORTS[@]}"; do
            if [[ -s $DIR/$port/redis.log ]]; then
                printf '\n==> %s/%s/redis.log (last lines) <==\n' "$DIR" "$port" >&2
                tail -n 12 "$DIR/$port/redis.log" >&2 || true
            fi
        done
        stop_nodes "$DIR" "${STARTED_PORTS[@]}" || true
        log "start failed; stopped the ${#STARTED_PORTS[@]} node(s) it had started (logs above, files in $DIR)"
    fi
    exit "$((rc == 0 ? 1 : rc))"
}

write_conf() {
    local port=$1 d=$DIR/$1
    cat >"$d/redis.conf" <<EOF
# generated by integration/cluster.sh
bind $HOST
port $port
protected-mode no
daemonize yes
pidfile "$d/redis.pid"
logfile "$d/redis.log"
dir "$d"
cluster-enabled yes
cluster-config-file "$d/nodes.conf"
cluster-node-timeout $NODE_TIMEOUT
# Announce the loopback address even before any MEET (single-node clusters).
cluster-announce-ip $HOST
save ""
appendonly no
# Speed: start replica full syncs at once and never delay shutdown.
repl-diskless-sync-delay 0
repl-diskless-load on-empty-db
shutdown-timeout 0
EOF
    if [[ -n $TLS_CERTS ]]; then
        cat >>"$d/redis.conf" <<EOF
tls-port $((port + TLS_OFFSET))
tls-cert-file "$TLS_CERTS/node.crt"
tls-key-file "$TLS_CERTS/node.key"
tls-ca-cert-file "$TLS_CERTS/ca.crt"
tls-auth-clients optional
tls-cluster yes
tls-replication yes
EOF
    fi
}

# info_field TEXT FIELD -> value of "FIELD:value" line
info_field() { tr -d '\r' <<<"$1" | sed -n "s/^$2:\(.*\)\$/\1/p"; }

# Wait until every node has the same complete view of the cluster.
wait_ready() {
    local masters=$1 n=$2 replicas=$3 deadline port info nodes why
    deadline=$((SECONDS + READY_TIMEOUT))
    while :; do
        why=""
        for port in "${STARTED_PORTS[@]}"; do
            info=$(rcli "$port" cluster info 2>/dev/null) || { why="$port: not answering"; break; }
            [[ $(info_field "$info" cluster_state) == ok ]] || { why="$port: cluster_state not ok"; break; }
            [[ $(info_field "$info" cluster_known_nodes) == "$n" ]] || { why="$port: known nodes != $n"; break; }
            [[ $(info_field "$info" cluster_size) == "$masters" ]] || { why="$port: cluster_size != $masters"; break; }
            nodes=$(rcli "$port" cluster nodes 2>/dev/null) || { why="$port: not answering"; break; }
            # Every node must see M masters and M*R replicas, all connected, none failing.
            if ! awk -v m="$masters" -v r="$replicas" '
                    NF < 8 { next }
                    $3 ~ /fail|handshake|noaddr/ || $8 != "connected" { bad = 1 }
                    $3 ~ /master/ { nm++ } $3 ~ /slave/ { ns++ }
                    END { exit !(!bad && nm == m && ns == r) }' <<<"$nodes"; then
                why="$port: topology not settled"
                break
            fi
            if grep -q 'myself,slave' <<<"$nodes"; then
                info=$(rcli "$port" info replication 2>/dev/null) || { why="$port: not answering"; break; }
                [[ $(info_field "$info" master_link_status) == up ]] || { why="$port: replica link not up"; break; }
            fi
        done
        [[ -z $why ]] && return 0
        ((SECONDS < deadline)) || die 1 "cluster not ready after ${READY_TIMEOUT}s ($why)"
        sleep 0.1
    done
}

# Build the cluster by hand, as redis-cli --cluster create would, minus its
# fixed sleeps. Used for MASTERS < 3 (which redis-cli refuses) or when
# CLUSTER_CREATE=manual. Masters are the first MASTERS ports.
create_by_hand() {
    local masters=$1 replicas=$2 n=$3 i port first=${STARTED_PORTS[0]} lo hi id deadline
    local ids=()
    for ((i = 0; i < n; i++)); do
        port=${STARTED_PORTS[$i]}
        id=$(rcli "$port" cluster myid | tr -d '\r')
        ids+=("$id")
        rcli "$port" cluster set-config-epoch $((i + 1)) >/dev/null
    done
    for ((i = 0; i < masters; i++)); do
        lo=$((i * 16384 / masters))
        hi=$(((i + 1) * 16384 / masters - 1))
        [[ $(rcli "${STARTED_PORTS[$i]}" cluster addslotsrange "$lo" "$hi" | tr -d '\r') == OK ]] ||
            die 1 "ADDSLOTSRANGE $lo $hi failed on ${STARTED_PORTS[$i]}"
    done
    for ((i = 1; i < n; i++)); do
        rcli "$first" cluster meet "$HOST" "${STARTED_PORTS[$i]}" >/dev/null
    done
    # Each replica also meets its own master so it need not wait for gossip.
    for ((i = masters; i < n; i++)); do
        port=${STARTED_PORTS[$(((i - masters) % masters))]}
        [[ $port == "$first" ]] || rcli "${STARTED_PORTS[$i]}" cluster meet "$HOST" "$port" >/dev/null
    done
    # Replica j (0-based) follows master j % MASTERS once it knows that master.
    deadline=$((SECONDS + READY_TIMEOUT))
    for ((i = masters; i < n; i++)); do
        port=${STARTED_PORTS[$i]}
        id=${ids[$(((i - masters) % masters))]}
        until [[ $(rcli "$port" cluster replicate "$id" 2>/dev/null | tr -d '\r') == OK ]]; do
            ((SECONDS < deadline)) || die 1 "node $port could not replicate $id"
            sleep 0.05
        done
    done
}

cmd_start() {
    (($# >= 2 && $# <= 4)) || usage
    local dir=$1 base=$2 masters=${3:-3} replicas=${4:-1}
    if ! is_uint "$masters" || ((masters < 1)); then die 2 "MASTERS must be >= 1 (got '$masters')"; fi
    is_uint "$replicas" || die 2 "REPLICAS_PER_MASTER must be >= 0 (got '$replicas')"
    is_uint "$NODE_TIMEOUT" || die 2 "NODE_TIMEOUT must be milliseconds (got '$NODE_TIMEOUT')"
    local n=$((masters * (1 + replicas)))

    [[ $CLUSTER_CREATE == redis-cli || $CLUSTER_CREATE == manual ]] ||
        die 2 "CLUSTER_CREATE must be redis-cli or manual (got '$CLUSTER_CREATE')"

    if [[ $base == auto ]]; then
        local attempt rc
        for attempt in 1 2 3 4 5; do
            base=$(cmd_free_base "$n")
            rc=0
            "$SELF" start "$dir" "$base" "$masters" "$replicas" || rc=$?
            ((rc == 3)) || return "$rc"
            log "ports clashed (attempt $attempt), retrying with another base"
        done
        return 3
    fi

    if ! is_uint "$base" || ((base < 1024 || base + n - 1 + 10000 > 65535)); then
        die 2 "BASE_PORT must be a number >= 1024 with BASE_PORT+N-1+10000 <= 65535 (got '$base')"
    fi
    command -v "$REDIS_SERVER" >/dev/null 2>&1 || die 1 "redis-server not found ('$REDIS_SERVER'); sudo apt-get install -y redis-server, or set REDIS_SERVER"
    command -v "$REDIS_CLI" >/dev/null 2>&1 || die 1 "redis-cli not found ('$REDIS_CLI'); sudo apt-get install -y redis-tools, or set REDIS_CLI"

    mkdir -p "$dir"
    DIR=$(cd "$dir" && pwd -P)

    # Refuse to start over a cluster that is still running in DIR.
    local pidfile p pid
    for pidfile in "$DIR"/*/redis.pid; do
        [[ -f $pidfile ]] || continue
        p=$(basename "$(dirname "$pidfile")")
        pid=$(head -n1 "$pidfile" 2>/dev/null || true)
        if alive "$pid" "$p"; then
            die 1 "a node is still running in $DIR (port $p, pid $pid); run: $SELF stop $DIR"
        fi
    done

    local used i port
    used=$(used_ports || true)
    for ((i = 0; i < n; i++)); do
        port=$((base + i))
        port_free "$port" "$used" || die 3 "port $port is already in use"
        port_free $((port + 10000)) "$used" || die 3 "cluster bus port $((port + 10000)) (for node $port) is already in use"
        if [[ -n $TLS_CERTS ]]; then
            port_free $((port + TLS_OFFSET)) "$used" || die 3 "TLS port $((port + TLS_OFFSET)) (for node $port) is already in use"
            # With tls-cluster the bus listens at the TLS port + 10000.
            port_free $((port + TLS_OFFSET + 10000)) "$used" || die 3 "TLS cluster bus port $((port + TLS_OFFSET + 10000)) (for node $port) is already in use"
        fi
    done

    trap on_start_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    local t0=$SECONDS
    for ((i = 0; i < n; i++)); do
        port=$((base + i))
        rm -rf "${DIR:?}/$port"
        mkdir -p "$DIR/$port"
        write_conf "$port"
        STARTED_PORTS+=("$port")
        "$REDIS_SERVER" "$DIR/$port/redis.conf" >"$DIR/$port/stdout.log" 2>&1 ||
            die 1 "redis-server failed to start on port $port: $(tail -n 3 "$DIR/$port/stdout.log")"
    done

    # Wait for every node to answer PING (they start in parallel).
    local deadline=$((SECONDS + 10)) pending
    while :; do
        pending=0
        for port in "${STARTED_PORTS[@]}"; do
            if grep -qs 'Address already in use' "$DIR/$port/redis.log"; then
                die 3 "port $port (or its bus port) was taken before the node could bind it"
            fi
            if [[ $(rcli "$port" ping 2>/dev/null) != PONG ]]; then
                pending=1
                break
            fi
        done
        ((pending)) || break
        ((SECONDS < deadline)) || die 1 "node $port did not answer PING within 10s"
        sleep 0.05
    done

    if ((masters >= 3)) && [[ $CLUSTER_CREATE != manual ]]; then
        local addrs=() out
        for port in "${STARTED_PORTS[@]}"; do addrs+=("$HOST:$port"); done
        if ! out=$(timeout "$READY_TIMEOUT" "$REDIS_CLI" --cluster create "${addrs[@]}" \
            --cluster-replicas "$replicas" --cluster-yes 2>&1); then
            printf '%s\n' "$out" | tail -n 20 >&2
            die 1 "redis-cli --cluster create failed"
        fi
    else
        create_by_hand "$masters" "$replicas" "$n"
    fi

    wait_ready "$masters" "$n" "$((masters * replicas))"

    # Seeds: the masters as the cluster reports them, sorted by port.
    local seeds
    seeds=$(rcli "${STARTED_PORTS[0]}" cluster nodes | tr -d '\r' |
        awk '$3 ~ /master/ { split($2, a, "@"); print a[1] }' | sort -t: -k2,2n | paste -sd, -)
    START_OK=1
    trap - EXIT INT TERM
    log "cluster of $n nodes ($masters masters, $replicas replica(s) each) up in ~$((SECONDS - t0))s under $DIR"
    echo "$seeds"
}

main() {
    (($# >= 1)) || usage
    local cmd=$1; shift
    case $cmd in
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        free-base) (($# <= 1)) || usage; cmd_free_base "$@" ;;
        -h | --help | help) usage 0 ;;
        *) log "unknown command '$cmd'"; usage ;;
    esac
}

main "$@"
