"""Batch prediction output: AML's CSV layout and number format (aml-reference §8.3, §8.4).

The number format is the one real AML output files use (Java ``DecimalFormat("0.######E0")``, half-even
rounding of the shortest decimal representation): a one-digit mantissa, at most six fraction digits with
trailing zeros removed, ``E`` and a signed exponent without ``+`` or padding — ``1.237027E-1``, ``1E0``,
``-1.526385E1``, ``0E0``.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Decimal

__all__ = ["aml_number"]

_SIX = Decimal("1.000000")


def _aml_number_decimal(x: float) -> str:
    """The reference implementation (exact half-even rounding of ``repr(x)``)."""
    d = Decimal(repr(x))
    exp = d.adjusted()
    m = d.scaleb(-exp).quantize(_SIX, rounding=ROUND_HALF_EVEN)
    if abs(m) >= 10:
        m, exp = m / 10, exp + 1
    return f"{format(m.normalize(), 'f')}E{exp}"


def aml_number(x: float) -> str:
    """Format a score the way AML's batch output does (``0.1237027`` → ``1.237027E-1``).

    Non-finite values (never produced by a fitted model) are written as Java does: ``NaN``, ``Infinity``,
    ``-Infinity``.
    """
    x = float(x)
    if x == 0:
        return "0E0"
    if not math.isfinite(x):
        return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
    # ``%.6e`` rounds the exact binary value; Java rounds the shortest decimal. They differ only when the
    # shortest decimal is itself a tie at the 7th significant digit (then take the exact decimal path).
    t = "%.7e" % x
    if t[9 if x < 0 else 8] == "5" and float(t) == x:
        return _aml_number_decimal(x)
    m, e = ("%.6e" % x).split("e")
    if "." in m:
        m = m.rstrip("0").rstrip(".")
    return f"{m}E{int(e)}"
