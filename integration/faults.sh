#!/usr/bin/env bash
# Fault injection for a cluster started by integration/cluster.sh (loopback only).
#
# Usage:
#   integration/faults.sh kill    DIR PORT   SIGKILL the node (no shutdown, no save)
#   integration/faults.sh stop    DIR PORT   SIGSTOP the node: it stays connected but silent
#   integration/faults.sh resume  DIR PORT   SIGCONT a stopped node
#   integration/faults.sh restart DIR PORT   start a killed node again from its own config
#   integration/faults.sh pause   PORT MS    CLIENT PAUSE the node's clients for MS ms
#   integration/faults.sh failover PORT      CLUSTER FAILOVER on the replica at PORT
#   integration/faults.sh move-slots PORT FROM_PORT TO_PORT COUNT
#                                            move COUNT slots between masters with
#                                            redis-cli --cluster reshard (PORT: any node)
#   integration/faults.sh master-of PORT     print the port of the replica's master
#   integration/faults.sh role PORT          print master or slave
#
# Environment: REDIS_CLI, REDIS_SERVER (binary paths).
set -euo pipefail

REDIS_CLI=${REDIS_CLI:-redis-cli}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
HOST=127.0.0.1

die() { printf 'faults.sh: error: %s\n' "$*" >&2; exit 2; }
rcli() { local port=$1; shift; timeout 10 "$REDIS_CLI" -h "$HOST" -p "$port" "$@"; }

pid_of() {
    local dir=$1 port=$2 f="$1/$2/redis.pid"
    [[ -f $f ]] || die "no pidfile $f"
    head -n1 "$f"
}

node_id() { rcli "$1" cluster myid | tr -d '\r'; }

# The number of slots the node at PORT serves (its own line of CLUSTER NODES;
# open-slot markers like [5-<-id] are not counted).
slot_count() {
    rcli "$1" cluster nodes | tr -d '\r' | awk '/myself/ {
        n = 0
        for (i = 9; i <= NF; i++) {
            if ($i ~ /^\[/) continue
            split($i, r, "-")
            n += (r[2] == "" ? 1 : r[2] - r[1] + 1)
        }
        print n
    }'
}

# Waits (up to 30 s) until every node of the cluster seen from PORT knows the
# node NODE_ID as a full member (no handshake) and `redis-cli --cluster check`
# finds the nodes agreeing with no open slot: redis-cli refuses to reshard
# before, and a master that does not know the target yet fails `SETSLOT NODE`.
# Fails at once when a slot is open (it stays open until someone closes it).
settle() {
    local port=$1 id=$2 addr ok out=""
    for _ in $(seq 1 60); do
        ok=1
        for addr in $(rcli "$port" cluster nodes | awk '{ split($2, a, "@"); print a[1] }'); do
            if ! timeout 10 "$REDIS_CLI" -h "${addr%:*}" -p "${addr##*:}" cluster nodes \
                | grep "^$id " | grep -qv 'handshake\|noaddr\|fail'; then
                ok=0
                break
            fi
        done
        if (( ok )); then
            local rc=0
            out=$("$REDIS_CLI" --cluster check "$HOST:$port" 2>&1) || rc=$?
            grep -q 'slots are open' <<<"$out" && return 1
            (( rc == 0 )) && ! grep -q '\[WARNING\]\|\[ERR\]' <<<"$out" && return 0
        fi
        sleep 0.5
    done
    printf 'faults.sh: cluster did not settle:\n%s\n' "$out" >&2
}

cmd=${1:-}
[[ -n $cmd ]] || { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" >&2; exit 2; }
shift
case $cmd in
    kill)    [[ $# -eq 2 ]] || die "usage: kill DIR PORT"; kill -KILL "$(pid_of "$1" "$2")" ;;
    stop)    [[ $# -eq 2 ]] || die "usage: stop DIR PORT"; kill -STOP "$(pid_of "$1" "$2")" ;;
    resume)  [[ $# -eq 2 ]] || die "usage: resume DIR PORT"; kill -CONT "$(pid_of "$1" "$2")" ;;
    restart)
        [[ $# -eq 2 ]] || die "usage: restart DIR PORT"
        conf="$1/$2/redis.conf"
        [[ -f $conf ]] || die "no config $conf"
        "$REDIS_SERVER" "$conf" >/dev/null
        ;;
    pause)   [[ $# -eq 2 ]] || die "usage: pause PORT MS"; rcli "$1" client pause "$2" >/dev/null ;;
    failover) [[ $# -eq 1 ]] || die "usage: failover PORT"; rcli "$1" cluster failover >/dev/null ;;
    move-slots)
        [[ $# -eq 4 ]] || die "usage: move-slots PORT FROM_PORT TO_PORT COUNT"
        from=$(node_id "$2") to=$(node_id "$3")
        want=$(( $(slot_count "$3") + $4 ))
        out=""
        for attempt in 1 2 3; do
            settle "$1" "$to" \
                || "$REDIS_CLI" --cluster fix "$HOST:$1" --cluster-yes >/dev/null 2>&1 || true
            left=$(( want - $(slot_count "$3") ))
            (( left > 0 )) || break
            if out=$("$REDIS_CLI" --cluster reshard "$HOST:$1" --cluster-from "$from" \
                --cluster-to "$to" --cluster-slots "$left" --cluster-yes \
                --cluster-pipeline 100 2>&1); then
                continue
            fi
            # A move that failed half way leaves a slot open (migrating on
            # one node, importing on the other): close it and move the rest.
            printf 'faults.sh: reshard attempt %d failed:\n%s\n' "$attempt" \
                "$(grep -v '^ *Moving slot' <<<"$out" | tail -n 25)" >&2
            "$REDIS_CLI" --cluster fix "$HOST:$1" --cluster-yes >/dev/null 2>&1 || true
        done
        settle "$1" "$to" || true
        got=$(slot_count "$3")
        (( got >= want )) || die "reshard from $2 to $3: $3 holds $got slots, wanted $want"
        ;;
    master-of)
        [[ $# -eq 1 ]] || die "usage: master-of PORT"
        rcli "$1" info replication | tr -d '\r' | sed -n 's/^master_port://p'
        ;;
    role)
        [[ $# -eq 1 ]] || die "usage: role PORT"
        rcli "$1" info replication | tr -d '\r' | sed -n 's/^role://p'
        ;;
    *) die "unknown command $cmd" ;;
esac
