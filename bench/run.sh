#!/usr/bin/env bash
# Benchmark slotgate beside direct cluster access and a standalone redis-server.
#
# Starts a local 3-master/3-replica cluster, slotgate (release build) in front of it, and a
# plain standalone redis-server, then runs redis-benchmark against the three targets in turn,
# interleaved over several rounds (slotgate, cluster, standalone, slotgate, ...). Prints the
# medians (ops/s, p50, p99), the median of the per-round ratios slotgate / standalone,
# slotgate's CPU time per request (from /proc), its RSS at rest, peak and with 10,000 idle
# connections, and writes every measurement to bench/results/<timestamp>.csv. When
# twemproxy (`nutcracker`, Debian package nutcracker) is installed, it runs as a fourth target
# in front of the standalone server: one proxy hop without cluster logic, measured in the same
# rounds as the reference for what a hop costs on this machine. The
# `*_scraped` workloads run while /metrics is scraped every second beside them; the CPU one
# scrape costs is measured at rest (200 scrapes).
#
# Usage: bench/run.sh [--rounds N] [--quick] [--threads N] [--only REGEX]
#   --rounds N    rounds per workload (default 5)
#   --quick       a tenth of the requests per run (a smoke test, not a measurement)
#   --threads N   slotgate worker threads (default 0 = one per core)
#   --only REGEX  run the workloads whose name matches REGEX (bash =~), e.g. '^(set|get)_p1'
#                 for the scrape comparison alone
#
# Needs redis-server, redis-cli, redis-benchmark and python3. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd -P)

ROUNDS=5
SCALE=1
THREADS=0
ONLY=""
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) ROUNDS=$2; shift 2 ;;
        --quick) SCALE=10; shift ;;
        --threads) THREADS=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        *) echo "bench/run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
for tool in redis-server redis-cli redis-benchmark python3; do
    command -v "$tool" >/dev/null || { echo "bench/run.sh: $tool is missing (apt-get install -y redis-server redis-tools python3)" >&2; exit 2; }
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo build --release --locked >&2
BIN=$ROOT/target/release/slotgate
WORK=$(mktemp -d /tmp/slotgate-bench.XXXXXX)
mkdir -p "$ROOT/bench/results"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
CSV=$ROOT/bench/results/$STAMP.csv
SG_PID=""
SGM_PID=""
TW_PID=""
BLOCKERS_PID=""

cleanup() {
    [[ -n $BLOCKERS_PID ]] && kill "$BLOCKERS_PID" 2>/dev/null || true
    [[ -n ${SCRAPER_PID:-} ]] && kill "$SCRAPER_PID" 2>/dev/null || true
    [[ -n $SG_PID ]] && kill "$SG_PID" 2>/dev/null && wait "$SG_PID" 2>/dev/null || true
    [[ -n $SGM_PID ]] && kill "$SGM_PID" 2>/dev/null && wait "$SGM_PID" 2>/dev/null || true
    [[ -n $TW_PID ]] && kill "$TW_PID" 2>/dev/null && wait "$TW_PID" 2>/dev/null || true
    [[ -f $WORK/standalone.pid ]] && kill "$(cat "$WORK/standalone.pid")" 2>/dev/null || true
    "$ROOT/integration/cluster.sh" stop "$WORK/cluster" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

echo "starting the cluster, the standalone server and slotgate..." >&2
SEEDS=$("$ROOT/integration/cluster.sh" start "$WORK/cluster" auto 3 1)
CLUSTER_PORT=${SEEDS%%,*}
CLUSTER_PORT=${CLUSTER_PORT##*:}
SA_PORT=$(free_port)
redis-server --port "$SA_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --pidfile "$WORK/standalone.pid" --dir "$WORK" --logfile "$WORK/standalone.log"
SG_PORT=$(free_port)
SG_ADMIN_PORT=$(free_port)
"$BIN" --listen "127.0.0.1:$SG_PORT" --cluster "$SEEDS" --threads "$THREADS" --log-level warn \
    --admin-listen "127.0.0.1:$SG_ADMIN_PORT" 2>"$WORK/slotgate.log" &
SG_PID=$!
# A second slotgate with a mirror (the same cluster, first_resource_only): reads must cost
# what they cost without one.
SGM_PORT=$(free_port)
"$BIN" --listen "127.0.0.1:$SGM_PORT" --cluster "$SEEDS" --threads "$THREADS" --log-level warn \
    --mirror "$SEEDS" --multi-write-mode first_resource_only --admin-listen "" \
    2>"$WORK/slotgate-mirror.log" &
SGM_PID=$!
for port in "$SG_PORT" "$SGM_PORT"; do
    for _ in $(seq 100); do
        redis-cli -p "$port" info slotgate 2>/dev/null | grep -q 'cluster_slots_assigned:16384' && break
        sleep 0.1
    done
done
redis-cli -p "$SA_PORT" ping >/dev/null
TARGETS=(slotgate cluster standalone)
if command -v nutcracker >/dev/null; then
    TW_PORT=$(free_port)
    cat >"$WORK/twemproxy.yml" <<EOF
bench:
  listen: 127.0.0.1:$TW_PORT
  redis: true
  hash: fnv1a_64
  distribution: ketama
  server_connections: 1
  servers:
   - 127.0.0.1:$SA_PORT:1
EOF
    nutcracker -c "$WORK/twemproxy.yml" -s "$(free_port)" -a 127.0.0.1 -o "$WORK/twemproxy.log" &
    TW_PID=$!
    for _ in $(seq 50); do redis-cli -p "$TW_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
    TARGETS+=(twemproxy)
else
    echo "nutcracker (twemproxy) is not installed: no one-hop reference in this run" >&2
fi

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$SG_PID/status"; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$SG_PID/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/${1:-$SG_PID}/stat"; }
TICK=$(getconf CLK_TCK)
RSS_REST=$(rss_kb)

# name | requests | redis-benchmark arguments (the target's -p/--cluster is added)
MGET_ARGS="mget k:__rand_int__ k:__rand_int__ k:__rand_int__ k:__rand_int__ k:__rand_int__ k:__rand_int__ k:__rand_int__ k:__rand_int__ k:__rand_int__ k:__rand_int__"
WORKLOADS=(
    "set_p1|200000|-t set -c 50 -r 1000000 -P 1 -d 100"
    "get_p1|200000|-t get -c 50 -r 1000000 -P 1 -d 100"
    "set_p16|2000000|-t set -c 50 -r 1000000 -P 16 -d 100"
    "get_p16|2000000|-t get -c 50 -r 1000000 -P 16 -d 100"
    "mset10|100000|-t mset -c 50 -r 1000000"
    "mget10|100000|-c 50 -r 1000000 $MGET_ARGS"
    "set_4k|100000|-t set -c 50 -r 1000000 -d 4096"
    "get_4k|100000|-t get -c 50 -r 1000000 -d 4096"
    "get_c1000|100000|-t get -c 1000 -r 1000000"
    "get_blpop100|200000|-t get -c 50 -r 1000000 -P 1 -d 100"
    "get_p1_mirror|200000|-t get -c 50 -r 1000000 -P 1 -d 100"
    "set_p1_scraped|200000|-t set -c 50 -r 1000000 -P 1 -d 100"
    "get_p1_scraped|200000|-t get -c 50 -r 1000000 -P 1 -d 100"
)

# GETs /metrics from slotgate's admin listener every second until killed.
SCRAPER_PID=""
start_scraper() {
    python3 - "$SG_ADMIN_PORT" <<'PY' &
import socket, sys, time
port = int(sys.argv[1])
while True:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
    while s.recv(65536):
        pass
    s.close()
    time.sleep(1)
PY
    SCRAPER_PID=$!
}

stop_scraper() {
    [[ -n $SCRAPER_PID ]] && kill "$SCRAPER_PID" 2>/dev/null && wait "$SCRAPER_PID" 2>/dev/null || true
    SCRAPER_PID=""
}

# CPU of one scrape, at rest: 200 scrapes back to back.
scrape_cpu_before=$(cpu_ticks "$SG_PID")
SCRAPE_BYTES=$(python3 - "$SG_ADMIN_PORT" <<'PY'
import socket, sys
port = int(sys.argv[1])
size = 0
for _ in range(200):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
    body = b""
    while chunk := s.recv(65536):
        body += chunk
    s.close()
    size = len(body)
print(size)
PY
)
scrape_cpu_after=$(cpu_ticks "$SG_PID")
SCRAPE_CPU_MS=$(python3 -c "print(f'{($scrape_cpu_after - $scrape_cpu_before) * 1e3 / $TICK / 200:.3f}')")
echo "one /metrics scrape at rest: ${SCRAPE_CPU_MS} ms CPU, ${SCRAPE_BYTES} bytes" >&2

# Opens 100 connections blocked in BLPOP against a port until killed.
start_blockers() {
    python3 - "$1" <<'PY' &
import socket, sys, time
port = int(sys.argv[1])
socks = []
for i in range(100):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"BLPOP bench:blocked:%d 0\r\n" % i)
    socks.append(s)
time.sleep(3600)
PY
    BLOCKERS_PID=$!
    sleep 0.5
}

stop_blockers() {
    [[ -n $BLOCKERS_PID ]] && kill "$BLOCKERS_PID" 2>/dev/null && wait "$BLOCKERS_PID" 2>/dev/null || true
    BLOCKERS_PID=""
}

echo "round,workload,target,rps,p50_ms,p99_ms,proxy_cpu_us_per_req" >"$CSV"
for round in $(seq "$ROUNDS"); do
    for w in "${WORKLOADS[@]}"; do
        IFS='|' read -r name requests args <<<"$w"
        [[ -n $ONLY && ! $name =~ $ONLY ]] && continue
        requests=$((requests / SCALE))
        for target in "${TARGETS[@]}"; do
            pid=$SG_PID
            case $target in
                slotgate) conn=(-p "$SG_PORT") ;;
                cluster) conn=(--cluster -p "$CLUSTER_PORT") ;;
                standalone) conn=(-p "$SA_PORT") ;;
                twemproxy) conn=(-p "$TW_PORT"); pid=$TW_PID ;;
            esac
            # twemproxy runs the plain single-key workloads only: it has no mirror, blockers or
            # /metrics to compare, and MSET is not among the commands it proxies.
            if [[ $target == twemproxy && ! $name =~ ^(set|get)_(p1|p16|4k|c1000)$ ]]; then
                continue
            fi
            run_args=$args
            if [[ $target == cluster && $name == mget10 ]]; then
                # redis-benchmark --cluster needs one slot per custom command.
                run_args=${args//k:__rand_int__/{k\}:__rand_int__}
            fi
            if [[ $target == slotgate && $name == *_mirror ]]; then
                conn=(-p "$SGM_PORT")
                pid=$SGM_PID
            fi
            [[ $name == get_blpop100 ]] && start_blockers "${conn[-1]}"
            [[ $target == slotgate && $name == *_scraped ]] && start_scraper
            before=$(cpu_ticks "$pid")
            # shellcheck disable=SC2086
            line=$(redis-benchmark "${conn[@]}" -n "$requests" --csv $run_args 2>/dev/null | tail -n 1 || true)
            after=$(cpu_ticks "$pid")
            [[ $name == get_blpop100 ]] && stop_blockers
            stop_scraper
            cpu=""
            if [[ $target == slotgate || $target == twemproxy ]]; then
                cpu=$(python3 -c "print(f'{($after - $before) * 1e6 / $TICK / $requests:.3f}')")
            fi
            python3 - "$line" "$round" "$name" "$target" "$cpu" >>"$CSV" <<'PY'
import csv, sys
line, rnd, name, target, cpu = sys.argv[1:]
rows = list(csv.reader([line])) if line.strip() else []
if rows and len(rows[0]) >= 7 and rows[0][0] != "test":
    r = rows[0]
    print(f"{rnd},{name},{target},{r[1]},{r[4]},{r[6]},{cpu}")
else:
    print(f"{rnd},{name},{target},,,,{cpu}")
PY
            printf '.' >&2
        done
    done
    echo " round $round done" >&2
done

RSS_PEAK=$(hwm_kb)
# 10,000 idle client connections.
python3 - "$SG_PORT" "$SG_PID" <<'PY' >"$WORK/idle.txt"
import socket, sys, time
port, pid = int(sys.argv[1]), sys.argv[2]
socks = []
for _ in range(10000):
    socks.append(socket.create_connection(("127.0.0.1", port)))
time.sleep(1.0)
for line in open(f"/proc/{pid}/status"):
    if line.startswith("VmRSS:"):
        print(line.split()[1])
PY
RSS_IDLE=$(cat "$WORK/idle.txt")

python3 - "$CSV" "$RSS_REST" "$RSS_PEAK" "$RSS_IDLE" "$THREADS" <<'PY'
import csv, statistics, sys
path, rest, peak, idle, threads = sys.argv[1:]
rows = list(csv.DictReader(open(path)))
workloads = list(dict.fromkeys(r["workload"] for r in rows))
def med(vals):
    vals = [float(v) for v in vals if v not in ("", None)]
    return statistics.median(vals) if vals else None
def fmt(v, spec):
    return format(v, spec) if v is not None else "n/a"
print(f"\nslotgate benchmark: medians over {max(int(r['round']) for r in rows)} rounds, "
      f"threads={threads or 'one per core'}; results in {path}\n")
print(f"{'workload':<14}{'slotgate ops/s':>15}{'cluster ops/s':>15}{'standalone ops/s':>18}"
      f"{'ratio sg/sa':>12}{'sg p50 ms':>11}{'sg p99 ms':>11}{'sa p99 ms':>11}{'sg cpu us/req':>15}"
      f"{'ratio tw/sa':>12}{'tw cpu us/req':>15}")
summary = {}
for w in workloads:
    by = {t: [r for r in rows if r["workload"] == w and r["target"] == t]
          for t in ("slotgate", "cluster", "standalone", "twemproxy")}
    def ratio_to_standalone(target):
        ratios = []
        for row in by[target]:
            sa = [r for r in by["standalone"] if r["round"] == row["round"]]
            if row["rps"] and sa and sa[0]["rps"]:
                ratios.append(float(row["rps"]) / float(sa[0]["rps"]))
        return statistics.median(ratios) if ratios else None
    ratio = ratio_to_standalone("slotgate")
    sg_rps = med(r["rps"] for r in by["slotgate"])
    summary[w] = (ratio, sg_rps)
    print(f"{w:<14}{fmt(sg_rps, '>15.0f')}{fmt(med(r['rps'] for r in by['cluster']), '>15.0f')}"
          f"{fmt(med(r['rps'] for r in by['standalone']), '>18.0f')}{fmt(ratio, '>12.2f')}"
          f"{fmt(med(r['p50_ms'] for r in by['slotgate']), '>11.3f')}"
          f"{fmt(med(r['p99_ms'] for r in by['slotgate']), '>11.3f')}"
          f"{fmt(med(r['p99_ms'] for r in by['standalone']), '>11.3f')}"
          f"{fmt(med(r['proxy_cpu_us_per_req'] for r in by['slotgate']), '>15.2f')}"
          f"{fmt(ratio_to_standalone('twemproxy'), '>12.2f')}"
          f"{fmt(med(r['proxy_cpu_us_per_req'] for r in by['twemproxy']), '>15.2f')}")
base = summary.get("get_p1", (None, None))[1]
blocked = summary.get("get_blpop100", (None, None))[1]
if base and blocked:
    print(f"\nGET with 100 clients blocked in BLPOP: {blocked / base:.2f}x the throughput without them")
def cpu(w):
    return med(r["proxy_cpu_us_per_req"] for r in rows if r["workload"] == w and r["target"] == "slotgate")
for w in ("set_p1", "get_p1"):
    plain, scraped = summary.get(w, (None, None))[0], summary.get(w + "_scraped", (None, None))[0]
    if plain and scraped:
        print(f"{w} ratio with /metrics scraped every second: {scraped:.3f}, without: {plain:.3f} "
              f"({(scraped / plain - 1) * 100:+.1f}%)")
if cpu("get_p1") and cpu("get_p1_mirror"):
    print(f"GET -P 1 CPU with a mirror (first_resource_only): {cpu('get_p1_mirror'):.2f} us/req, "
          f"without: {cpu('get_p1'):.2f} us/req")
print(f"slotgate RSS: {int(rest)/1024:.1f} MB at rest, {int(peak)/1024:.1f} MB peak, "
      f"{int(idle)/1024:.1f} MB with 10,000 idle connections")
PY
