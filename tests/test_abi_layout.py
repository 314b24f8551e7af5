"""Our declarations of qatlib's ABI match the measured facts: every size, offset and constant."""

from __future__ import annotations

from abi_facts import CONSTANTS, STRUCTS, TYPEDEF_SIZES

from qatpy import _binding


def _ffi():
    return _binding.native().ffi


def test_struct_layouts_match_facts():
    """sizeof and offsetof of every struct and field we declare equal qatlib's; zero mismatches."""
    ffi = _ffi()
    mismatches = []
    checked = 0
    for name, fact in STRUCTS.items():
        declared = [f for f, _ in ffi.typeof(name).fields]
        if declared != list(fact["fields"]):
            mismatches.append(f"{name}: fields {declared} != {list(fact['fields'])}")
        if ffi.sizeof(name) != fact["size"]:
            mismatches.append(f"sizeof({name}) {ffi.sizeof(name)} != {fact['size']}")
        for field, off in fact["fields"].items():
            checked += 1
            if field in declared and ffi.offsetof(name, field) != off:
                mismatches.append(f"offsetof({name}, {field}) {ffi.offsetof(name, field)} != {off}")
    assert mismatches == []
    assert checked == sum(len(f["fields"]) for f in STRUCTS.values())


def test_typedef_sizes_match_facts():
    """Every base typedef and enum we declare has qatlib's size."""
    ffi = _ffi()
    checked = 0
    for name, size in TYPEDEF_SIZES.items():
        try:
            actual = ffi.sizeof(name)
        except ffi.error:
            continue  # a qatlib type qatpy does not use
        checked += 1
        assert actual == size, name
    assert checked >= 14


def test_constants_match_facts():
    """Every status, enum value and size constant we declare equals qatlib's value."""
    lib = _binding.native().lib
    missing = [n for n in CONSTANTS if not hasattr(lib, n)]
    assert missing == []
    wrong = {n: (getattr(lib, n), v) for n, v in CONSTANTS.items() if getattr(lib, n) != v}
    assert wrong == {}


def test_status_enums_cover_the_shim_codes():
    """qatpy._status's enums hold every QATPY_*/CPA_STATUS_* code family the shim declares, each with its compiled value."""
    from qatpy import _status

    lib = _binding.native().lib
    families = {
        "QATPY_ERR_": _status.OpenError,
        "QATPY_POLL_": _status.PollMode,
        "QATPY_ST_": _status.Status,
        "QATPY_SUBMIT_": _status.Submit,
        "QATPY_RSA_": _status.RsaEncoding,
        "QATPY_HASH_": _status.HashId,
        "QATPY_CURVE_": _status.Curve,
    }
    for prefix, enum_cls in families.items():
        declared = {n[len(prefix) :]: getattr(lib, n) for n in dir(lib) if n.startswith(prefix)}
        assert {m.name: int(m) for m in enum_cls} == declared, prefix
    cpa = {n[len("CPA_STATUS_") :]: getattr(lib, n) for n in dir(lib) if n.startswith("CPA_STATUS_")}
    cpa.pop("MAX_STR_LENGTH_IN_BYTES")
    assert {m.name: int(m) for m in _status.CpaStatus} == cpa
    from qatpy import _ops

    assert set(_status.HASH_IDS) == set(_ops.DIGEST_SIZES)
