"""Compare the NIST curve constants compiled into the shim with the one table.

Runs the test_encode binary, which prints every constant of csrc/shim/encode.c
(and each curve's bit length), and checks each against NIST_CURVES in
tests/abi_facts.py, the table the simulator's constants are checked against too.
usage: python check_curves.py path/to/test_encode
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

FACTS = Path(__file__).resolve().parents[3] / "tests" / "abi_facts.py"
spec = importlib.util.spec_from_file_location("abi_facts", FACTS)
assert spec is not None and spec.loader is not None
abi_facts = importlib.util.module_from_spec(spec)
spec.loader.exec_module(abi_facts)
curves = abi_facts.NIST_CURVES

exe = sys.argv[1]
names = {1: "P-256", 2: "P-384", 3: "P-521"}
fields = {"q": "p", "a": "a", "b": "b", "n": "n", "xg": "xg", "yg": "yg"}
bad = 0
seen = 0
for line in subprocess.run([exe], capture_output=True, text=True, check=True).stdout.splitlines():
    if not line.startswith("curve "):
        continue
    parts = line.split()
    name = names[int(parts[1])]
    want = curves[name]
    for kv in parts[2:]:
        k, v = kv.split("=")
        seen += 1
        if k == "bits":
            ok = int(v) == want["bits"]
        else:
            ok = len(v) == 2 * want["len"] and int(v, 16) == want[fields[k]]
        if not ok:
            bad += 1
            print(f"MISMATCH {name} {k}")
print(f"check_curves: {seen} constants compared with tests/abi_facts.py, {bad} mismatches")
sys.exit(1 if bad or seen != 7 * len(curves) else 0)
