"""engine.batch: AML's number format and batch output layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from amlflow.engine.batch import _aml_number_decimal, aml_number

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "data/aml-banking/aml-batch-prediction-bp-sp7EvkPwfHS.csv"


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (0.1237027, "1.237027E-1"),
        (0.912984, "9.12984E-1"),
        (0.039156, "3.9156E-2"),
        (0.01237, "1.237E-2"),
        (1.0, "1E0"),
        (0.0, "0E0"),
        (-0.0, "0E0"),
        (122570.8, "1.225708E5"),
        (-15.26385, "-1.526385E1"),
        (0.12345675, "1.234568E-1"),  # a tie in the shortest decimal: half-even → 8
        (0.12345665, "1.234566E-1"),  # ... → 6
        (9.9999995, "1E1"),
        (0.99999999, "1E0"),
        (1.0000001, "1E0"),
        (1.5e-300, "1.5E-300"),
        (123456789.0, "1.234568E8"),
        (float("nan"), "NaN"),
        (float("inf"), "Infinity"),
    ],
)
def test_aml_number_examples(x: float, text: str) -> None:
    assert aml_number(x) == text


def test_aml_number_reproduces_real_aml_output_byte_for_byte() -> None:
    lines = GOLDEN.read_text().split("\n")
    assert lines[0] == "bestAnswer,score"
    scores = [line.split(",")[1] for line in lines[1:] if line]
    assert len(scores) == 443
    for s in scores:
        assert aml_number(float(s)) == s
    # every score ≥ 0.77 has bestAnswer 1 (AML's ≥ threshold rule, tutorial threshold 0.77)
    for line in lines[1:]:
        if line:
            best, s = line.split(",")
            assert best == ("1" if float(s) >= 0.77 else "0")


def test_aml_number_fast_path_matches_decimal_reference() -> None:
    import numpy as np

    rng = np.random.default_rng(1)
    values = np.concatenate([rng.random(20000), rng.standard_normal(20000) * 1e4,
                             rng.random(20000).astype(np.float32).astype(float)])
    for v in values:
        assert aml_number(float(v)) == _aml_number_decimal(float(v))
