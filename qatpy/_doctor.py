"""``qatpy doctor``: check this host against what qatlib needs to reach a QAT device.

Each check returns a `Check` (name, status, detail, fix).  The checks only read files, so
every path is taken relative to ``root`` and everything that is not a file (kernel release,
RLIMIT_MEMLOCK, user and groups, library lookup, access(2), the ssl provider probe) can be
injected: the tests build fake sysfs/proc/dev trees and hosts.  Only the ssl-provider check
imports the compiled extension (through qatpy.ssl), and nothing runs at import time.

Facts behind the checks: qatlib's ``INSTALL`` (prerequisites, memlock, ServicesEnabled,
standalone mode, common issues), Envoy's QAT set-up guide (IOMMU, containerd/CRI-O memlock,
/dev/vfio passthrough) and the pitfalls in the project's qatlib reference notes.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import resource
import stat
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

Status = Literal["ok", "warn", "fail", "info"]

MiB = 1 << 20
# qatlib INSTALL: "memlock limit which is 16MB per VF plus whatever the application requires".
MEMLOCK_PER_VF = 16 * MiB
# qatpy's own pinned memory is small (48 in-flight 2 KiB buffer sets per instance, curve
# constants, keys), but libusdm pins in slabs; leave room for a few of them.
MEMLOCK_APP = 16 * MiB
# INSTALL, standalone mode: with QAT_POLICY=0 (or unset) one process takes at most 6 VFs.
STANDALONE_MAX_VFS = 6
CAP_IPC_LOCK = 14  # linux/capability.h; vfio's pinning accounting skips RLIMIT_MEMLOCK with it

INTEL = 0x8086
# device id -> (family, "pf" | "vf", served by qatlib).  From the kernel's adf_accel_devices.h.
# qatlib (libqat.so.4, what qatpy loads) drives the in-tree 4xxx family only; the older
# generations are served by Intel's out-of-tree QAT 1.x package and its own libraries.
QAT_DEVICES: dict[int, tuple[str, str, bool]] = {
    0x4940: ("4xxx", "pf", True),
    0x4941: ("4xxx", "vf", True),
    0x4942: ("401xx", "pf", True),
    0x4943: ("401xx", "vf", True),
    0x4944: ("402xx", "pf", True),
    0x4945: ("402xx", "vf", True),
    0x4946: ("420xx", "pf", True),
    0x4947: ("420xx", "vf", True),
    0x0435: ("DH895xCC", "pf", False),
    0x0443: ("DH895xCC", "vf", False),
    0x37C8: ("C62x", "pf", False),
    0x37C9: ("C62x", "vf", False),
    0x19E2: ("C3xxx", "pf", False),
    0x19E3: ("C3xxx", "vf", False),
    0x18EE: ("200xx", "pf", False),
    0x18EF: ("200xx", "vf", False),
    0x6F54: ("D15xx", "pf", False),
    0x6F55: ("D15xx", "vf", False),
    0x18A0: ("C4xxx", "pf", False),
    0x18A1: ("C4xxx", "vf", False),
}

LIBQAT = "libqat.so.4"
LIBUSDM = "libusdm.so.0"
_LIB_ENV = {LIBQAT: "QATPY_LIBQAT", LIBUSDM: "QATPY_LIBUSDM"}
_LIB_DIRS = (
    "usr/lib64",
    "usr/lib/x86_64-linux-gnu",
    "usr/lib",
    "usr/local/lib64",
    "usr/local/lib",
    "lib64",
    "lib/x86_64-linux-gnu",
    "lib",
)
_CONTAINER_CGROUP = re.compile(r"docker|kubepods|containerd|crio|cri-containerd|libpod|lxc")


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, how it went, and what to do about it."""

    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class PciFunction:
    """A QAT physical or virtual function as sysfs shows it."""

    bdf: str
    device: int
    family: str
    kind: str  # "pf" | "vf"
    qatlib: bool
    driver: str | None
    iommu_group: str | None = None
    physfn: str | None = None  # VFs: the parent PF's BDF, when the PF is visible
    services: str | None = None  # PFs: qat/cfg_services
    state: str | None = None  # PFs: qat/state
    numvfs: int | None = None  # PFs: sriov_numvfs

    @property
    def ident(self) -> str:
        return f"8086:{self.device:04x}"


@dataclass
class Host:
    """Everything the checks read that does not come from a file under ``root``."""

    root: Path
    kernel_release: str
    memlock: tuple[int, int]
    euid: int
    user: str
    groups: frozenset[str]
    environ: Mapping[str, str]
    find_library: Callable[[str], str | None]
    access: Callable[[str, int], bool]
    cap_ipc_lock: bool


@dataclass
class _Facts:
    """What the checks share, gathered once."""

    functions: list[PciFunction] = field(default_factory=list)
    libs: dict[str, str | None] = field(default_factory=dict)
    lib_version: str | None = None
    container: str | None = None  # why we think we are in one
    sysconfig: dict[str, str] = field(default_factory=dict)
    usable_groups: list[str] = field(default_factory=list)  # QAT VF groups with an accessible /dev node

    @property
    def pfs(self) -> list[PciFunction]:
        return [f for f in self.functions if f.kind == "pf" and f.qatlib]

    @property
    def vfs(self) -> list[PciFunction]:
        return [f for f in self.functions if f.kind == "vf" and f.qatlib]

    @property
    def vfio_vfs(self) -> list[PciFunction]:
        return [f for f in self.vfs if f.driver == "vfio-pci"]


# ---------------------------------------------------------------- small readers


def _p(host: Host, rel: str) -> Path:
    return Path(host.root, rel.lstrip("/"))


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _link_name(path: Path) -> str | None:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def _hex(text: str | None) -> int | None:
    try:
        return int(text, 16) if text else None
    except ValueError:
        return None


def _kv_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (_read(path) or "").splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip().strip("\"'")
    return out


def _version_tuple(release: str) -> tuple[int, int, int] | None:
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def _mib(n: int) -> str:
    return f"{n / MiB:.0f} MiB" if n >= MiB else f"{n // 1024} KiB"


def _services(text: str | None) -> set[str]:
    return {s.strip() for s in (text or "").split(";") if s.strip()}


def _short(items: Sequence[str], n: int = 6) -> str:
    return ", ".join(items[:n]) + (f", … ({len(items)} in all)" if len(items) > n else "")


# ---------------------------------------------------------------- default host


def _caps_ipc_lock(root: Path) -> bool:
    for line in (_read(Path(root, "proc/self/status")) or "").splitlines():
        if line.startswith("CapEff:"):
            try:
                return bool(int(line.split()[1], 16) >> CAP_IPC_LOCK & 1)
            except (IndexError, ValueError):
                return False
    return False


def _process_groups() -> frozenset[str]:
    import grp

    names = set()
    for gid in {*os.getgroups(), os.getegid()}:
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            names.add(str(gid))
    return frozenset(names)


def _user_name() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _dlopen_path(soname: str) -> str | None:
    """Where the dynamic loader finds ``soname`` (what qatpy's own dlopen would load)."""
    try:
        ctypes.CDLL(soname)
    except OSError:
        return None
    for line in (_read(Path("/proc/self/maps")) or "").splitlines():
        path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
        if os.path.basename(path).startswith(soname):
            return path
    return soname


def default_find_library(root: Path, environ: Mapping[str, str]) -> Callable[[str], str | None]:
    """Find a qatlib library as qatpy would: QATPY_LIB* override, then the loader, then lib dirs."""

    def find(soname: str) -> str | None:
        override = environ.get(_LIB_ENV.get(soname, ""), "")
        if override:
            return override if os.path.exists(override) else None
        if root == Path("/"):
            found = _dlopen_path(soname)
            if found:
                return found
        for d in _LIB_DIRS:
            p = Path(root, d, soname)
            if p.exists():
                return str(p)
        return None

    return find


def make_host(
    root: str | os.PathLike[str] = "/",
    *,
    kernel_release: str | None = None,
    memlock: tuple[int, int] | None = None,
    euid: int | None = None,
    user: str | None = None,
    groups: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    find_library: Callable[[str], str | None] | None = None,
    access: Callable[[str, int], bool] | None = None,
    cap_ipc_lock: bool | None = None,
) -> Host:
    """The real host, with any input replaced by the caller's."""
    r = Path(root)
    env = dict(os.environ) if environ is None else environ
    return Host(
        root=r,
        kernel_release=os.uname().release if kernel_release is None else kernel_release,
        memlock=resource.getrlimit(resource.RLIMIT_MEMLOCK) if memlock is None else memlock,
        euid=os.geteuid() if euid is None else euid,
        user=_user_name() if user is None else user,
        groups=_process_groups() if groups is None else frozenset(groups),
        environ=env,
        find_library=default_find_library(r, env) if find_library is None else find_library,
        access=os.access if access is None else access,
        cap_ipc_lock=_caps_ipc_lock(r) if cap_ipc_lock is None else cap_ipc_lock,
    )


# ---------------------------------------------------------------- facts


def _scan_pci(host: Host) -> list[PciFunction]:
    base = _p(host, "sys/bus/pci/devices")
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return []
    out = []
    for bdf in entries:
        d = base / bdf
        if _hex(_read(d / "vendor")) != INTEL:
            continue
        dev = _hex(_read(d / "device"))
        if dev is None or dev not in QAT_DEVICES:
            continue
        family, kind, supported = QAT_DEVICES[dev]
        numvfs = _read(d / "sriov_numvfs")
        out.append(
            PciFunction(
                bdf=bdf,
                device=dev,
                family=family,
                kind=kind,
                qatlib=supported,
                driver=_link_name(d / "driver"),
                iommu_group=_link_name(d / "iommu_group"),
                physfn=_link_name(d / "physfn"),
                services=_read(d / "qat" / "cfg_services"),
                state=_read(d / "qat" / "state"),
                numvfs=int(numvfs) if numvfs and numvfs.isdigit() else None,
            )
        )
    return out


def _container(host: Host) -> str | None:
    for marker in (".dockerenv", "run/.containerenv"):
        if _p(host, marker).exists():
            return f"/{marker} exists"
    cg = _read(_p(host, "proc/1/cgroup")) or ""
    m = _CONTAINER_CGROUP.search(cg)
    if m:
        return f"/proc/1/cgroup mentions {m.group(0)}"
    if host.environ.get("container"):
        return f"container={host.environ['container']} in the environment"
    return None


def _lib_version(host: Host, libs: Mapping[str, str | None]) -> str | None:
    dirs = [Path(host.root, d, "pkgconfig") for d in _LIB_DIRS]
    qat = libs.get(LIBQAT)
    if qat:
        dirs.insert(0, Path(os.path.dirname(qat), "pkgconfig"))
    for d in dirs:
        for line in (_read(d / "qatlib.pc") or "").splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
    return None


def _gather(host: Host) -> _Facts:
    f = _Facts()
    f.functions = _scan_pci(host)
    f.libs = {name: host.find_library(name) for name in (LIBQAT, LIBUSDM)}
    f.lib_version = _lib_version(host, f.libs) if f.libs[LIBQAT] else None
    f.container = _container(host)
    f.sysconfig = _kv_file(_p(host, "etc/sysconfig/qat"))
    for vf in f.vfio_vfs:
        g = vf.iommu_group
        if g and _p(host, f"dev/vfio/{g}").exists() and host.access(str(_p(host, f"dev/vfio/{g}")), os.R_OK | os.W_OK):
            f.usable_groups.append(g)
    return f


# ---------------------------------------------------------------- checks


def check_kernel(host: Host, facts: _Facts) -> Check:
    rel = host.kernel_release
    v = _version_tuple(rel)
    if v is None:
        return Check("kernel", "info", f"cannot parse kernel release {rel!r}")
    if v < (5, 11, 0):
        return Check(
            "kernel",
            "fail",
            f"Linux {rel}: the in-tree QAT 4xxx driver needs Linux 5.11 or later",
            "boot a kernel >= 6.0 (5.11 is the minimum for crypto; 6.0 lets you configure ServicesEnabled)",
        )
    ver = facts.lib_version
    if (6, 1, 0) <= v <= (6, 1, 148) and (ver is None or ver.startswith(("24.09", "25.08"))):
        which = f"qatlib {facts.lib_version}" if facts.lib_version else "qatlib 24.09 or 25.08"
        return Check(
            "kernel",
            "warn",
            f'Linux {rel}: 6.1.0-6.1.148 with {which} fails with "Failed to get enabled '
            'services" (qatlib README, QATE-106085)',
            "use a 6.1 LTS kernel >= 6.1.149 or another kernel series, or a qatlib release other than 24.09/25.08",
        )
    if v < (6, 0, 0):
        return Check(
            "kernel",
            "warn",
            f"Linux {rel}: works for crypto, but ServicesEnabled needs Linux 6.0+; the driver "
            "default gives asym only on even-numbered PFs",
            "boot a kernel >= 6.0 to choose services per PF",
        )
    return Check("kernel", "ok", f"Linux {rel} (>= 6.0: QAT driver in tree, ServicesEnabled configurable)")


def check_iommu(host: Host, facts: _Facts) -> Check:
    # dmesg is not read: /dev/kmsg needs privileges and its wording varies; the IOMMU groups
    # the kernel created are the fact qatlib itself relies on.
    tokens = set((_read(_p(host, "proc/cmdline")) or "").split())
    try:
        ngroups = len(os.listdir(_p(host, "sys/kernel/iommu_groups")))
    except OSError:
        ngroups = 0
    on_flags = sorted(t for t in tokens if t in ("intel_iommu=on", "iommu=pt", "iommu=on"))
    fix = (
        "enable Intel VT-d and SR-IOV in the BIOS; add intel_iommu=on (optionally iommu=pt) to "
        "GRUB_CMDLINE_LINUX in /etc/default/grub, run update-grub (or grub2-mkconfig -o <grub.cfg>) "
        "and reboot; then `dmesg | grep -i -e DMAR -e IOMMU` should say the IOMMU is enabled"
    )
    if ngroups:
        extra = f"; kernel command line has {' '.join(on_flags)}" if on_flags else ""
        return Check("iommu", "ok", f"IOMMU on: /sys/kernel/iommu_groups has {ngroups} group(s){extra}")
    if tokens & {"intel_iommu=off", "iommu=off"}:
        return Check(
            "iommu",
            "fail",
            "the kernel command line turns the IOMMU off "
            f"({' '.join(sorted(tokens & {'intel_iommu=off', 'iommu=off'}))})",
            fix,
        )
    if on_flags:
        return Check(
            "iommu",
            "fail",
            f"{' '.join(on_flags)} is on the kernel command line but the kernel "
            "created no IOMMU groups: VT-d is probably disabled in the BIOS",
            fix,
        )
    return Check(
        "iommu",
        "fail",
        "IOMMU off: no IOMMU groups in /sys/kernel/iommu_groups and no "
        "intel_iommu=on on the kernel command line (vfio-pci needs the IOMMU)",
        fix,
    )


def check_devices(host: Host, facts: _Facts) -> Check:
    name = "qat-devices"
    if not facts.functions:
        return Check(
            name,
            "fail",
            "no Intel QAT device in /sys/bus/pci/devices (looked for PFs 8086:4940/4942/4944/4946 "
            "and their VFs 4941/4943/4945/4947)",
            "run on a host with QAT (for example a 4th Gen Xeon Scalable or later with QAT enabled in "
            "the BIOS; `lspci -d 8086:4940` lists the PFs), or pass a QAT VF into this VM; "
            "until then qatpy signs in software",
        )
    old = [f for f in facts.functions if not f.qatlib]
    if not facts.pfs and not facts.vfs:
        fams = sorted({f"{f.family} ({f.ident})" for f in old})
        return Check(
            name,
            "fail",
            f"found {', '.join(fams)}: qatlib, which qatpy loads, drives only the 4xxx family (4xxx/401xx/402xx/420xx)",
            "these devices need Intel's out-of-tree QAT 1.x driver package, which qatpy does not "
            "support; use a 4xxx-family device",
        )
    for pf in facts.pfs:
        if pf.driver is None:
            # qat_4xxx drives 4940/4942/4944, qat_420xx drives 4946; firmware is named per family.
            module = "qat_420xx" if pf.family == "420xx" else "qat_4xxx"
            fwname = "qat_4xxx" if pf.family in ("4xxx", "401xx") else f"qat_{pf.family}"
            fw = [
                n
                for n in (f"{fwname}.bin", f"{fwname}.bin.xz", f"{fwname}.bin.zst")
                if _p(host, f"lib/firmware/{n}").exists() or _p(host, f"usr/lib/firmware/{n}").exists()
            ]
            fwnote = "" if fw else f"; no {fwname}.bin firmware under /lib/firmware"
            return Check(
                name,
                "fail",
                f"PF {pf.bdf} ({pf.family}, {pf.ident}) has no kernel driver bound{fwnote}",
                f"load the PF driver: `sudo modprobe {module}` (Linux >= 5.11); the firmware files "
                f"/lib/firmware/{fwname}.bin and {fwname}_mmp.bin must exist (then "
                "`sudo dracut --force` or update-initramfs so early boot finds them)",
            )
    if facts.pfs and not facts.vfs:
        return Check(
            name,
            "fail",
            f"{len(facts.pfs)} QAT PF(s) ({_short([p.bdf for p in facts.pfs])}) but no virtual "
            "functions: qatlib only uses VFs",
            "start qatlib's service, which creates the VFs and binds them to vfio-pci: "
            "`sudo systemctl enable --now qat`; by hand: "
            "`cat sriov_totalvfs | sudo tee sriov_numvfs` in /sys/bus/pci/devices/<PF>/",
        )
    down = [p.bdf for p in facts.pfs if p.state == "down"]
    parts = []
    if facts.pfs:
        drivers = sorted({p.driver or "-" for p in facts.pfs})
        parts.append(
            f"{len(facts.pfs)} PF ({_short(sorted({p.ident for p in facts.pfs}))}, driver {', '.join(drivers)})"
        )
    else:
        parts.append("no PF visible (normal in a VM)")
    parts.append(f"{len(facts.vfs)} VF ({_short(sorted({v.ident for v in facts.vfs}))})")
    if down:
        return Check(
            name,
            "warn",
            "; ".join(parts) + f"; PF {_short(down)} is down",
            "bring the PF up: `echo up | sudo tee /sys/bus/pci/devices/<PF>/qat/state`, or "
            "`sudo systemctl restart qat`",
        )
    return Check(name, "ok", "; ".join(parts))


def check_vfio_binding(host: Host, facts: _Facts) -> Check:
    name = "vfio-pci"
    if not facts.vfs:
        return Check(name, "info", "not checked: no QAT VF (see qat-devices)")
    bound = facts.vfio_vfs
    other = sorted({f"{v.driver or 'no driver'}" for v in facts.vfs if v.driver != "vfio-pci"})
    if not bound:
        return Check(
            name,
            "fail",
            f"none of the {len(facts.vfs)} QAT VFs is bound to vfio-pci (bound to: {', '.join(other)})",
            "`sudo systemctl restart qat` binds the VFs to vfio-pci; by hand per VF: "
            "`echo vfio-pci | sudo tee /sys/bus/pci/devices/<VF>/driver_override`, unbind it from "
            "its driver (`echo <VF> | sudo tee /sys/bus/pci/devices/<VF>/driver/unbind`), then "
            "`echo <VF> | sudo tee /sys/bus/pci/drivers_probe` (modprobe vfio-pci first)",
        )
    detail = f"{len(bound)} of {len(facts.vfs)} QAT VFs bound to vfio-pci"
    if other:
        detail += f" (the rest: {', '.join(other)}; qatlib cannot use those)"
    return Check(name, "ok", detail)


def check_dev_vfio(host: Host, facts: _Facts) -> Check:
    name = "/dev/vfio"
    fix_missing = (
        "in a container pass the devices in: `--device /dev/vfio/vfio --device /dev/vfio/<N>` "
        "(docker/podman) or the Intel QAT device plugin (Kubernetes); on the host "
        "/dev/vfio/<N> appears when a VF is bound to vfio-pci (`sudo modprobe vfio-pci`, "
        "`sudo systemctl restart qat`)"
    )
    bound = facts.vfio_vfs
    d = _p(host, "dev/vfio")
    if not bound:
        if not d.is_dir():
            return Check(name, "info", "/dev/vfio does not exist (not checked further: no QAT VF on vfio-pci)")
        return Check(name, "info", "not checked: no QAT VF bound to vfio-pci")
    if not d.is_dir():
        return Check(
            name,
            "fail",
            '/dev/vfio does not exist: qatlib stops with "Failed to open /dev/vfio for locking"',
            fix_missing,
        )
    container_node = d / "vfio"
    if not container_node.exists():
        return Check(name, "fail", "/dev/vfio/vfio (the VFIO container node) is missing", fix_missing)
    if not host.access(str(container_node), os.R_OK | os.W_OK):
        return Check(
            name,
            "fail",
            "/dev/vfio/vfio is not readable and writable by this user",
            "it is normally mode 0666: `sudo chmod 0666 /dev/vfio/vfio`",
        )
    groups = sorted({v.iommu_group for v in bound if v.iommu_group}, key=lambda g: (len(g), g))
    present = [g for g in groups if (d / g).exists()]
    if not present:
        return Check(name, "fail", f"no /dev/vfio node for the QAT VF IOMMU groups ({_short(groups)})", fix_missing)
    if not facts.usable_groups:
        modes = []
        gidnames = _group_names(host)
        for g in present[:3]:
            try:
                st = os.stat(d / g)
                modes.append(
                    f"/dev/vfio/{g} {stat.filemode(st.st_mode)} group {gidnames.get(st.st_gid, str(st.st_gid))}"
                )
            except OSError:
                modes.append(f"/dev/vfio/{g}")
        return Check(
            name,
            "fail",
            f"none of the {len(present)} QAT VF nodes is readable and writable by {host.user} "
            f'(uid {host.euid}): {"; ".join(modes)} — qatlib says "Open failed on /dev/vfio/N"',
            f"add the user to group qat and log in again: `sudo usermod -a -G qat {host.user}`; "
            "qatlib's service gives group qat rw on /dev/vfio/* (`sudo systemctl restart qat` "
            "re-applies it); if it still fails check SELinux denials (`ausearch -m avc`)",
        )
    detail = (
        f"{len(facts.usable_groups)} of {len(groups)} QAT VF nodes usable "
        f"({_short(['/dev/vfio/' + g for g in facts.usable_groups])})"
    )
    return Check(name, "ok", detail)


def _group_names(host: Host) -> dict[int, str]:
    out: dict[int, str] = {}
    for line in (_read(_p(host, "etc/group")) or "").splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[2].isdigit():
            out[int(parts[2])] = parts[0]
    return out


def check_qat_group(host: Host, facts: _Facts, vfio_ok: bool) -> Check:
    name = "qat-group"
    if host.euid == 0:
        return Check(name, "ok", "running as root (group qat not needed)")
    if "qat" in host.groups:
        return Check(name, "ok", f"{host.user} is in group qat")
    status: Status = "info" if vfio_ok else "warn"
    members: list[str] | None = None
    for line in (_read(_p(host, "etc/group")) or "").splitlines():
        parts = line.split(":")
        if parts[0] == "qat" and len(parts) >= 4:
            members = [m for m in parts[3].split(",") if m]
    if members is None:
        return Check(
            name,
            status,
            "group qat does not exist (qatlib's service creates it and gives it access to /dev/vfio/*)",
            f"install qatlib with its service, or `sudo groupadd qat`, then `sudo usermod -a -G qat "
            f"{host.user}`, `sudo systemctl restart qat`, and log in again",
        )
    if host.user in members:
        return Check(
            name,
            status,
            f"{host.user} is listed in group qat, but this session does not have it "
            "yet (membership changed after login)",
            "log out and in again (or `newgrp qat`, or `sudo su -l $USER`)",
        )
    return Check(
        name,
        status,
        f"{host.user} (uid {host.euid}) is not root and not in group qat",
        f"`sudo usermod -a -G qat {host.user}`, then log in again",
    )


def _vfs_needed(host: Host, facts: _Facts) -> tuple[int, str]:
    """How many VFs this process would map, and why (drives the memlock estimate)."""
    usable = len(facts.usable_groups) or len(facts.vfio_vfs) or 1
    managed = _p(host, "run/qat/qatmgr.sock").exists()
    if managed:
        policy = facts.sysconfig.get("POLICY", "0")
        if policy.isdigit() and int(policy) > 0:
            return min(int(policy), usable), f"POLICY={policy}"
        pfs = len({v.physfn for v in facts.vfio_vfs if v.physfn}) or 1
        return min(pfs, usable), "POLICY=0: one VF per PF"
    qp = host.environ.get("QAT_POLICY", "")
    if qp.isdigit() and int(qp) > 0:
        return min(int(qp), usable), f"QAT_POLICY={qp}"
    return min(STANDALONE_MAX_VFS, usable), "standalone without QAT_POLICY: up to 6 VFs"


def check_memlock(host: Host, facts: _Facts) -> Check:
    name = "memlock"
    soft, hard = host.memlock
    if host.cap_ipc_lock:
        return Check(name, "ok", "process has CAP_IPC_LOCK: pinned DMA memory is not limited by RLIMIT_MEMLOCK")
    if soft == resource.RLIM_INFINITY:
        return Check(name, "ok", "RLIMIT_MEMLOCK unlimited")
    nvf, why = _vfs_needed(host, facts)
    need = MEMLOCK_PER_VF * nvf + MEMLOCK_APP
    have = f"RLIMIT_MEMLOCK {_mib(soft)} (hard {'unlimited' if hard == resource.RLIM_INFINITY else _mib(hard)})"
    want = f"{_mib(need)} = 16 MiB x {nvf} VF ({why}) + {_mib(MEMLOCK_APP)} for qatpy's buffers"
    kib = need // 1024
    fix = (
        f"raise the locked-memory limit to >= {_mib(need)} for the user running qatpy: "
        f"`{host.user} - memlock {kib}` in /etc/security/limits.conf and log in again; systemd "
        f"service: LimitMEMLOCK={need} (or infinity) in the unit; docker/podman: `--ulimit "
        "memlock=-1:-1`; Kubernetes: raise LimitMEMLOCK of containerd.service/crio.service with a "
        "systemd drop-in, then `systemctl daemon-reload` and restart the runtime"
    )
    if hard == resource.RLIM_INFINITY or hard >= need:
        fix = f"the hard limit allows it: `ulimit -l {kib}` before starting the process; or " + fix
    if soft < MEMLOCK_PER_VF:
        return Check(
            name,
            "fail",
            f"{have}: below the 16 MiB one VF needs; qatlib fails to map its rings "
            '("VFIO_IOMMU_MAP_DMA failed … errno=12", dmesg "RLIMIT_MEMLOCK … exceeded"). '
            f"Want {want}",
            fix,
        )
    if soft < need:
        return Check(name, "warn", f"{have} is below {want}", fix)
    return Check(name, "ok", f"{have} >= {want}")


def check_libraries(host: Host, facts: _Facts) -> Check:
    name = "qatlib"
    qat, usdm = facts.libs.get(LIBQAT), facts.libs.get(LIBUSDM)
    missing = [n for n, p in ((LIBQAT, qat), (LIBUSDM, usdm)) if not p]
    if missing:
        over = [f"{_LIB_ENV[n]}={host.environ[_LIB_ENV[n]]}" for n in missing if host.environ.get(_LIB_ENV[n])]
        note = f" ({', '.join(over)} does not exist)" if over else ""
        return Check(
            name,
            "fail",
            f"{' and '.join(missing)} not found{note}",
            "install qatlib: your distribution's qatlib packages (Fedora, RHEL, Ubuntu 24.04+; "
            "Debian 12 has none) or build it from https://github.com/intel/qatlib "
            "(`./autogen.sh && ./configure --enable-service && make -j && sudo make install`); "
            "a non-standard location can be given with QATPY_LIBQAT / QATPY_LIBUSDM",
        )
    assert qat is not None and usdm is not None
    version = f"qatlib {facts.lib_version}" if facts.lib_version else "version unknown (no qatlib.pc)"
    detail = f"{LIBQAT} at {qat}, {LIBUSDM} at {usdm}; {version}"
    sim = os.path.join("qatpy", "_sim")
    if sim in qat or sim in usdm:
        return Check(
            name,
            "warn",
            detail + ": this is qatpy's simulated device, not qatlib",
            "unset QATPY_LIBQAT / QATPY_LIBUSDM to use the real qatlib",
        )
    return Check(name, "ok", detail)


def check_qatmgr(host: Host, facts: _Facts) -> Check:
    name = "qatmgr"
    sock = _p(host, "run/qat/qatmgr.sock")
    policy = host.environ.get("QAT_POLICY")
    if sock.exists():
        try:
            is_sock = stat.S_ISSOCK(os.stat(sock).st_mode)
        except OSError:
            is_sock = False
        if not host.access(str(sock), os.W_OK):
            return Check(
                name,
                "warn",
                "/run/qat/qatmgr.sock exists but this user cannot connect to it",
                f"add {host.user} to group qat and log in again",
            )
        kind = "socket" if is_sock else "entry"
        pol = facts.sysconfig.get("POLICY", "0 (one VF per PF per process)")
        return Check(name, "ok", f"managed mode: /run/qat/qatmgr.sock {kind} present; POLICY={pol}")
    if policy is not None and policy.strip() == "0":
        return Check(
            name,
            "warn",
            "standalone mode (no /run/qat/qatmgr.sock) with QAT_POLICY=0, which "
            "recent qatlib rejects in standalone mode",
            "set QAT_POLICY=1 (or the number of VFs each process should take)",
        )
    share = (
        f"QAT_POLICY={policy}"
        if policy
        else "no QAT_POLICY: the first process takes up to 6 VFs and later ones may find none"
    )
    if facts.container:
        return Check(
            name,
            "info",
            f"standalone mode (no qatmgr socket; usual in containers); {share}",
            "" if policy else "set QAT_POLICY=1 in the container's environment when several processes share the VFs",
        )
    return Check(
        name,
        "warn",
        f"qat service not running (no /run/qat/qatmgr.sock): qatlib runs standalone; {share}",
        "`sudo systemctl enable --now qat` (qatmgr hands each process its VFs); after a qatlib "
        'upgrade restart it, or the new library reports an "incompatible qatmgr"',
    )


def check_asym(host: Host, facts: _Facts, kernel: tuple[int, int, int] | None) -> Check:
    name = "asym-service"
    fix = (
        "set ServicesEnabled=sym;asym (or asym) in /etc/sysconfig/qat and `sudo systemctl restart qat` "
        "(Linux >= 6.0); or per PF: `echo down > /sys/bus/pci/devices/<PF>/qat/state; "
        "echo 'sym;asym' > .../qat/cfg_services; echo up > .../qat/state`, then restart qat so the VFs "
        "are re-created"
    )
    if not facts.vfs and not facts.pfs:
        return Check(name, "info", "not checked: no QAT device")
    by_bdf = {p.bdf: p for p in facts.pfs}
    usable = [v for v in facts.vfio_vfs if v.iommu_group in facts.usable_groups] or facts.vfio_vfs or facts.vfs
    parents = [by_bdf[v.physfn] for v in usable if v.physfn in by_bdf]
    known = {p.bdf: p.services for p in (parents or facts.pfs) if p.services}
    enabled = facts.sysconfig.get("ServicesEnabled")
    note = ""
    if enabled and kernel is not None and kernel < (6, 0, 0):
        note = f"; ServicesEnabled={enabled} is ignored before Linux 6.0"
    if known:
        with_asym = sorted(b for b, s in known.items() if "asym" in _services(s))
        if not with_asym:
            desc = _short([f"{b}: {s}" for b, s in sorted(known.items())], 4)
            return Check(
                name,
                "fail",
                f"no PF serving this process's VFs offers asym ({desc}); qatpy would find 0 asym instances{note}",
                fix,
            )
        without = sorted(set(known) - set(with_asym))
        extra = f"; {_short(without, 4)} without asym (their VFs give qatpy nothing)" if without else ""
        return Check(
            name,
            "ok",
            f"asym on {len(with_asym)} of {len(known)} PFs "
            f"({_short([f'{b}: {known[b]}' for b in with_asym], 4)}){extra}{note}",
        )
    if enabled:
        if "asym" in _services(enabled):
            return Check(name, "ok", f"/etc/sysconfig/qat: ServicesEnabled={enabled}{note}")
        return Check(name, "fail", f"/etc/sysconfig/qat: ServicesEnabled={enabled} has no asym{note}", fix)
    return Check(
        name,
        "info",
        "cannot see the PF service configuration from here (no qat/cfg_services, no "
        "ServicesEnabled); the default gives sym;asym on even-numbered PFs and dc on odd ones. "
        "If qatpy reports 0 asym instances, the VFs come from a dc PF",
        fix,
    )


def check_container(host: Host, facts: _Facts, memlock: Check, dev: Check) -> Check:
    name = "container"
    if not facts.container:
        return Check(name, "info", "not in a container")
    hints = [
        (
            "pass /dev/vfio/vfio and each VF group into the container (docker/podman: "
            "`--device /dev/vfio/vfio --device /dev/vfio/<N>`; Kubernetes: the Intel QAT device plugin)"
        ),
        (
            "raise memlock: docker/podman `--ulimit memlock=-1:-1`; containerd/CRI-O: a systemd drop-in "
            "such as /etc/systemd/system/containerd.service.d/memlock.conf with [Service] "
            "LimitMEMLOCK=134217728 (crio.service likewise), `systemctl daemon-reload`, restart the runtime"
        ),
        "no qatmgr runs in a container: set QAT_POLICY=1 when several processes share the VFs",
    ]
    problems = [c.name for c in (memlock, dev) if c.status in ("fail", "warn")]
    if problems:
        return Check(
            name,
            "warn",
            f"in a container ({facts.container}); {' and '.join(problems)} need the container runtime's help",
            "; ".join(hints),
        )
    if dev.status == "ok" and memlock.status == "ok":
        return Check(name, "info", f"in a container ({facts.container}); VFIO devices and memlock look fine", hints[2])
    return Check(name, "info", f"in a container ({facts.container})", "; ".join(hints))


def check_hugepages(host: Host, facts: _Facts) -> Check:
    name = "hugepages"
    text = _read(_p(host, "proc/sys/vm/nr_hugepages"))
    if text is None or not text.isdigit():
        return Check(name, "info", "nr_hugepages unknown")
    n = int(text)
    if n == 0:
        return Check(name, "info", "no hugepages reserved (qatlib does not need them)")
    if facts.lib_version and facts.lib_version.startswith("25.08"):
        return Check(
            name,
            "warn",
            f"nr_hugepages={n} with qatlib 25.08, which then routes DMA through "
            'hugepages and fails with "Unable to get ringbuf" if this process cannot use them',
            "upgrade qatlib to 26.08 (uses hugepages only with QAT_MAX_2M_HPG_PER_PROCESS), or "
            "make the hugepages usable by this user, or set nr_hugepages to 0",
        )
    return Check(name, "info", f"nr_hugepages={n}; qatlib 26.08+ uses them only when QAT_MAX_2M_HPG_PER_PROCESS is set")


def _ssl_provider_problem() -> str | None:
    """None when Python's ssl can take qatpy's provider, else the reason (loads the provider)."""
    try:
        from . import ssl as qssl

        qssl.check()
    except Exception as exc:  # SslProviderError, or an ImportError of a broken install
        return f"{exc}"
    return None


def check_ssl_provider(problem: str | None) -> Check:
    """Whether Python's ``ssl`` module can be offloaded (qatpy.ssl, ``python -m qatpy run``)."""
    name = "ssl-provider"
    if problem is None:
        return Check(name, "ok", "Python's ssl module can take qatpy's OpenSSL provider (qatpy.ssl, `qatpy run`)")
    return Check(
        name,
        "warn",
        f"Python's ssl module cannot be offloaded: {problem}",
        "use a Python whose _ssl links the system's shared libcrypto.so.3 (OpenSSL 3), without fips=yes "
        "default properties; qatpy keys still sign on QAT through qatpy's own API",
    )


# ---------------------------------------------------------------- public entry points


def run_checks(
    root: str | os.PathLike[str] = "/",
    *,
    kernel_release: str | None = None,
    memlock: tuple[int, int] | None = None,
    euid: int | None = None,
    user: str | None = None,
    groups: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    find_library: Callable[[str], str | None] | None = None,
    access: Callable[[str, int], bool] | None = None,
    cap_ipc_lock: bool | None = None,
    ssl_provider: Callable[[], str | None] | None = None,
) -> list[Check]:
    """Check the host under ``root``; any keyword replaces the corresponding live input.

    The checks come back in the order the fixes should be applied, verdict last.
    """
    host = make_host(
        root,
        kernel_release=kernel_release,
        memlock=memlock,
        euid=euid,
        user=user,
        groups=groups,
        environ=environ,
        find_library=find_library,
        access=access,
        cap_ipc_lock=cap_ipc_lock,
    )
    facts = _gather(host)
    kernel = check_kernel(host, facts)
    iommu = check_iommu(host, facts)
    devices = check_devices(host, facts)
    libs = check_libraries(host, facts)
    binding = check_vfio_binding(host, facts)
    dev = check_dev_vfio(host, facts)
    group = check_qat_group(host, facts, vfio_ok=dev.status == "ok")
    mem = check_memlock(host, facts)
    asym = check_asym(host, facts, _version_tuple(host.kernel_release))
    mgr = check_qatmgr(host, facts)
    cont = check_container(host, facts, mem, dev)
    huge = check_hugepages(host, facts)
    # Order = the order to fix things in: hardware, kernel and BIOS, qatlib (its service creates the
    # VFs, binds them and sets up group qat), then per-process limits and configuration.
    sslp = check_ssl_provider((ssl_provider or _ssl_provider_problem)())
    checks = [devices, kernel, iommu, libs, binding, dev, group, mem, asym, mgr, cont, huge, sslp]
    return checks + [verdict(checks)]


def is_usable(checks: Sequence[Check]) -> bool:
    return not any(c.status == "fail" for c in checks if c.name != "verdict")


def verdict(checks: Sequence[Check]) -> Check:
    """The overall answer, with every fix in the order to apply it (failures first, then warnings)."""
    fails = [c for c in checks if c.status == "fail" and c.name != "verdict"]
    warns = [c for c in checks if c.status == "warn" and c.name != "verdict"]
    steps = [f"{c.name}: {c.fix}" for c in fails + warns if c.fix]
    if fails:
        detail = (
            f"QAT is NOT usable on this host ({', '.join(c.name for c in fails)}): "
            "qatpy's 'auto' backend signs in software and Engine('qat') raises QatUnavailableError"
        )
        return Check("verdict", "fail", detail, "\n".join(steps))
    detail = "QAT looks usable: Engine('auto') should pick the device"
    if warns:
        detail += f" (check the warnings: {', '.join(c.name for c in warns)})"
    return Check("verdict", "ok", detail, "\n".join(steps))


_LABEL = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "info": "info"}
_WIDTH = 100


def _wrap(text: str, first: str, rest: str) -> str:
    # Commands stay copy-pastable: no breaks inside `code spans`, words or on hyphens.
    glued = re.sub(r"`[^`]*`", lambda m: m.group(0).replace(" ", "\0"), text)
    out = textwrap.fill(
        glued, _WIDTH, initial_indent=first, subsequent_indent=rest, break_long_words=False, break_on_hyphens=False
    )
    return out.replace("\0", " ")


def render_text(checks: Sequence[Check]) -> str:
    """The human report: one line per check, its fix below it, then the verdict and the steps."""
    width = max((len(c.name) for c in checks), default=8)
    lines = ["qatpy doctor: this host against qatlib's prerequisites for Intel QAT", ""]
    final = None
    for c in checks:
        if c.name == "verdict":
            final = c
            continue
        head = f"[{_LABEL[c.status]:^4}] {c.name:<{width}}  "
        lines.append(_wrap(c.detail, head, " " * len(head)))
        if c.fix and c.status in ("fail", "warn"):
            lines.append(_wrap(c.fix, " " * len(head) + "fix: ", " " * (len(head) + 5)))
    final = final or verdict(checks)
    lines += ["", _wrap(final.detail, "", "")]
    steps = [s for s in final.fix.split("\n") if s]
    if steps:
        lines.append("Steps to fix, in order:" if final.status == "fail" else "Suggested:")
        lines += [_wrap(s, f"  {i}. ", "     ") for i, s in enumerate(steps, 1)]
    return "\n".join(lines) + "\n"


def to_json(checks: Sequence[Check]) -> dict[str, object]:
    """The report as plain data: ``usable``, ``summary``, ``steps`` and every check."""
    final = next((c for c in checks if c.name == "verdict"), None) or verdict(checks)
    return {
        "usable": is_usable(checks),
        "summary": final.detail,
        "steps": [s for s in final.fix.split("\n") if s],
        "checks": [asdict(c) for c in checks if c.name != "verdict"],
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--root", default="/", help=argparse.SUPPRESS)


def main(argv: Sequence[str] | None = None) -> int:
    """``qatpy doctor [--json]``: exit 0 when QAT is usable, 1 when it is not."""
    parser = argparse.ArgumentParser(prog="qatpy doctor", description="check this host's Intel QAT set-up for qatpy")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args)


def run(args: argparse.Namespace) -> int:
    checks = run_checks(args.root)
    text = json.dumps(to_json(checks), indent=2) + "\n" if args.json else render_text(checks)
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `qatpy doctor | head`: the reader left, the exit code still counts
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0 if is_usable(checks) else 1
