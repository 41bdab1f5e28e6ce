"""AML training parameters (``CreateMLModel.Parameters``): parsing, validation, defaults and echo.

AML took a map of strings (docs/aml-reference.md §6.2). Defaults follow the API model (botocore's
documentation of ``TrainingParameters``), which is what an API caller who passes nothing got:

=============================== ========================= ==============
key                             range                     default
=============================== ========================= ==============
``sgd.maxMLModelSizeInBytes``   100,000 .. 2,147,483,648  33,554,432
``sgd.maxPasses``               1 .. 10,000               10
``sgd.shuffleType``             ``auto``, ``none``        ``none``
``sgd.l1RegularizationAmount``  0 .. MAX_DOUBLE           0 (not used)
``sgd.l2RegularizationAmount``  0 .. MAX_DOUBLE           0 (not used)
=============================== ========================= ==============

L1 and L2 are mutually exclusive (both > 0 is an error). Unknown keys are rejected.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from amlflow.engine.errors import ParameterError

__all__ = ["PARAMETER_KEYS", "TrainingParameters", "parse_parameters"]

MIN_MODEL_SIZE = 100_000
MAX_MODEL_SIZE = 2_147_483_648
DEFAULT_MODEL_SIZE = 33_554_432
MAX_PASSES = 10_000
DEFAULT_PASSES = 10
SHUFFLE_TYPES = ("auto", "none")

PARAMETER_KEYS = (
    "sgd.maxMLModelSizeInBytes",
    "sgd.maxPasses",
    "sgd.shuffleType",
    "sgd.l1RegularizationAmount",
    "sgd.l2RegularizationAmount",
)


@dataclass(frozen=True)
class TrainingParameters:
    """The effective ``sgd.*`` parameters of one model (validated)."""

    max_model_size: int = DEFAULT_MODEL_SIZE
    max_passes: int = DEFAULT_PASSES
    shuffle_type: str = "none"
    l1: float = 0.0
    l2: float = 0.0
    #: the caller's own spelling of each key it set (echoed back verbatim, like AML)
    given: tuple[tuple[str, str], ...] = ()

    def echo(self) -> dict[str, str]:
        """AML's ``TrainingParameters`` echo: every effective key as a string, plus ``"algorithm": "sgd"``."""
        out = {
            "algorithm": "sgd",
            "sgd.maxMLModelSizeInBytes": str(self.max_model_size),
            "sgd.maxPasses": str(self.max_passes),
            "sgd.shuffleType": self.shuffle_type,
            "sgd.l1RegularizationAmount": _java_double(self.l1),
            "sgd.l2RegularizationAmount": _java_double(self.l2),
        }
        out.update(dict(self.given))
        return out

    def to_json(self) -> dict[str, object]:
        """A JSON-serialisable form (saved with the model)."""
        return {
            "max_model_size": self.max_model_size,
            "max_passes": self.max_passes,
            "shuffle_type": self.shuffle_type,
            "l1": self.l1,
            "l2": self.l2,
            "given": [list(kv) for kv in self.given],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> TrainingParameters:
        given = data.get("given", [])
        assert isinstance(given, list)
        return cls(
            max_model_size=int(data["max_model_size"]),  # type: ignore[call-overload]
            max_passes=int(data["max_passes"]),  # type: ignore[call-overload]
            shuffle_type=str(data["shuffle_type"]),
            l1=float(data["l1"]),  # type: ignore[arg-type]
            l2=float(data["l2"]),  # type: ignore[arg-type]
            given=tuple((str(k), str(v)) for k, v in given),
        )


def _java_double(x: float) -> str:
    """``0.0``, ``1.0E-6`` style is Java's; AML echoed what it was given, so we echo the shortest repr."""
    return repr(float(x))


def _parse_int(key: str, raw: str, lo: int, hi: int) -> int:
    text = raw.strip()
    try:
        value = int(text)
    except ValueError:
        try:
            as_float = float(text)
        except ValueError:
            raise ParameterError(
                f"{key}: {raw!r} is not an integer (expected {lo:,}..{hi:,})", field=key
            ) from None
        if not math.isfinite(as_float) or as_float != int(as_float):
            raise ParameterError(
                f"{key}: {raw!r} is not an integer (expected {lo:,}..{hi:,})", field=key
            ) from None
        value = int(as_float)
    if not lo <= value <= hi:
        raise ParameterError(f"{key}: {raw!r} is out of range (expected {lo:,}..{hi:,})", field=key)
    return value


def _parse_amount(key: str, raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ParameterError(
            f"{key}: {raw!r} is not a number (expected 0..{sys.float_info.max!r})", field=key
        ) from None
    if not math.isfinite(value) or value < 0:
        raise ParameterError(
            f"{key}: {raw!r} is out of range (expected 0..{sys.float_info.max!r})", field=key
        )
    return value


def parse_parameters(params: Mapping[str, str] | None) -> TrainingParameters:
    """Validate AML's ``Parameters`` map and fill in the defaults.

    Raises:
        ParameterError: an unknown key, a value that is not a string, not a number, out of range, or both
            L1 and L2 regularisation set (the message names the key and what is allowed).
    """
    params = dict(params or {})
    for key, value in params.items():
        if key not in PARAMETER_KEYS:
            raise ParameterError(
                f"Parameters: unknown key {key!r} (allowed: {', '.join(PARAMETER_KEYS)})", field=str(key)
            )
        if not isinstance(value, str):
            raise ParameterError(f"{key}: expected a string value, got {type(value).__name__}", field=key)
    kwargs: dict[str, object] = {}
    if "sgd.maxMLModelSizeInBytes" in params:
        kwargs["max_model_size"] = _parse_int(
            "sgd.maxMLModelSizeInBytes", params["sgd.maxMLModelSizeInBytes"], MIN_MODEL_SIZE, MAX_MODEL_SIZE
        )
    if "sgd.maxPasses" in params:
        kwargs["max_passes"] = _parse_int("sgd.maxPasses", params["sgd.maxPasses"], 1, MAX_PASSES)
    if "sgd.shuffleType" in params:
        shuffle = params["sgd.shuffleType"].strip().lower()
        if shuffle not in SHUFFLE_TYPES:
            raise ParameterError(
                f"sgd.shuffleType: {params['sgd.shuffleType']!r} is not one of {', '.join(SHUFFLE_TYPES)}",
                field="sgd.shuffleType",
            )
        kwargs["shuffle_type"] = shuffle
    if "sgd.l1RegularizationAmount" in params:
        kwargs["l1"] = _parse_amount("sgd.l1RegularizationAmount", params["sgd.l1RegularizationAmount"])
    if "sgd.l2RegularizationAmount" in params:
        kwargs["l2"] = _parse_amount("sgd.l2RegularizationAmount", params["sgd.l2RegularizationAmount"])
    if float(kwargs.get("l1", 0.0)) > 0 and float(kwargs.get("l2", 0.0)) > 0:  # type: ignore[arg-type]
        raise ParameterError(
            "sgd.l1RegularizationAmount, sgd.l2RegularizationAmount: L1 and L2 regularization are mutually "
            "exclusive; set at most one of them above 0",
            field="sgd.l1RegularizationAmount",
        )
    given = tuple((k, params[k].strip()) for k in PARAMETER_KEYS if k in params)
    return TrainingParameters(given=given, **kwargs)  # type: ignore[arg-type]
