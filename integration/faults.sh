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
        # redis-cli refuses to reshard while the nodes disagree about the
        # configuration (for a moment after a failover or a node joins): wait
        # until `--cluster check` passes, then move; its report goes to stderr
        # when it does not.
        out=""
        for _ in $(seq 1 60); do
            if out=$("$REDIS_CLI" --cluster check "$HOST:$1" 2>&1) \
                && ! grep -q '\[WARNING\]\|\[ERR\]' <<<"$out"; then
                break
            fi
            sleep 0.5
        done
        from=$(node_id "$2") to=$(node_id "$3")
        if ! out=$("$REDIS_CLI" --cluster reshard "$HOST:$1" --cluster-from "$from" \
            --cluster-to "$to" --cluster-slots "$4" --cluster-yes --cluster-pipeline 100 2>&1); then
            printf '%s\n' "$out" >&2
            die "reshard from $2 to $3 failed"
        fi
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
