"""The docs are kept honest: docs/architecture.md names every module and C file and matches the
imports, and docs/reference.md documents every option, stats() field, exception, environment
variable and command-line flag."""

from __future__ import annotations

import argparse
import ast
import inspect
import re
from pathlib import Path

import pytest

import qatpy

ROOT = Path(__file__).resolve().parent.parent
ARCH = (ROOT / "docs" / "architecture.md").read_text()

# docs/architecture.md's layers, top (0) to bottom: a module may import its own layer or below.
LAYERS: dict[str, int] = {}
for rank, names in enumerate(
    [
        "__init__ __main__ ssl _sslprov _launcher testing _speed _soak _doctor integrations.tlslite _boot.sitecustomize",
        "_engine _keys",
        "_fallback",
        "_qat _software",
        "_session _pending _delivery _simsession",
        "_backend _ops _completion _status _errors _simfaults",
        "_binding",
    ]
):
    for name in names.split():
        LAYERS[name] = rank


def _modules() -> dict[str, Path]:
    pkg = ROOT / "qatpy"
    return {
        ".".join(p.relative_to(pkg).with_suffix("").parts): p
        for p in pkg.rglob("*.py")
        if p.name != "__init__.py" or p.parent == pkg
    }


def test_architecture_names_every_module_and_c_file():
    """Every Python module of the package and every C file of the shim, the provider and the simulator is named in docs/architecture.md."""
    missing = [
        m for m in _modules() if f"`{m.split('.')[-1]}.py`" not in ARCH and f"{m.replace('.', '/')}.py" not in ARCH
    ]
    c_files = [p for d in ("shim", "provider", "sim") for p in (ROOT / "csrc" / d).glob("*.c")]
    missing += [str(p.relative_to(ROOT)) for p in c_files if f"`{p.name}`" not in ARCH]
    assert missing == []
    assert set(_modules()) <= set(LAYERS), set(_modules()) - set(LAYERS)


def _imports(path: Path) -> set[str]:
    """qatpy modules a module imports at run time (imports under `if TYPE_CHECKING:` are types only)."""
    tree = ast.parse(path.read_text())
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only |= {id(n) for n in ast.walk(node)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("qatpy"):
            out.add(node.module[len("qatpy.") :] if node.module != "qatpy" else "__init__")
        elif isinstance(node, ast.ImportFrom) and node.level >= 1:
            if node.module:
                out.add(node.module)
            else:
                out |= {a.name for a in node.names}
    return out


def test_no_module_imports_a_layer_above_it():
    """Imports go down the layers of docs/architecture.md (engine -> policy -> backends -> device runtime -> values -> raw binding)."""
    bad = []
    for name, path in _modules().items():
        for imported in _imports(path):
            imported = imported.lstrip(".")
            if imported in LAYERS and LAYERS[imported] < LAYERS[name]:
                bad.append(f"{name} imports {imported}")
    assert bad == []


def test_only_the_raw_binding_touches_the_compiled_module():
    """No module but qatpy._binding imports the compiled extension."""
    users = [n for n, p in _modules().items() if re.search(r"\b_native\b", p.read_text()) and n != "_binding"]
    assert users == []


REF = (ROOT / "docs" / "reference.md").read_text()


def _section(title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", REF, re.S | re.M)
    assert m, f"docs/reference.md has no section '## {title}'"
    return m.group(1)


def test_every_engine_option_is_documented():
    """Every Engine() parameter has a row in docs/reference.md's Engine options table."""
    table = _section("Engine options")
    params = [p for p in inspect.signature(qatpy.Engine).parameters]
    assert [p for p in params if f"`{p}`" not in table] == []


def _stats_keys(d: dict, prefix: str = "") -> set[str]:
    keys = set()
    for k, v in d.items():
        keys.add(k)
        if isinstance(v, dict) and k not in ("per_instance_completed",):
            keys |= _stats_keys(v, f"{prefix}{k}.")
    return keys


@pytest.mark.parametrize("backend", ["software", "sim"])
def test_every_stats_field_is_documented(backend):
    """Every key stats() returns (nested ones included) is documented in docs/reference.md's stats() section."""
    section = _section("stats() fields")
    with qatpy.Engine(backend) as eng:
        keys = _stats_keys(eng.stats())
    assert sorted(k for k in keys if f"`{k}`" not in section) == []


def test_every_exception_is_documented():
    """Every exception class qatpy exports is in docs/reference.md's Errors section."""
    section = _section("Errors")
    excs = [n for n in dir(qatpy) if isinstance(getattr(qatpy, n), type) and issubclass(getattr(qatpy, n), Exception)]
    assert excs and [n for n in excs if f"`{n}`" not in section] == []


def test_every_environment_variable_is_documented():
    """Every QATPY_* environment variable the package, its build or its launcher reads is in docs/reference.md."""
    section = _section("Environment variables")
    sources = [
        *(ROOT / "qatpy").rglob("*.py"),
        ROOT / "setup.py",
        *(ROOT / "csrc").glob("*.py"),
        ROOT / "csrc/sim/build.py",
    ]
    found: set[str] = set()
    for p in sources:
        text = p.read_text()
        found |= set(re.findall(r"environ(?:\.get)?\(\s*\"(QATPY_[A-Z_]+)\"", text))
        found |= set(re.findall(r"environ\[\s*\"(QATPY_[A-Z_]+)\"\s*\]", text))
        found |= set(re.findall(r"getenv\(\s*\"(QATPY_[A-Z_]+)\"", text))
    assert found, "no environment variable found: the scan is broken"
    assert sorted(v for v in found if f"`{v}`" not in section) == []


def test_every_command_line_flag_is_documented():
    """Every subcommand and flag of python -m qatpy is in docs/reference.md's Command line section."""
    from qatpy.__main__ import _parser

    section = _section("Command line")
    _, commands = _parser()
    missing = []
    for name, sub in commands.items():
        if f"`{name}`" not in section and f"qatpy {name}" not in section:
            missing.append(name)
        for action in sub._actions:
            if action.help == argparse.SUPPRESS:
                continue
            missing += [
                f"{name} {o}"
                for o in action.option_strings
                if o.startswith("--") and o != "--help" and f"`{o}" not in section
            ]
    assert missing == []


@pytest.mark.parametrize("module", ["qatpy", "qatpy.ssl"])
def test_public_callables_have_docstrings(module):
    """Every public function and class of qatpy and qatpy.ssl has a docstring."""
    import importlib

    mod = importlib.import_module(module)
    names = getattr(mod, "__all__", [n for n in dir(mod) if not n.startswith("_")])
    missing = []
    for n in names:
        obj = getattr(mod, n)
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and not (obj.__doc__ or "").strip():
            missing.append(n)
    assert missing == []
