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


def test_shim_constants_match_python():
    """The Python mirror of the shim's codes (qatpy._qat) equals csrc/shim/qatpy_shim.h."""
    from qatpy import _qat

    lib = _binding.native().lib
    assert _qat.POLL_MODE == {
        "timer": lib.QATPY_POLL_TIMER,
        "busy": lib.QATPY_POLL_BUSY,
        "event": lib.QATPY_POLL_EVENT,
        "manual": lib.QATPY_POLL_MANUAL,
    }
    pairs = {
        "ERR_LIBRARY": "QATPY_ERR_LIBRARY",
        "ERR_NO_DEVICE": "QATPY_ERR_NO_DEVICE",
        "ERR_START": "QATPY_ERR_START",
        "ERR_NO_INSTANCE": "QATPY_ERR_NO_INSTANCE",
        "ERR_CAPABILITY": "QATPY_ERR_CAPABILITY",
        "ERR_INSTANCE": "QATPY_ERR_INSTANCE",
        "ST_OK": "QATPY_ST_OK",
        "ST_DEVICE_FAIL": "QATPY_ST_DEVICE_FAIL",
        "ST_SUBMIT_FAIL": "QATPY_ST_SUBMIT_FAIL",
        "ST_CLOSED": "QATPY_ST_CLOSED",
        "ST_VERIFY_FAIL": "QATPY_ST_VERIFY_FAIL",
        "ST_TIMEOUT": "QATPY_ST_TIMEOUT",
        "SUBMIT_OK": "QATPY_SUBMIT_OK",
        "SUBMIT_FULL": "QATPY_SUBMIT_FULL",
        "SUBMIT_CLOSED": "QATPY_SUBMIT_CLOSED",
        "SUBMIT_BADARG": "QATPY_SUBMIT_BADARG",
        "SUBMIT_BADKEY": "QATPY_SUBMIT_BADKEY",
        "RSA_RAW": "QATPY_RSA_RAW",
        "RSA_PKCS1": "QATPY_RSA_PKCS1",
    }
    assert {p: getattr(_qat, p) for p in pairs} == {p: getattr(lib, c) for p, c in pairs.items()}
    assert _qat.CURVES == {
        "secp256r1": lib.QATPY_CURVE_P256,
        "secp384r1": lib.QATPY_CURVE_P384,
        "secp521r1": lib.QATPY_CURVE_P521,
    }
    from qatpy import _ops

    assert {n: v[0] for n, v in _ops.HASHES.items()} == {
        "sha224": lib.QATPY_HASH_SHA224,
        "sha256": lib.QATPY_HASH_SHA256,
        "sha384": lib.QATPY_HASH_SHA384,
        "sha512": lib.QATPY_HASH_SHA512,
    }
