"""The one NIST curve table (tests/abi_facts.py), which the shim's and the simulator's constants are
checked against, describes cryptography's P-256 / P-384 / P-521."""

from __future__ import annotations

import pytest
from abi_facts import NIST_CURVES
from cryptography.hazmat.primitives.asymmetric import ec


@pytest.mark.parametrize("name", sorted(NIST_CURVES))
def test_nist_curve_table_is_cryptographys_curve(name):
    """NIST_CURVES matches cryptography: G on y^2 = x^3 + ax + b mod p, 1*G = G, (n-1)*G = -G, n*G refused, sizes."""
    c = NIST_CURVES[name]
    curve = getattr(ec, c["sec2"].upper())()
    p, a, b, n, x, y = (c[k] for k in ("p", "a", "b", "n", "xg", "yg"))
    assert (y * y - (x * x * x + a * x + b)) % p == 0
    assert a == p - 3
    g = ec.derive_private_key(1, curve).public_key().public_numbers()
    assert (g.x, g.y) == (x, y)
    minus_g = ec.derive_private_key(n - 1, curve).public_key().public_numbers()
    assert (minus_g.x, minus_g.y) == (x, p - y)
    with pytest.raises(ValueError):
        ec.derive_private_key(n, curve)
    assert n.bit_length() == c["bits"] == curve.key_size
    assert c["len"] == (p.bit_length() + 7) // 8
