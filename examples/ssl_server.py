"""A stdlib HTTPS server (http.server) whose TLS handshake signatures are made
by qatpy: the private key is loaded with qatpy.ssl.load_cert_chain, so
Python's ssl module (OpenSSL) asks qatpy's provider for every server
signature, in C, without running Python.

    python examples/ssl_server.py                       # self-test: serve, fetch 4 pages, print the counters
    python examples/ssl_server.py --serve --cert cert.pem --key key.pem [--port 8443]

The self-test makes a throwaway CA with trustme (pip install trustme); QATPY_BACKEND
picks the engine's backend.
"""

from __future__ import annotations

import argparse
import ssl
import sys
import tempfile
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import qatpy
import qatpy.ssl

HOST = "127.0.0.1"


class Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = f"hello over {self.connection.version()}\n".encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def make_server(cert: str | Path, key: str | Path, engine: qatpy.Engine, port: int = 0) -> ThreadingHTTPServer:
    """A threaded HTTPS server; each connection's handshake (and so its signature) runs in its own thread."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    qatpy.ssl.load_cert_chain(ctx, cert, key, engine=engine)
    httpd = ThreadingHTTPServer((HOST, port), Hello)
    httpd.daemon_threads = True
    # The handshake happens on the first read, in the connection's thread.
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    return httpd


def self_test(engine: qatpy.Engine) -> int:
    import trustme

    with tempfile.TemporaryDirectory() as d:
        ca = trustme.CA()
        leaf = ca.issue_cert("localhost", HOST, key_type=trustme.KeyType.RSA)
        cert, key = Path(d, "cert.pem"), Path(d, "key.pem")
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        httpd = make_server(cert, key, engine)
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            client = ssl.create_default_context()
            ca.configure_trust(client)
            port = httpd.server_address[1]
            for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2) * 2:
                client.maximum_version = version
                with urllib.request.urlopen(f"https://{HOST}:{port}/", context=client, timeout=20) as r:
                    print(r.read().decode().strip())
        finally:
            httpd.shutdown()
            httpd.server_close()
    st = engine.stats()["ssl"]
    fallbacks = {k: v for k, v in st["fallbacks"].items() if v}
    print(
        f"handshake signatures made by qatpy on {engine.backend}: {st['signs']} (software {st['software']}, "
        f"device {st['device']}, fallbacks {fallbacks or 'none'}, failed {st['failed']})"
    )
    return 0 if st["signs"] == 4 and st["failed"] == 0 else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--serve", action="store_true", help="serve until interrupted")
    p.add_argument("--cert", help="certificate chain (PEM)")
    p.add_argument("--key", help="private key (PEM)")
    p.add_argument("--port", type=int, default=8443)
    args = p.parse_args(argv)
    with qatpy.Engine() as engine:
        if not args.serve:
            return self_test(engine)
        if not (args.cert and args.key):
            p.error("--serve needs --cert and --key")
        httpd = make_server(args.cert, args.key, engine, args.port)
        print(f"serving https://{HOST}:{httpd.server_address[1]}/ on {engine.backend} (Ctrl-C to stop)")
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass
        print(engine.stats()["ssl"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
