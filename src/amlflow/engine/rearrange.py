"""AML ``DataRearrangement`` (docs/aml-reference.md §4): which rows of the input a datasource keeps.

Rows are located by **bytes**, as AML did: a row belongs to the side where its first byte lies.

* ``sequential``: a row whose first byte is at offset ``o`` of the whole input (all files concatenated in
  key order, header lines included, ``total`` = the input's size in bytes) is in range when
  ``percentBegin <= 100 * o / total < percentEnd``. On AML's ``banking.csv`` a 0–70 split gives exactly
  AML's 28,833 / 12,355 rows (counting rows instead would give 28,832 / 12,356).
* ``random``: ``u = 100 * H / 2**64`` where ``H`` is the first 8 bytes (big-endian) of
  ``SHA-256(seed + "\\0" + file_key + "\\0" + str(offset_in_file))``; in range when
  ``percentBegin <= u < percentEnd``. Deterministic, input order kept; not AWS's (undocumented) generator.
* ``complement``: the rows the range would *not* select, so a range and its complement partition the data.

Example:
    >>> r = parse_rearrangement('{"splitting": {"percentBegin": 0, "percentEnd": 50}}')
    >>> r.selects(np.array([0, 40, 50, 99]), 100).tolist()
    [True, True, False, False]
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from amlflow.engine.errors import RearrangementError

__all__ = ["Rearrangement", "parse_rearrangement"]

_SPLITTING_KEYS = {"percentBegin", "percentEnd", "complement", "strategy", "strategyParams", "randomSeed"}


@dataclass(frozen=True)
class Rearrangement:
    """A parsed DataRearrangement; the default selects every row."""

    percent_begin: int = 0
    percent_end: int = 100
    complement: bool = False
    strategy: str = "sequential"
    seed: str = ""

    @property
    def is_everything(self) -> bool:
        """True when every row is selected whatever the data."""
        full = self.percent_begin == 0 and self.percent_end == 100
        empty = self.percent_begin == self.percent_end
        return (full and not self.complement) or (empty and self.complement)

    def to_dict(self) -> dict[str, Any]:
        """The canonical JSON form (what AML echoes)."""
        splitting: dict[str, Any] = {
            "percentBegin": self.percent_begin,
            "percentEnd": self.percent_end,
            "complement": self.complement,
            "strategy": self.strategy,
        }
        if self.strategy == "random":
            splitting["strategyParams"] = {"randomSeed": self.seed}
        return {"splitting": splitting}

    def selects(
        self,
        byte_offsets: np.ndarray,
        total_bytes: int,
        file_keys: str | np.ndarray | list[str] = "",
        file_start: int = 0,
    ) -> np.ndarray:
        """Boolean mask of the rows kept.

        Args:
            byte_offsets: offset of each row's first byte **within its file** (int array).
            total_bytes: size of the whole input (all files, headers included).
            file_keys: the file's key (one string for all rows, or one per row) — used by ``random``.
            file_start: offset of the file's first byte in the whole input — used by ``sequential``.
        """
        offsets = np.asarray(byte_offsets, dtype=np.int64)
        if self.is_everything:
            return np.ones(len(offsets), dtype=bool)
        if self.strategy == "sequential":
            pos = offsets + np.int64(file_start)
            # percentBegin <= 100*pos/total < percentEnd, in exact integer arithmetic
            scaled = pos.astype(object) * 100 if total_bytes > (1 << 55) else pos * 100
            inside = (scaled >= self.percent_begin * total_bytes) & (scaled < self.percent_end * total_bytes)
            inside = np.asarray(inside, dtype=bool)
        else:
            # percentBegin <= 100*H/2**64 < percentEnd, exactly: H against integer bounds
            h = self.hashes(offsets, file_keys)
            inside = _at_least(h, self.percent_begin) & ~_at_least(h, self.percent_end)
        return ~inside if self.complement else inside

    def random_numbers(self, byte_offsets: np.ndarray, file_keys: str | np.ndarray | list[str]) -> np.ndarray:
        """The pseudo-random number ``100 * H / 2**64`` in [0, 100] of each row (float64, for display;
        :meth:`selects` compares ``H`` exactly)."""
        return self.hashes(byte_offsets, file_keys).astype(np.float64) * (100.0 / 2.0**64)

    def hashes(self, byte_offsets: np.ndarray, file_keys: str | np.ndarray | list[str]) -> np.ndarray:
        """``H`` of each row: the first 8 bytes (big-endian) of SHA-256(seed, file key, offset), uint64."""
        offsets = np.asarray(byte_offsets, dtype=np.int64)
        out = np.empty(len(offsets), dtype=np.uint64)
        if isinstance(file_keys, str):
            base = hashlib.sha256(f"{self.seed}\0{file_keys}\0".encode())
            for i, off in enumerate(offsets.tolist()):
                h = base.copy()
                h.update(str(off).encode())
                out[i] = int.from_bytes(h.digest()[:8], "big")
        else:
            keys = list(file_keys)
            if len(keys) != len(offsets):
                raise ValueError("file_keys must be one key or one per row")
            for i, (key, off) in enumerate(zip(keys, offsets.tolist(), strict=True)):
                digest = hashlib.sha256(f"{self.seed}\0{key}\0{off}".encode()).digest()
                out[i] = int.from_bytes(digest[:8], "big")
        return out


def _at_least(h: np.ndarray, percent: int) -> np.ndarray:
    """``100 * h / 2**64 >= percent`` for uint64 ``h``, in exact integer arithmetic."""
    bound = -(-percent * 2**64 // 100)  # ceil(percent * 2**64 / 100); h is an integer
    if bound >= 2**64:
        return np.zeros(len(h), dtype=bool)
    return np.asarray(h >= np.uint64(bound), dtype=bool)


def _percent(splitting: dict[str, Any], key: str, default: int) -> int:
    value = splitting.get(key, default)
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise RearrangementError(
                f"splitting.{key}: expected an integer 0..100, got {value!r}", field=f"splitting.{key}"
            ) from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RearrangementError(
            f"splitting.{key}: expected an integer 0..100, got {value!r}", field=f"splitting.{key}"
        )
    if not 0 <= value <= 100:
        raise RearrangementError(f"splitting.{key}: {value} is outside 0..100", field=f"splitting.{key}")
    return value


def parse_rearrangement(text: str | bytes | dict[str, Any] | None) -> Rearrangement:
    """Parse a DataRearrangement JSON string; ``None`` or empty means the whole dataset.

    Accepts ``complement`` as a JSON boolean or the strings ``"true"``/``"false"``, and the random seed
    either in ``splitting.strategyParams.randomSeed`` (Developer Guide) or ``splitting.randomSeed``
    (API reference).

    Raises:
        RearrangementError: naming the offending key.
    """
    if text is None or (isinstance(text, str | bytes) and not text.strip()):
        return Rearrangement()
    if isinstance(text, dict):
        doc: Any = text
    else:
        try:
            doc = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RearrangementError(
                f"DataRearrangement: not valid JSON ({exc})", field="DataRearrangement"
            ) from None
    if not isinstance(doc, dict):
        raise RearrangementError("DataRearrangement: expected a JSON object", field="DataRearrangement")
    if not doc:
        return Rearrangement()
    unknown = sorted(set(doc) - {"splitting"})
    if unknown:
        raise RearrangementError(
            f"DataRearrangement: unknown key {unknown[0]!r} (only 'splitting')", field=unknown[0]
        )
    splitting = doc["splitting"]
    if not isinstance(splitting, dict):
        raise RearrangementError("splitting: expected an object", field="splitting")
    unknown = sorted(set(splitting) - _SPLITTING_KEYS)
    if unknown:
        raise RearrangementError(
            f"splitting.{unknown[0]}: unknown key (expected {', '.join(sorted(_SPLITTING_KEYS))})",
            field=f"splitting.{unknown[0]}",
        )
    begin = _percent(splitting, "percentBegin", 0)
    end = _percent(splitting, "percentEnd", 100)
    if begin > end:
        raise RearrangementError(
            f"splitting.percentBegin: {begin} is greater than percentEnd {end}",
            field="splitting.percentBegin",
        )

    complement = splitting.get("complement", False)
    if isinstance(complement, str) and complement.strip().lower() in ("true", "false"):
        complement = complement.strip().lower() == "true"
    if not isinstance(complement, bool):
        raise RearrangementError(
            f"splitting.complement: expected true or false, got {complement!r}", field="splitting.complement"
        )

    strategy = splitting.get("strategy", "sequential")
    if not isinstance(strategy, str) or strategy.strip().lower() not in ("sequential", "random"):
        raise RearrangementError(
            f"splitting.strategy: {strategy!r} is not one of sequential, random", field="splitting.strategy"
        )
    strategy = strategy.strip().lower()

    params = splitting.get("strategyParams", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RearrangementError(
            "splitting.strategyParams: expected an object", field="splitting.strategyParams"
        )
    unknown = sorted(set(params) - {"randomSeed"})
    if unknown:
        raise RearrangementError(
            f"splitting.strategyParams.{unknown[0]}: unknown key (only randomSeed)",
            field=f"splitting.strategyParams.{unknown[0]}",
        )
    seed: Any = params.get("randomSeed", splitting.get("randomSeed", ""))
    where = "splitting.strategyParams.randomSeed" if "randomSeed" in params else "splitting.randomSeed"
    both = "randomSeed" in params and "randomSeed" in splitting
    if both and splitting["randomSeed"] != params["randomSeed"]:
        raise RearrangementError("splitting.randomSeed: given twice with different values", field=where)
    if seed is None:
        seed = ""
    if isinstance(seed, bool) or not isinstance(seed, str | int | float):
        raise RearrangementError(f"{where}: expected a string, got {seed!r}", field=where)
    return Rearrangement(begin, end, complement, strategy, str(seed))
