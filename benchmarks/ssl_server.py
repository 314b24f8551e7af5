"""A stdlib `ssl` TLS server for benchmarks/ssl_handshakes.py, run as its own process.

    python benchmarks/ssl_server.py --cert C --key K [--qatpy BACKEND] [--sim-knobs JSON] [--threads N]

Serves TLS on 127.0.0.1 (port printed as the first stdout line): each connection does a full
handshake, reads until the client closes (or sends a line, answered with a short HTTP response)
and closes.  With ``--qatpy`` the key is loaded through ``qatpy.ssl.load_cert_chain`` on an engine
of that backend, so the handshake signature is made by qatpy's OpenSSL provider; without it the
context is the stdlib's alone.

Commands on stdin, one per line, each answered by one JSON line on stdout:
``stats`` -> handshakes done, this process's CPU seconds (user+system) in all threads and in the
simulated device's own threads (named ``qatsim-*``: they stand in for the hardware), and the
engine's provider counters; ``quit`` -> exits.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import ssl
import sys
import threading
from typing import Any

TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu() -> tuple[float, float]:
    """(all threads, simulator threads) CPU seconds of this process, from /proc."""
    total = sim = 0.0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:  # the thread ended
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        secs = (int(fields[11]) + int(fields[12])) / TICKS
        total += secs
        if name.startswith("qatsim"):
            sim += secs
    return total, sim


def serve(ctx: ssl.SSLContext, threads: int, counter: list[int], lock: threading.Lock) -> int:
    listener = socket.create_server(("127.0.0.1", 0), backlog=256)
    conns: queue.SimpleQueue[socket.socket] = queue.SimpleQueue()

    def worker() -> None:
        while True:
            raw = conns.get()
            try:
                raw.settimeout(10)
                with ctx.wrap_socket(raw, server_side=True) as tls:
                    with lock:
                        counter[0] += 1
                    try:
                        if tls.recv(1024):
                            tls.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    except (OSError, ssl.SSLError):
                        pass
            except (OSError, ssl.SSLError):
                raw.close()

    def acceptor() -> None:
        while True:
            sock, _ = listener.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conns.put(sock)

    for _ in range(threads):
        threading.Thread(target=worker, daemon=True).start()
    threading.Thread(target=acceptor, daemon=True).start()
    return int(listener.getsockname()[1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--qatpy", choices=["software", "sim", "qat", "auto"])
    ap.add_argument("--sim-knobs", default="{}")
    ap.add_argument("--engine-options", default="{}", help="JSON of further Engine() options (e.g. poll_mode)")
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.num_tickets = 0  # every connection a full handshake
    engine: Any = None
    if args.qatpy:
        import qatpy
        import qatpy.ssl

        knobs = json.loads(args.sim_knobs)
        options = json.loads(args.engine_options)
        engine = qatpy.Engine(args.qatpy, **({"sim": knobs} if knobs else {}), **options)
        qatpy.ssl.load_cert_chain(ctx, args.cert, args.key, engine=engine)
    else:
        ctx.load_cert_chain(args.cert, args.key)
    counter = [0]
    lock = threading.Lock()
    port = serve(ctx, args.threads, counter, lock)
    print(port, flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "stats":
            total, sim = thread_cpu()
            with lock:
                n = counter[0]
            out: dict[str, Any] = {"handshakes": n, "cpu": total, "cpu_sim": sim}
            if engine is not None:
                out["ssl"] = engine.stats()["ssl"]
            print(json.dumps(out), flush=True)
        elif cmd == "quit":
            break
    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
