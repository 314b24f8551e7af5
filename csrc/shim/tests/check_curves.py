"""Compare the curve constants compiled into the shim with the facts.

Runs the test_encode binary (which prints every constant) and checks each
against shared/reference/qatlib-abi.json -> nist_curves.
usage: python check_curves.py path/to/test_encode path/to/qatlib-abi.json
"""
import json
import subprocess
import sys

exe, facts = sys.argv[1], sys.argv[2]
curves = json.load(open(facts))["nist_curves"]["curves"]
names = {1: "P-256", 2: "P-384", 3: "P-521"}
fields = {"q": "q_p", "a": "a", "b": "b", "n": "n", "xg": "xg", "yg": "yg"}
bad = 0
seen = 0
for line in subprocess.run([exe], capture_output=True, text=True, check=True).stdout.splitlines():
    if not line.startswith("curve "):
        continue
    parts = line.split()
    want = curves[names[int(parts[1])]]
    for kv in parts[2:]:
        k, v = kv.split("=")
        seen += 1
        if v != want[fields[k]]:
            bad += 1
            print(f"MISMATCH {names[int(parts[1])]} {k}")
print(f"check_curves: {seen} constants compared, {bad} mismatches")
sys.exit(1 if bad or seen != 18 else 0)
