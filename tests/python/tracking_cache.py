"""redis-py 8's own client-side cache through slotgate (tests/tracking.rs runs it).

Usage: tracking_cache.py PORT NODE_PORT KEYS COUNTER STOP_FILE

Phase 1: KEYS (comma-separated, one per master; the first served by the node on NODE_PORT)
are read through a cached RESP3 client; a write through slotgate by another client, and a
write made on the node directly, must each be seen by the cached client within 2 s.
Prints "ready" once done.

Phase 2, until STOP_FILE exists: a writer increments COUNTER through slotgate while a
reader reads it through its cache; the value read must never go backwards (the test fails
a master over meanwhile). Errors during the failover are counted, not fatal. At the end
the reader must see the writer's last acknowledged value within 2 s.
Prints "reads=N max=M acked=A errors=E cache_hits=H" and exits 0, or exits 1 with why.
"""

import os
import sys
import threading
import time

import redis
from redis.cache import CacheConfig
from redis.connection import CacheProxyConnection

# redis-py enables its cache only in front of Redis 7.4 or later (its own product policy:
# CLIENT TRACKING itself is Redis 6). The clusters the tests start are the distribution's
# Redis 7.0, and slotgate answers HELLO with the cluster's version; slotgate's tracking
# does not depend on it (BCAST, Redis 6), so the test lowers redis-py's floor.
CacheProxyConnection.MIN_ALLOWED_VERSION = "6.0.0"


def eventually(read, want, what):
    deadline = time.time() + 2
    got = None
    while time.time() < deadline:
        got = read()
        if got == want:
            return
        time.sleep(0.01)
    sys.exit(f"{what}: the cached client still reads {got!r}, not {want!r}")


def main():
    port, node_port = int(sys.argv[1]), int(sys.argv[2])
    keys, counter, stop_file = sys.argv[3].split(","), sys.argv[4], sys.argv[5]
    cached = redis.Redis(port=port, protocol=3, cache_config=CacheConfig(), decode_responses=True)
    writer = redis.Redis(port=port, decode_responses=True)
    node = redis.Redis(port=node_port, decode_responses=True)

    for k in keys:
        writer.set(k, "a")
        if cached.get(k) != "a":
            sys.exit(f"{k}: first read")
    if cached.get_cache().size < len(keys):
        sys.exit(f"the cache holds {cached.get_cache().size} entries, not {len(keys)}")
    for k in keys:
        writer.set(k, "b")
        eventually(lambda: cached.get(k), "b", f"{k} written through slotgate")
    node.set(keys[0], "c")
    eventually(lambda: cached.get(keys[0]), "c", f"{keys[0]} written on its node")
    print("ready", flush=True)

    acked = [0]
    errors = [0]
    writing = [True]
    writer.set(counter, 0)

    def write():
        while writing[0]:
            try:
                acked[0] = writer.incr(counter)
            except redis.RedisError:
                errors[0] += 1
                time.sleep(0.05)

    t = threading.Thread(target=write)
    t.start()
    reads, last = 0, -1
    # GETs that reached the cluster (counted by the masters), to tell cache hits from reads.
    def gets():
        return writer.info("commandstats").get("cmdstat_get", {}).get("calls", 0)
    gets_before = gets()
    while not os.path.exists(stop_file):
        try:
            v = int(cached.get(counter) or 0)
        except redis.RedisError:
            errors[0] += 1
            time.sleep(0.05)
            continue
        reads += 1
        if v < last:
            writing[0] = False
            t.join()
            sys.exit(f"the counter went backwards through the cache: {last} then {v}")
        last = v
    writing[0] = False
    t.join()
    hits = reads - (gets() - gets_before)
    eventually(lambda: int(cached.get(counter) or 0), acked[0], "the last increment")
    print(f"reads={reads} max={last} acked={acked[0]} errors={errors[0]} cache_hits={hits}", flush=True)


if __name__ == "__main__":
    main()
