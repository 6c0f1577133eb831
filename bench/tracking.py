#!/usr/bin/env python3
"""Client-side caching costs through slotgate: invalidation latency and memory per key.

Usage: bench/tracking.py SLOTGATE_PORT SLOTGATE_PID [ROUNDS=2000] [KEYS=200000]

Latency: a RESP3 client with CLIENT TRACKING on reads a key; another client SETs it; the
time from the SET's reply arriving to the invalidation push arriving, ROUNDS times (p50,
p99). Memory: slotgate's RSS before and after a tracking client reads KEYS distinct keys
(pipelined), divided by KEYS. Loopback only; prints one line per figure.
"""

import socket
import sys
import time


def connect(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def cmd(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def read_until(s, buf, marker):
    while marker not in buf:
        d = s.recv(1 << 20)
        if not d:
            raise SystemExit("connection closed")
        buf += d
    i = buf.index(marker) + len(marker)
    return buf[:i], buf[i:]


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    port, pid = int(sys.argv[1]), int(sys.argv[2])
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
    nkeys = int(sys.argv[4]) if len(sys.argv) > 4 else 200000
    t, w = connect(port), connect(port)
    tb, wb = b"", b""
    t.sendall(cmd("HELLO", 3) + cmd("CLIENT", "TRACKING", "on") + cmd("PING"))
    _, tb = read_until(t, tb, b"+PONG\r\n")
    samples = []
    for i in range(rounds):
        key = b"lat:%d" % (i % 100)
        t.sendall(cmd("GET", key))
        _, tb = read_until(t, tb, b"\r\n")  # the reply's first line is enough
        if tb.startswith(b"$") or tb[:1].isdigit():
            pass
        w.sendall(cmd("SET", key, i))
        _, wb = read_until(w, wb, b"+OK\r\n")
        acked = time.perf_counter()
        push = b"invalidate\r\n*1\r\n$%d\r\n%s\r\n" % (len(key), key)
        _, tb = read_until(t, tb, push)
        samples.append(time.perf_counter() - acked)
    samples.sort()
    p = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))] * 1e6
    print(f"invalidation latency (SET acknowledged -> push received), {rounds} rounds: "
          f"p50 {p(0.5):.0f} us, p99 {p(0.99):.0f} us")

    m = connect(port)
    mb = b""
    m.sendall(cmd("HELLO", 3) + cmd("CLIENT", "TRACKING", "on") + cmd("PING"))
    _, mb = read_until(m, mb, b"+PONG\r\n")
    time.sleep(0.5)
    before = rss_kb(pid)
    batch = 1000
    for start in range(0, nkeys, batch):
        m.sendall(b"".join(cmd("GET", b"mem:key:%08d" % i) for i in range(start, start + batch)))
        got = 0
        while got < batch:
            chunk, mb = read_until(m, mb, b"\r\n")
            if chunk.startswith(b"_") or chunk.startswith(b"$-1"):
                got += 1
    m.sendall(cmd("PING"))
    _, mb = read_until(m, mb, b"+PONG\r\n")
    time.sleep(0.5)
    after = rss_kb(pid)
    print(f"memory per tracked key ({nkeys} keys of 16 bytes, never written): "
          f"{(after - before) * 1024 / nkeys:.0f} bytes of slotgate RSS "
          f"({before} -> {after} KB)")


if __name__ == "__main__":
    main()
