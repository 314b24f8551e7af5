"""A tiny ASGI app for uvicorn whose TLS handshake signatures are made by qatpy.

Two ways to run it:

1. The launcher (no code change; every worker offloads):

       python -m qatpy run -- uvicorn uvicorn_app:app --app-dir examples \\
           --ssl-certfile cert.pem --ssl-keyfile key.pem --workers 2

2. In code, with a key reference (one process): qatpy keeps the key and
   uvicorn's own load_cert_chain reads the reference's path as the key file.
   ``python examples/uvicorn_app.py`` does this as a self-test (a throwaway CA
   from trustme, four HTTPS requests, the counters printed).

The app answers every request with qatpy.ssl.stats() of the process that
served it, as JSON.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import qatpy
import qatpy.ssl

HOST = "127.0.0.1"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = json.dumps(qatpy.ssl.stats()).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def self_test() -> int:
    import trustme
    import uvicorn

    with tempfile.TemporaryDirectory() as d, qatpy.Engine() as engine:
        ca = trustme.CA()
        leaf = ca.issue_cert("localhost", HOST)  # ECDSA P-256
        cert, key = Path(d, "cert.pem"), Path(d, "key.pem")
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        # The engine install() would use: stats() reports it; no interception.
        qatpy.ssl.install(engine=engine, transparent=False)
        sock = socket.create_server((HOST, 0))
        port = sock.getsockname()[1]
        with qatpy.ssl.key_reference(key, engine=engine) as ref:
            config = uvicorn.Config(app, ssl_certfile=str(cert), ssl_keyfile=ref.path, log_level="warning")
            server = uvicorn.Server(config)
            thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
            thread.start()
            deadline = time.monotonic() + 20
            while not server.started and thread.is_alive() and time.monotonic() < deadline:
                time.sleep(0.02)
        try:
            client = ssl.create_default_context()
            ca.configure_trust(client)
            for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2) * 2:
                client.maximum_version = version
                with urllib.request.urlopen(f"https://{HOST}:{port}/", context=client, timeout=20) as r:
                    st = json.loads(r.read())
        finally:
            server.should_exit = True
            thread.join(20)
            sock.close()
    fallbacks = {k: v for k, v in st["fallbacks"].items() if v}
    print(
        f"pid {os.getpid()}: handshake signatures made by qatpy on {st['backend']}: {st['signs']} "
        f"(software {st['software']}, device {st['device']}, fallbacks {fallbacks or 'none'}, failed {st['failed']})"
    )
    return 0 if st["signs"] == 4 and st["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(self_test())
