"""engine.numfmt: the vectorised number format writes exactly what the scalar ``aml_number`` writes."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from amlflow.engine.numfmt import aml_number, format_numbers, format_rows


def _texts(values: np.ndarray) -> list[str]:
    chars, keep = format_numbers(values)
    return [bytes(c[k]).decode("ascii") for c, k in zip(chars, keep, strict=True)]


EDGES = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.1237027,
    0.12345675,  # a tie in the shortest decimal: half-even → 8
    0.12345665,
    9.9999995,
    9.99999949999,
    0.99999999,
    0.999999949,
    1.0000001,
    1e-300,
    1.5e-300,
    9.99e-301,  # below the vectorised range: the scalar path
    5e-324,
    1e300,
    1.7976931348623157e308,
    -15.26385,
    123456789.0,
    1e22,
    1e-5,
    1e-10,
    1e100,
    float("nan"),
    float("inf"),
    float("-inf"),
]


def test_edges_match_the_scalar_format() -> None:
    values = np.array(EDGES)
    assert _texts(values) == [aml_number(x) for x in EDGES]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=50))
def test_any_floats_match_the_scalar_format(xs: list[float]) -> None:
    assert _texts(np.array(xs, dtype=np.float64)) == [aml_number(x) for x in xs]


def test_many_scores_and_near_ties_match() -> None:
    rng = np.random.default_rng(7)
    probs = rng.random(20_000)
    logits = rng.normal(0, 30, 20_000)
    tiny = 10.0 ** rng.uniform(-300, 300, 20_000)
    # decimal ties at the 7th significant digit and their binary neighbours
    ties = np.array(
        [
            float(f"{d}.{m:06d}5e{e}")
            for d, m, e in zip(
                rng.integers(1, 10, 5_000),
                rng.integers(0, 10**6, 5_000),
                rng.integers(-20, 20, 5_000),
                strict=True,
            )
        ]
    )
    near = np.concatenate([ties, np.nextafter(ties, np.inf), np.nextafter(ties, -np.inf)])
    values = np.concatenate([probs, -probs, logits, tiny, near])
    assert _texts(values) == [aml_number(float(x)) for x in values]


def test_rows_are_comma_joined_lines() -> None:
    chars, keep = format_numbers(np.array([0.5, 1.0, 0.25, 0.0]))
    chars, keep = chars.reshape(2, 2, -1), keep.reshape(2, 2, -1)
    blob = format_rows([(chars[:, 0], keep[:, 0]), (chars[:, 1], keep[:, 1])])
    assert blob == b"5E-1,1E0\n2.5E-1,0E0\n"
    assert format_rows([]) == b""
