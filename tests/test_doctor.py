"""`qatpy doctor`: each prerequisite is judged from fake sysfs/proc/dev trees, and the CLI exits
non-zero with the steps to fix on a host where QAT is unusable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from qatpy import _doctor
from qatpy._doctor import Check, render_text, run_checks, to_json

MiB = 1 << 20
PF, VF, GROUP = "0000:6b:00.0", "0000:6b:00.1", "12"


def write(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def link(path: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def pci(root: Path, bdf: str, device: int, driver: str | None, **attrs: str) -> Path:
    d = root / "sys/bus/pci/devices" / bdf
    write(d / "vendor", "0x8086\n")
    write(d / "device", f"0x{device:04x}\n")
    if driver:
        link(d / "driver", root / "sys/bus/pci/drivers" / driver)
    for name, value in attrs.items():
        write(d / name.replace("__", "/"), value + "\n")
    return d


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return build_tree(tmp_path)


def build_tree(root: Path) -> Path:
    """A healthy 4xxx host: one PF (sym;asym) with one VF on vfio-pci in IOMMU group 12."""
    pci(root, PF, 0x4940, "4xxx", sriov_numvfs="1", qat__cfg_services="sym;asym", qat__state="up")
    vf = pci(root, VF, 0x4941, "vfio-pci")
    link(vf / "iommu_group", root / "sys/kernel/iommu_groups" / GROUP)
    link(vf / "physfn", root / "sys/bus/pci/devices" / PF)
    write(root / "proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 intel_iommu=on iommu=pt\n")
    write(root / "proc/sys/vm/nr_hugepages", "0\n")
    write(root / "proc/1/cgroup", "0::/init.scope\n")
    write(root / "dev/vfio/vfio")
    write(root / f"dev/vfio/{GROUP}")
    write(root / "run/qat/qatmgr.sock")
    write(root / "etc/sysconfig/qat", "ServicesEnabled=sym;asym\nPOLICY=0\n")
    write(root / "etc/group", "root:x:0:\nqat:x:994:alice\nalice:x:1000:\n")
    return root


def healthy(**over: Any) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "kernel_release": "6.8.0-45-generic",
        "memlock": (512 * MiB, 512 * MiB),
        "euid": 1000,
        "user": "alice",
        "groups": ["alice", "qat"],
        "environ": {},
        "find_library": lambda so: f"/usr/lib64/{so}",
        "access": lambda path, mode: True,
        "cap_ipc_lock": False,
    }
    kw.update(over)
    return kw


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def failing(checks: list[Check]) -> list[str]:
    return [c.name for c in checks if c.status == "fail" and c.name != "verdict"]


def test_healthy_host_is_usable(tree: Path) -> None:
    """A 4xxx PF with a VF on vfio-pci, an accessible group, high memlock, qatlib and asym: usable."""
    checks = run_checks(tree, **healthy())
    c = by_name(checks)
    assert failing(checks) == [] and _doctor.is_usable(checks)
    assert c["verdict"].status == "ok" and "usable" in c["verdict"].detail
    assert [
        c[n].status
        for n in (
            "qat-devices",
            "vfio-pci",
            "/dev/vfio",
            "qat-group",
            "memlock",
            "qatlib",
            "asym-service",
            "qatmgr",
            "kernel",
            "iommu",
        )
    ] == ["ok"] * 10
    assert "1 of 1 QAT VFs bound to vfio-pci" in c["vfio-pci"].detail
    assert to_json(checks)["usable"] is True


def test_main_exits_zero_on_healthy_tree(tree: Path, clean_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    """`main --root <tree> --json` with libraries in the tree's lib dir and CAP_IPC_LOCK exits 0."""
    write(tree / "usr/lib64/libqat.so.4")
    write(tree / "usr/lib64/libusdm.so.0")
    write(tree / "usr/lib64/pkgconfig/qatlib.pc", "Name: qatlib\nVersion: 26.08.0\n")
    write(tree / "proc/self/status", "Name:\tpython\nCapEff:\t0000000000004000\n")
    rc = _doctor.main(["--root", str(tree), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0, out
    lib = next(c for c in out["checks"] if c["name"] == "qatlib")
    assert "qatlib 26.08.0" in lib["detail"] and str(tree / "usr/lib64/libqat.so.4") in lib["detail"]


def test_no_device(tree: Path) -> None:
    """No QAT function in sysfs: qat-devices fails, dependent checks are skipped, the verdict says so."""
    for bdf in (PF, VF):
        for p in sorted((tree / "sys/bus/pci/devices" / bdf).rglob("*"), reverse=True):
            p.unlink() if p.is_file() or p.is_symlink() else p.rmdir()
    checks = run_checks(tree, **healthy())
    c = by_name(checks)
    assert failing(checks) == ["qat-devices"]
    assert c["vfio-pci"].status == c["asym-service"].status == "info"
    text = render_text(checks)
    assert "no Intel QAT device" in text and "QAT is NOT usable" in text and "Steps to fix, in order:" in text


def test_old_generation_device_is_not_for_qatlib(tmp_path: Path) -> None:
    """A C62x (8086:37c8) is recognised as QAT but reported as not served by qatlib."""
    pci(tmp_path, "0000:3d:00.0", 0x37C8, "c6xx")
    c = by_name(run_checks(tmp_path, **healthy()))
    assert c["qat-devices"].status == "fail"
    assert "C62x" in c["qat-devices"].detail and "out-of-tree" in c["qat-devices"].fix


def test_pf_without_driver_or_vfs(tree: Path) -> None:
    """A PF with no driver fails with the modprobe fix; a PF with no VFs fails with the qat service fix."""
    (tree / "sys/bus/pci/devices" / PF / "driver").unlink()
    c = by_name(run_checks(tree, **healthy()))
    assert c["qat-devices"].status == "fail" and "modprobe qat_4xxx" in c["qat-devices"].fix
    link(tree / "sys/bus/pci/devices" / PF / "driver", tree / "sys/bus/pci/drivers/4xxx")
    for p in sorted((tree / "sys/bus/pci/devices" / VF).rglob("*"), reverse=True):
        p.unlink() if p.is_file() or p.is_symlink() else p.rmdir()
    c = by_name(run_checks(tree, **healthy()))
    assert c["qat-devices"].status == "fail" and "no virtual functions" in c["qat-devices"].detail
    assert "systemctl enable --now qat" in c["qat-devices"].fix


def test_vf_not_bound_to_vfio_pci(tree: Path) -> None:
    """A VF on the kernel's 4xxxvf driver fails vfio-pci, naming the driver and how to rebind."""
    link(tree / "sys/bus/pci/devices" / VF / "driver", tree / "sys/bus/pci/drivers/4xxxvf")
    checks = run_checks(tree, **healthy())
    c = by_name(checks)
    assert "vfio-pci" in failing(checks)
    assert "4xxxvf" in c["vfio-pci"].detail and "driver_override" in c["vfio-pci"].fix


def test_dev_vfio_missing(tree: Path) -> None:
    """No /dev/vfio while a VF is on vfio-pci fails with qatlib's own error text and the passthrough fix."""
    for p in (tree / "dev/vfio").iterdir():
        p.unlink()
    (tree / "dev/vfio").rmdir()
    c = by_name(run_checks(tree, **healthy()))
    assert c["/dev/vfio"].status == "fail"
    assert "Failed to open /dev/vfio" in c["/dev/vfio"].detail and "--device /dev/vfio/vfio" in c["/dev/vfio"].fix


def test_group_node_missing(tree: Path) -> None:
    """/dev/vfio exists but has no node for the VF's IOMMU group: fail naming the group."""
    (tree / f"dev/vfio/{GROUP}").unlink()
    c = by_name(run_checks(tree, **healthy()))
    assert c["/dev/vfio"].status == "fail" and GROUP in c["/dev/vfio"].detail


def test_inaccessible_group(tree: Path) -> None:
    """An unreadable /dev/vfio/N for a user outside group qat fails with the usermod fix."""
    node = str(tree / f"dev/vfio/{GROUP}")
    checks = run_checks(tree, **healthy(groups=["bob"], user="bob", access=lambda p, m: p != node))
    c = by_name(checks)
    assert failing(checks) == ["/dev/vfio"]
    assert "bob" in c["/dev/vfio"].detail and "usermod -a -G qat bob" in c["/dev/vfio"].fix
    assert c["qat-group"].status == "warn" and "not in group qat" in c["qat-group"].detail


def test_group_membership_needs_relogin(tree: Path) -> None:
    """A user listed in /etc/group qat whose session lacks it is told to log in again."""
    c = by_name(run_checks(tree, **healthy(groups=["alice"], access=lambda p, m: not p.endswith(GROUP))))
    assert c["qat-group"].status == "warn" and "log out and in" in c["qat-group"].fix


def test_low_memlock_fails(tree: Path) -> None:
    """8 MiB of memlock without CAP_IPC_LOCK is below one VF's 16 MiB: fail with limits.conf and systemd fixes."""
    checks = run_checks(tree, **healthy(memlock=(8 * MiB, 8 * MiB)))
    c = by_name(checks)
    assert failing(checks) == ["memlock"]
    assert "/etc/security/limits.conf" in c["memlock"].fix and "LimitMEMLOCK" in c["memlock"].fix
    assert "alice - memlock 32768" in c["memlock"].fix


def test_memlock_warns_below_estimate_and_cap_ipc_lock_bypasses(tree: Path) -> None:
    """20 MiB warns (one VF + qatpy buffers want 32 MiB); with CAP_IPC_LOCK the limit does not matter."""
    c = by_name(run_checks(tree, **healthy(memlock=(20 * MiB, 1 << 40))))
    assert c["memlock"].status == "warn" and "ulimit -l" in c["memlock"].fix
    c = by_name(run_checks(tree, **healthy(memlock=(8 * MiB, 8 * MiB), cap_ipc_lock=True)))
    assert c["memlock"].status == "ok" and "CAP_IPC_LOCK" in c["memlock"].detail


def test_libraries_missing(tree: Path) -> None:
    """When the lookup finds neither library, qatlib fails with the install and QATPY_LIB* fixes."""
    checks = run_checks(tree, **healthy(find_library=lambda so: None))
    c = by_name(checks)
    assert failing(checks) == ["qatlib"]
    assert "libqat.so.4 and libusdm.so.0 not found" in c["qatlib"].detail
    assert "intel/qatlib" in c["qatlib"].fix and "QATPY_LIBQAT" in c["qatlib"].fix


def test_asym_not_enabled(tree: Path) -> None:
    """A PF configured for dc only fails asym-service; so does ServicesEnabled=dc when sysfs is silent."""
    write(tree / "sys/bus/pci/devices" / PF / "qat/cfg_services", "dc\n")
    checks = run_checks(tree, **healthy())
    c = by_name(checks)
    assert failing(checks) == ["asym-service"]
    assert "0 asym instances" in c["asym-service"].detail and "ServicesEnabled=sym;asym" in c["asym-service"].fix
    (tree / "sys/bus/pci/devices" / PF / "qat/cfg_services").unlink()
    write(tree / "etc/sysconfig/qat", "ServicesEnabled=dc\n")
    assert by_name(run_checks(tree, **healthy()))["asym-service"].status == "fail"


def test_container_without_memlock(tree: Path) -> None:
    """In a container with 64 KiB memlock: memlock fails and the container check gives runtime hints."""
    write(tree / ".dockerenv")
    (tree / "run/qat/qatmgr.sock").unlink()
    c = by_name(run_checks(tree, **healthy(memlock=(64 * 1024, 64 * 1024))))
    assert c["memlock"].status == "fail"
    assert c["container"].status == "warn" and ".dockerenv" in c["container"].detail
    assert "LimitMEMLOCK" in c["container"].fix and "--ulimit memlock" in c["container"].fix
    assert "--device /dev/vfio" in c["container"].fix
    assert c["qatmgr"].status == "info" and "QAT_POLICY=1" in c["qatmgr"].fix


def test_container_detected_from_cgroup(tree: Path) -> None:
    """/proc/1/cgroup naming kubepods counts as a container."""
    write(tree / "proc/1/cgroup", "0::/kubepods/besteffort/pod1234/abcd\n")
    assert "kubepods" in by_name(run_checks(tree, **healthy()))["container"].detail


@pytest.mark.parametrize(
    "release,status",
    [
        ("5.4.0-150-generic", "fail"),
        ("5.15.0-100-generic", "warn"),
        ("6.1.100", "warn"),
        ("6.1.149", "ok"),
        ("6.8.0-45-generic", "ok"),
    ],
)
def test_kernel_versions(tree: Path, release: str, status: str) -> None:
    """< 5.11 fails, < 6.0 warns (no ServicesEnabled), 6.1.0-6.1.148 warns (qatlib 24.09/25.08 bug)."""
    assert by_name(run_checks(tree, **healthy(kernel_release=release)))["kernel"].status == status


def test_kernel_61_warning_follows_qatlib_version(tree: Path) -> None:
    """On 6.1.100 the warning names qatlib 25.08 when that is installed, and is dropped for 26.08."""
    lib = tree / "usr/lib64"
    write(lib / "pkgconfig/qatlib.pc", "Version: 25.08.0\n")
    find = healthy(find_library=lambda so: str(lib / so), kernel_release="6.1.100")
    c = by_name(run_checks(tree, **find))
    assert c["kernel"].status == "warn" and "qatlib 25.08.0" in c["kernel"].detail
    write(lib / "pkgconfig/qatlib.pc", "Version: 26.08.0\n")
    assert by_name(run_checks(tree, **find))["kernel"].status == "ok"


def test_iommu_off(tree: Path) -> None:
    """No IOMMU groups fails; with intel_iommu=on on the command line the fix points at VT-d in the BIOS."""
    (tree / "sys/kernel/iommu_groups" / GROUP).rmdir()
    c = by_name(run_checks(tree, **healthy()))
    assert c["iommu"].status == "fail" and "VT-d" in c["iommu"].detail
    write(tree / "proc/cmdline", "root=/dev/sda1 quiet\n")
    c = by_name(run_checks(tree, **healthy()))
    assert c["iommu"].status == "fail" and "intel_iommu=on" in c["iommu"].fix


def test_standalone_policy_and_hugepages(tree: Path) -> None:
    """Standalone with QAT_POLICY=0 warns; hugepages with qatlib 25.08 warn; neither makes QAT unusable."""
    (tree / "run/qat/qatmgr.sock").unlink()
    write(tree / "proc/sys/vm/nr_hugepages", "1024\n")
    write(tree / "usr/lib64/pkgconfig/qatlib.pc", "Version: 25.08.0\n")
    checks = run_checks(
        tree, **healthy(environ={"QAT_POLICY": "0"}, find_library=lambda so: str(tree / "usr/lib64" / so))
    )
    c = by_name(checks)
    assert c["qatmgr"].status == "warn" and c["hugepages"].status == "warn"
    assert _doctor.is_usable(checks) and "qatmgr" in c["verdict"].detail


def test_json_shape(tree: Path) -> None:
    """to_json gives usable, summary, ordered steps and every check's four fields."""
    data = to_json(run_checks(tree, **healthy(find_library=lambda so: None, memlock=(MiB, MiB))))
    assert data["usable"] is False and "NOT usable" in str(data["summary"])
    steps = data["steps"]
    assert isinstance(steps, list) and [s.split(":")[0] for s in steps[:2]] == ["qatlib", "memlock"]
    checks = data["checks"]
    assert isinstance(checks, list) and all(set(c) == {"name", "status", "detail", "fix"} for c in checks)
    json.dumps(data)


def test_cli_on_this_machine() -> None:
    """`python -m qatpy doctor` here (no QAT) exits non-zero, says QAT is unusable, names the problem and fix."""
    if _doctor.is_usable(run_checks()):
        pytest.skip("this machine has a usable QAT set-up")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QATPY_")}
    p = subprocess.run(
        [sys.executable, "-m", "qatpy", "doctor"], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert p.returncode == 1, p.stdout + p.stderr
    assert "QAT is NOT usable" in p.stdout and "Steps to fix, in order:" in p.stdout
    assert "[FAIL] qat-devices" in p.stdout and "no Intel QAT device" in p.stdout
    p = subprocess.run(
        [sys.executable, "-m", "qatpy", "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    data = json.loads(p.stdout)
    assert p.returncode == 1 and data["usable"] is False and data["steps"]


def test_simulator_libraries_are_flagged(tree: Path) -> None:
    """QATPY_LIBQAT/QATPY_LIBUSDM pointing at qatpy's simulator are found but reported as not qatlib."""
    sim = Path(_doctor.__file__).parent / "_sim"
    env = {"QATPY_LIBQAT": str(sim / "libqat.so.4"), "QATPY_LIBUSDM": str(sim / "libusdm.so.0")}
    c = by_name(run_checks(tree, **healthy(find_library=None, environ=env)))
    assert c["qatlib"].status == "warn" and "simulated device" in c["qatlib"].detail
    env["QATPY_LIBQAT"] = str(tree / "nowhere/libqat.so.4")
    c = by_name(run_checks(tree, **healthy(find_library=None, environ=env)))
    assert c["qatlib"].status == "fail" and "does not exist" in c["qatlib"].detail
