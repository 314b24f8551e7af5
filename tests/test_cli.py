"""The command line: `speed` prints its table beside the baseline, `info` names the backend, and
every error of every subcommand is one line on stderr with a non-zero exit status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from qatpy._engine import BACKENDS

NO_QATLIB = {"QATPY_LIBQAT": "/nonexistent/libqat.so.4", "QATPY_LIBUSDM": "/nonexistent/libusdm.so.0"}
META_KEYS = {
    "qatpy",
    "backend",
    "fallback_reason",
    "inflight",
    "seconds",
    "threads",
    "cpus",
    "cryptography",
    "openssl",
    "results",
}


def cli_env(**extra: str) -> dict[str, str]:
    """This environment without qatpy's own variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QATPY_")}
    env.update(extra)
    return env


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qatpy", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env() if env is None else env,
        cwd=cwd,
    )


def one_line_error(p: subprocess.CompletedProcess[str], status: int, *words: str) -> str:
    """Assert that `p` failed with `status` and exactly one stderr line containing every word; return it."""
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert p.returncode == status, (p.returncode, p.stderr)
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def test_speed_software_table(tmp_path):
    """`speed --backend software` prints signs/s, latency and the baseline ratio for each algorithm."""
    out = tmp_path / "r.json"
    p = run(
        "speed",
        "--backend",
        "software",
        "--seconds",
        "0.3",
        "--inflight",
        "16",
        "ecdsap256",
        "rsa2048",
        "--json",
        str(out),
    )
    assert p.returncode == 0, p.stderr
    assert "baseline/s" in p.stdout and "ecdsap256" in p.stdout and "rsa2048" in p.stdout
    assert "api=sign_many " in p.stdout  # the default: a public API, named
    rows = json.loads(out.read_text())["results"]
    assert {r["algorithm"] for r in rows} == {"ecdsap256", "rsa2048"}
    for r in rows:
        assert r["api"] == "sign_many"
        assert r["signs_per_s"] > 0 and r["baseline_signs_per_s"] > 0 and r["p99_s"] >= r["p50_s"] > 0


def test_speed_api_all_measures_each_public_api_and_the_batch_path(tmp_path):
    """`speed --api all` gives one row per public API (sign_many, sign_future, sign_async) and one for the batch path."""
    args = ("--seconds", "0.2", "--inflight", "16", "--api", "all", "ecdsap256", "--json", "-")
    p = run("speed", "--backend", "software", *args, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    apis = ["sign_many", "sign_future", "sign_async", "batch path"]
    assert data["apis"] == apis
    assert [r["api"] for r in data["results"]] == apis
    for r in data["results"]:
        assert r["signs_per_s"] > 0 and r["p99_s"] >= r["p50_s"] > 0
    assert "api=" + ",".join(apis) in p.stderr


def test_speed_json_dash_is_stdout_with_run_metadata(tmp_path):
    """`--json -` prints only JSON on stdout (the table goes to stderr), with the run's settings and versions."""
    import cryptography
    from cryptography.hazmat.backends.openssl.backend import backend as ossl

    import qatpy

    p = run(
        "speed",
        "--backend",
        "software",
        "--seconds",
        "0.2",
        "--inflight",
        "8",
        "ecdsap256",
        "--json",
        "-",
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert META_KEYS <= set(data), sorted(data)
    assert (data["qatpy"], data["backend"], data["fallback_reason"]) == (qatpy.__version__, "software", None)
    assert (data["inflight"], data["seconds"], data["cpus"]) == (8, 0.2, os.cpu_count())
    assert isinstance(data["threads"], int) and data["threads"] >= 1
    assert (data["cryptography"], data["openssl"]) == (cryptography.__version__, ossl.openssl_version_text())
    assert [r["algorithm"] for r in data["results"]] == ["ecdsap256"]
    assert "baseline/s" in p.stderr
    assert list(tmp_path.iterdir()) == []  # no file named "-"


def test_speed_sim(tmp_path):
    """`speed --backend sim` runs on the simulated device."""
    p = run("speed", "--backend", "sim", "--seconds", "0.3", "--inflight", "32", "ecdsap384")
    assert p.returncode == 0, p.stderr
    assert "sim" in p.stdout and "ecdsap384" in p.stdout


def test_info_json():
    """`info --json` reports the version, the backend auto picks and why."""
    p = run("info", "--json", env=cli_env(**NO_QATLIB))
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["auto_backend"] == "software"
    assert "library not found" in info["fallback_reason"]
    assert "/nonexistent/libqat.so.4" in info["libraries_tried"]


# -- errors: one line on stderr, naming the problem and the fix --------------------------------

BAD_ARGS = [
    (["speed", "--seconds", "0"], "--seconds", "> 0"),
    (["speed", "--seconds", "nan"], "--seconds", "> 0"),
    (["speed", "--inflight", "x"], "--inflight", ">= 1"),
    (["speed", "--threads", "0"], "--threads", ">= 1"),
    (["speed", "--backend", "gpu"], "--backend", "invalid choice: 'gpu'"),
    (["speed", "dsa1024"], "unknown algorithm 'dsa1024'", "rsa2048"),
    (["speed", "--json"], "--json", "expected one argument"),
    (["info", "--bogus"], "qatpy info: unrecognized arguments: --bogus", "qatpy info --help"),
    (["doctor", "--json", "extra"], "qatpy doctor: unrecognized arguments: extra", "qatpy doctor --help"),
    (["soak", "--ops", "0"], "--ops", ">= 1"),
    (["soak", "--ppm", "-1"], "--ppm", "0 to 1000000"),
    (["soak", "--seed", "one"], "--seed", "whole number"),
    ([], "required", "qatpy --help"),
    (["bench"], "invalid choice: 'bench'", "qatpy --help"),
]


@pytest.mark.parametrize(("args", "problem", "fix"), BAD_ARGS, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_arguments_are_one_line(args, problem, fix):
    """A bad argument to any subcommand is one stderr line naming it and where to look, exit 2."""
    one_line_error(run(*args), 2, problem, fix)


@pytest.mark.parametrize("command", ["speed", "info", "doctor"])
def test_bad_qatpy_backend_is_one_line(command):
    """QATPY_BACKEND=bogus: speed refuses, info and doctor report and then fail; one stderr line naming the fix, exit 2."""
    p = run(command, env=cli_env(QATPY_BACKEND="bogus", **NO_QATLIB))
    one_line_error(p, 2, "QATPY_BACKEND='bogus' is not a backend", ", ".join(BACKENDS), "unset it")
    if command == "info":
        assert "INVALID" in p.stdout and "auto_backend: software" in p.stdout
    if command == "doctor":
        assert "qatpy doctor:" in p.stdout  # the host report still comes first


def test_bad_qatpy_backend_in_info_json():
    """`info --json` with a bad QATPY_BACKEND flags it in the JSON as well."""
    p = run("info", "--json", env=cli_env(QATPY_BACKEND="bogus", **NO_QATLIB))
    one_line_error(p, 2, "QATPY_BACKEND='bogus'")
    assert "is not a backend" in json.loads(p.stdout)["QATPY_BACKEND_problem"]


def test_explicit_backend_overrides_a_bad_environment():
    """--backend wins over QATPY_BACKEND, as Engine(backend) does: a bad variable does not stop speed."""
    p = run("speed", "--backend", "software", "--seconds", "0.1", "ecdsap256", env=cli_env(QATPY_BACKEND="bogus"))
    assert p.returncode == 0, p.stderr


def test_unavailable_qat_backend_is_one_line():
    """`speed --backend qat` without qatlib: one line with the reason and the fix (doctor, or another backend), exit 1."""
    p = run("speed", "--backend", "qat", env=cli_env(**NO_QATLIB))
    line = one_line_error(p, 1, "backend 'qat' is unavailable", "library not found", "qatpy doctor", "--backend")
    assert "Traceback" not in p.stdout + line


@pytest.mark.parametrize("command", [["speed", "--backend", "sim", "--seconds", "0.1"], ["soak", "--ops", "100"]])
def test_device_start_failure_holds_the_librarys_own_stderr(command):
    """A device that fails to start (the simulator prints qatlib's stderr lines) still gives exactly one line, exit 1."""
    p = run(*command, env=cli_env(QATPY_SIM_USER_START_FAIL="1"))
    one_line_error(p, 1, "backend 'sim' is unavailable", "start failed", "QATPY_SIM_")


def test_recovery_soak_reports_the_deadline_fraction():
    """`soak --recovery` injects lost answers only and reports the share of operations that waited for a deadline; exit 0."""
    p = run("soak", "--recovery", "--ops", "400", "--ppm", "5000")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert (r["lost"], r["duplicated"], r["wrong_signatures"], r["ok"]) == (0, 0, 0, r["ops"])
    assert r["lost_answers"] == r["faults_injected"]["lost"] >= 1
    assert [k for k, v in r["faults_injected"].items() if v] == ["lost"]
    assert r["deadline_fraction"] == r["deadline_waits"] / r["ops"]


def test_speed_without_numpy_names_the_extra():
    """`speed` without numpy: one line naming `pip install "qatpy[speed]"`, exit 2; the other commands do not need it."""
    code = "import sys; sys.modules['numpy'] = None; from qatpy.__main__ import main; sys.exit(main(sys.argv[1:]))"
    env = cli_env(**NO_QATLIB)
    p = subprocess.run(
        [sys.executable, "-c", code, "speed", "--backend", "software"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    one_line_error(p, 2, "numpy", 'pip install "qatpy[speed]"')
    p = subprocess.run([sys.executable, "-c", code, "info"], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0 and p.stderr == "", p.stderr


@pytest.mark.parametrize("where", ["missing directory", "directory"])
def test_unwritable_json_path_is_refused_before_the_run(tmp_path, where):
    """A --json path that cannot be written is one line naming it, exit 2, before anything is measured."""
    path = tmp_path / "no" / "such" / "r.json" if where == "missing directory" else tmp_path
    p = run("speed", "--backend", "software", "--json", str(path))
    one_line_error(p, 2, f"cannot write --json {path}", "- for stdout")
    assert p.stdout == ""


def test_json_write_failure_after_the_run_is_one_line():
    """A write that fails at the end (/dev/full: no space) is one line with the OS's reason, exit 1."""
    p = run("speed", "--backend", "software", "--seconds", "0.1", "ecdsap256", "--json", "/dev/full")
    one_line_error(p, 1, "cannot write --json /dev/full", "No space left on device")
    assert "baseline/s" in p.stdout  # the results were printed before the write failed


def interrupt(cmd: list[str]) -> tuple[subprocess.CompletedProcess[str], str]:
    """Start `cmd`, wait for its first stdout line, send SIGINT; the finished process and that line."""
    p = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        # A shell may start test runs with SIGINT ignored, which a child inherits.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert p.stdout is not None
        first = p.stdout.readline()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return subprocess.CompletedProcess(cmd, p.returncode, out, err), first


@pytest.mark.parametrize("backend", ["software", "sim"])
def test_ctrl_c_during_speed_is_one_line(backend):
    """Ctrl-C while speed measures: one line "interrupted", exit 130, no traceback."""
    p, first = interrupt([sys.executable, "-m", "qatpy", "speed", "--backend", backend, "--seconds", "60", "rsa2048"])
    assert first.startswith("qatpy ") and f"backend={backend}" in first
    one_line_error(p, 130, "qatpy speed: interrupted")


def test_ctrl_c_during_soak_is_one_line():
    """Ctrl-C during a soak ends it at once: one line "interrupted", exit 130."""
    code = (  # the soak prints nothing until it ends: announce its start, then run the real command
        "import sys, qatpy._soak as s; from qatpy.__main__ import main\n"
        "run = s.run_soak\n"
        "def announced(*a, **k):\n    print('soaking', flush=True)\n    return run(*a, **k)\n"
        "s.run_soak = announced\nsys.exit(main(sys.argv[1:]))\n"
    )
    p, first = interrupt([sys.executable, "-c", code, "soak", "--ops", "100000000"])
    assert first == "soaking\n"
    one_line_error(p, 130, "qatpy soak: interrupted")
