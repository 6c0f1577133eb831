"""redis-py 8 clients looping on commands through slotgate while it restarts on the same port.

Usage: restart_client.py PORT SECONDS

Three clients with redis-py's defaults: RESP3 (maintenance notifications on, as redis-py 8
asks for them), RESP2, and a RESP3 pipeline of 10 INCRs. Each INCRs its own key and counts
the increments acknowledged to it. Prints one line per client:
NAME ops=N errors=N acked=N final=N errs=[...]
"""

import sys
import threading
import time
import traceback

import redis

port = int(sys.argv[1])
seconds = float(sys.argv[2])
results = {}


def client(name, protocol, pipeline):
    try:
        run(name, protocol, pipeline)
    except Exception:  # noqa: BLE001 - reported, and the line is missing
        traceback.print_exc()


def run(name, protocol, pipeline):
    r = redis.Redis(host="127.0.0.1", port=port, protocol=protocol)
    key = "restart:" + name
    r.delete(key)
    ops = errors = acked = 0
    errs = []
    end = time.time() + seconds
    while time.time() < end:
        try:
            if pipeline:
                p = r.pipeline(transaction=False)
                for _ in range(10):
                    p.incr(key)
                p.execute()
                acked += 10
            else:
                r.incr(key)
                acked += 1
            ops += 1
        except Exception as e:  # noqa: BLE001 - every error counts
            errors += 1
            errs.append(repr(e))
        time.sleep(0.005)
    final = int(r.get(key) or 0)
    results[name] = f"ops={ops} errors={errors} acked={acked} final={final} errs={errs[:3]}"


threads = [
    threading.Thread(target=client, args=args)
    for args in [("resp3", 3, False), ("resp2", 2, False), ("pipeline3", 3, True)]
]
for t in threads:
    t.start()
for t in threads:
    t.join()
for name in sorted(results):
    print(name, results[name], flush=True)
