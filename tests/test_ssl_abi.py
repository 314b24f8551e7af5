"""Our declarations of OpenSSL's provider ABI (csrc/provider/ossl_abi.h) match
the facts table and, where installed, OpenSSL's own headers: every constant,
string and struct layout."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from ossl_abi_facts import CONSTANTS, STRUCTS

ABI_H = Path(__file__).parent.parent / "csrc" / "provider" / "ossl_abi.h"
SYSTEM_HEADERS = Path("/usr/include/openssl/core_dispatch.h")
PREFIX = "QPV_"


def _declared_names() -> list[str]:
    names = re.findall(r"^#define (QPV_\w+)\s+\S", ABI_H.read_text(), flags=re.M)
    return [n[len(PREFIX) :] for n in names]


def _program(includes: str, prefix: str) -> str:
    """C source printing each constant as `NAME=value` and each layout as `S.f=offset`."""
    lines = ["#include <stdio.h>", "#include <stddef.h>", includes, "int main(void) {"]
    for name, (value, _) in CONSTANTS.items():
        if isinstance(value, str):
            lines.append(f'    printf("{name}=%s\\n", {prefix}{name});')
        else:
            lines.append(f'    printf("{name}=%lld\\n", (long long)({prefix}{name}));')
    for ours, (theirs, _, fields) in STRUCTS.items():
        t = ours if prefix else theirs
        lines.append(f'    printf("{ours}=%zu\\n", sizeof({t}));')
        for f in fields:
            lines.append(f'    printf("{ours}.{f}=%zu\\n", offsetof({t}, {f}));')
    lines += ["    return 0;", "}"]
    return "\n".join(lines) + "\n"


def _run(tmp_path: Path, source: str, name: str, include_dir: Path | None = None) -> dict[str, str]:
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed (the package itself is built with one)"
    src = tmp_path / f"{name}.c"
    exe = tmp_path / name
    src.write_text(source)
    cmd = [cc, "-std=gnu11", "-Wall", "-Werror", "-o", str(exe), str(src)]
    if include_dir is not None:
        cmd[1:1] = ["-I", str(include_dir)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def _expected() -> dict[str, str]:
    exp = {n: str(v) for n, (v, _) in CONSTANTS.items()}
    for ours, (_, size, fields) in STRUCTS.items():
        exp[ours] = str(size)
        exp.update({f"{ours}.{f}": str(off) for f, off in fields.items()})
    return exp


def test_every_declared_constant_is_in_the_facts_table():
    """Each #define in ossl_abi.h has a facts entry, and each fact is declared: nothing unchecked."""
    declared = set(_declared_names()) - {"OSSL_ABI_H"}
    assert declared == set(CONSTANTS)


def test_declarations_match_facts(tmp_path):
    """Compiled against ossl_abi.h, every constant, string, size and offset equals the facts table."""
    got = _run(tmp_path, _program('#include "ossl_abi.h"', PREFIX), "ours", ABI_H.parent)
    assert got == _expected()


def test_facts_match_system_openssl_headers(tmp_path):
    """The facts table equals OpenSSL's installed headers (compiled in a tiny C program)."""
    if not SYSTEM_HEADERS.exists():
        pytest.skip(
            f"REPORT: OpenSSL's development headers are not installed ({SYSTEM_HEADERS} missing); "
            "ossl_abi.h was checked against the facts table only (apt-get install libssl-dev to check both)"
        )
    includes = "\n".join(
        f"#include <openssl/{h}>"
        for h in ("core.h", "core_dispatch.h", "core_names.h", "core_object.h", "evp.h", "rsa.h", "params.h")
    )
    got = _run(tmp_path, _program(includes, ""), "theirs")
    assert got == _expected()
