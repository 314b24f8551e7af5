"""`python -m qatpy run`: servers started the documented way (uvicorn and
gunicorn with 2 workers) sign their handshakes in qatpy in every worker, and
the launcher's sitecustomize chains, reports refusals and runs commands."""

from __future__ import annotations

import concurrent.futures as cf
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sslhelp import HOST, TIMEOUT, issue, make_ca

ROOT = Path(__file__).parent.parent
MAX_CONNECTIONS = 60


@pytest.fixture(scope="module")
def pki(tmp_path_factory, rsa_keys):
    d = tmp_path_factory.mktemp("launcher-pki")
    ca = make_ca(d)
    cert, key = issue(ca, rsa_keys[2048], d, "server")
    return ca.path, cert, key


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def launch(*command: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    e = dict(os.environ if env is None else env)
    e.pop("QATPY_SSL_INSTALL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "qatpy", "run", "--backend", "software", "--", *command],
        env=e,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(TIMEOUT)
    return proc.stderr.read().decode(errors="replace") if proc.stderr else ""


def fetch_stats(port: int, ca: Path, proc: subprocess.Popen[bytes], hold: float = 0.0) -> dict[str, object]:
    """One new TLS connection (verified against `ca`) and GET; the worker's qatpy.ssl.stats()
    (after it held its worker blocked for `hold` seconds)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + TIMEOUT
    while True:
        conn = http.client.HTTPSConnection(HOST, port, context=ctx, timeout=TIMEOUT)
        try:
            conn.request("GET", f"/?hold={hold}", headers={"Connection": "close"})
            resp = conn.getresponse()
            assert resp.status == 200
            return dict(json.loads(resp.read()))
        except (ConnectionError, OSError):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        finally:
            conn.close()


def serve_and_count(proc: subprocess.Popen[bytes], port: int, ca: Path) -> tuple[int, dict[int, dict[str, object]]]:
    """Connect until both workers have answered (bounded); returns (handshakes, last stats per worker pid).

    Connections go in pairs, each holding its worker blocked for a moment: while one worker holds,
    the other must accept, so both serve whatever the kernel's accept order (sequential
    connections may all go to one worker on a busy machine)."""
    seen: dict[int, dict[str, object]] = {}
    n = 0
    with cf.ThreadPoolExecutor(2) as pool:
        try:
            fetch_stats(port, ca, proc)  # the server is up
            n += 1
            while n < MAX_CONNECTIONS and (len(seen) < 2 or n < 6):
                pair = [pool.submit(fetch_stats, port, ca, proc, 0.3) for _ in range(2)]
                for f in pair:
                    st = f.result()
                    n += 1
                    pid = int(st["pid"])  # type: ignore[call-overload]
                    # Keep each worker's latest stats: its counters only grow.
                    if pid not in seen or int(st["signs"]) >= int(seen[pid]["signs"]):  # type: ignore[call-overload]
                        seen[pid] = st
        except BaseException:
            print(stop(proc))
            raise
    return n, seen


def check_server(proc: subprocess.Popen[bytes], port: int, ca: Path) -> None:
    """Both workers of the launched server answered, and their counters add up to every handshake."""
    try:
        n, seen = serve_and_count(proc, port, ca)
    finally:
        err = stop(proc)
    check_workers(n, seen, proc.pid)
    assert "NOT offloaded" not in err


def check_workers(n: int, seen: dict[int, dict[str, object]], server_pid: int) -> None:
    assert len(seen) == 2, f"only {len(seen)} worker(s) answered {n} connections"
    assert server_pid not in seen
    for st in seen.values():
        assert st["installed"] is True and st["backend"] == "software", st
        assert st["signs"] == st["software"] and st["failed"] == 0, st
    # Each worker's last answer counts every handshake it served: together, all of them.
    assert sum(int(st["signs"]) for st in seen.values()) == n  # type: ignore[call-overload]


def test_uvicorn_two_workers_via_launcher(pki):
    """`qatpy run -- uvicorn --workers 2` (spawned workers): every handshake of both workers is signed by qatpy."""
    ca, cert, key = pki
    port = _free_port()
    proc = launch(
        sys.executable, "-m", "uvicorn", "ssl_wsgi_app:asgi_app", "--app-dir", str(ROOT / "tests"),
        "--host", HOST, "--port", str(port), "--workers", "2", "--log-level", "warning",
        "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
    )  # fmt: skip
    check_server(proc, port, ca)


def test_gunicorn_two_workers_via_launcher(pki):
    """`qatpy run -- gunicorn -w 2` (forked workers, a context per connection): every handshake is signed by qatpy."""
    ca, cert, key = pki
    port = _free_port()
    proc = launch(
        sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"{HOST}:{port}", "--chdir", str(ROOT / "tests"),
        "--certfile", str(cert), "--keyfile", str(key), "--log-level", "warning", "ssl_wsgi_app:app",
    )  # fmt: skip
    check_server(proc, port, ca)


def run_launcher(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qatpy", "run", *args], capture_output=True, text=True, timeout=60, env=env
    )


def test_sitecustomize_installs_and_chains(tmp_path):
    """The launcher installs qatpy.ssl in the command's Python and still runs the environment's own sitecustomize."""
    (tmp_path / "sitecustomize.py").write_text("import os\nos.environ['THEIRS_RAN'] = 'yes'\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    code = "import os, ssl, qatpy.ssl; print(qatpy.ssl.installed(), os.environ.get('THEIRS_RAN'), os.environ['QATPY_SSL_FALLBACK'])"
    p = run_launcher("--fallback", "never", "--", sys.executable, "-c", code, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["True", "yes", "never"]


def test_refusal_is_reported_and_the_command_still_runs(tmp_path):
    """Where Python's ssl cannot take the provider (fips=yes here), the command runs and stderr says why it is not offloaded."""
    conf = tmp_path / "fips.cnf"
    conf.write_text("openssl_conf = init\n[init]\nalg_section = algs\n[algs]\ndefault_properties = fips=yes\n")
    env = dict(os.environ, OPENSSL_CONF=str(conf))
    p = run_launcher("--", sys.executable, "-c", "import qatpy.ssl; print(qatpy.ssl.installed())", env=env)
    assert p.returncode == 0 and p.stdout.strip() == "False"
    assert "NOT offloaded" in p.stderr and "fips=yes" in p.stderr


def test_missing_or_absent_command():
    """An unknown command exits 127 naming it; no command is a usage error (exit 2)."""
    p = run_launcher("--", "qatpy-no-such-command")
    assert p.returncode == 127 and "qatpy-no-such-command" in p.stderr
    p = run_launcher()
    assert p.returncode == 2 and "no command" in p.stderr
