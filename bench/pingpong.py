#!/usr/bin/env python3
"""TCP echo server and measuring clients for bench/run.sh (stdlib only).

  pingpong.py echo PORT                  threaded echo server on 127.0.0.1:PORT
  pingpong.py rtt PORT N SIZE SAMPLES    N sequential SIZE-byte round trips on one
                                         connection; raw ns samples to SAMPLES,
                                         a JSON summary (µs) on stdout
  pingpong.py setup PORT N               N sequential connect + 64 B round trip +
                                         close; latency of connect -> echo (µs)
  pingpong.py hold PORT N SECS SRC_A-SRC_B  open N idle connections (sources
                                         dealt round-robin), hold them SECS
  pingpong.py freeport                   print a free loopback port

The same client runs against every relay, so its own cost cancels out when a
relay's figure is taken relative to the direct run.
"""
import ipaddress
import json
import socket
import sys
import threading
import time


def serve_conn(conn):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
    except OSError:
        pass
    finally:
        conn.close()


def echo(port):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(4096)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve_conn, args=(conn,), daemon=True).start()


def recv_exact(sock, n):
    got = 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            raise ConnectionError("closed after %d of %d bytes" % (got, n))
        got += len(chunk)


def summary(samples_ns):
    s = sorted(samples_ns)
    n = len(s)

    def pct(p):
        return s[min(n - 1, int(p / 100.0 * n))] / 1000.0

    return {"count": n, "p50_us": pct(50), "p90_us": pct(90), "p99_us": pct(99),
            "p999_us": pct(99.9), "max_us": s[-1] / 1000.0,
            "mean_us": sum(s) / n / 1000.0}


def rtt(port, count, size, samples_path):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    msg = b"x" * size
    for _ in range(200):  # warm-up: sessions and caches settle
        sock.sendall(msg)
        recv_exact(sock, size)
    samples = []
    clock = time.perf_counter_ns
    for _ in range(count):
        t0 = clock()
        sock.sendall(msg)
        recv_exact(sock, size)
        samples.append(clock() - t0)
    sock.close()
    with open(samples_path, "w") as f:
        f.write("\n".join(str(x) for x in samples))
    print(json.dumps(summary(samples)))


def setup(port, count):
    msg = b"x" * 64
    samples = []
    clock = time.perf_counter_ns
    t_start = clock()
    for _ in range(count):
        t0 = clock()
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(msg)
        recv_exact(sock, 64)
        samples.append(clock() - t0)
        sock.close()
    out = summary(samples)
    out["per_sec"] = count / ((clock() - t_start) / 1e9)
    print(json.dumps(out))


def hold(port, count, secs, sources):
    a, _, b = sources.partition("-")
    first = int(ipaddress.IPv4Address(a))
    last = int(ipaddress.IPv4Address(b or a))
    socks = []
    for i in range(count):
        src = str(ipaddress.IPv4Address(first + i % (last - first + 1)))
        s = socket.socket()
        s.bind((src, 0))
        s.connect(("127.0.0.1", port))
        socks.append(s)
    print("holding %d" % len(socks), flush=True)
    time.sleep(secs)


def freeport():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


def main(argv):
    cmd = argv[1]
    if cmd == "echo":
        echo(int(argv[2]))
    elif cmd == "rtt":
        rtt(int(argv[2]), int(argv[3]), int(argv[4]), argv[5])
    elif cmd == "setup":
        setup(int(argv[2]), int(argv[3]))
    elif cmd == "hold":
        hold(int(argv[2]), int(argv[3]), float(argv[4]), argv[5])
    elif cmd == "freeport":
        freeport()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
