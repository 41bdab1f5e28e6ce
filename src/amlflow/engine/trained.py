"""A trained model (docs/aml-reference.md §6, §9): :class:`TrainedModel` — scores for tables and realtime
records, saved as ``model.json`` + ``model.npz`` (arrays only, loaded with ``allow_pickle=False``) and read
back by :func:`load_model`. Training is :mod:`amlflow.engine.model`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from amlflow.engine.errors import DataError
from amlflow.engine.limits import (
    MAX_RECORD_FEATURES,
    check_memory,
    check_record,
)
from amlflow.engine.params import TrainingParameters
from amlflow.engine.recipe import FeatureBuilder
from amlflow.engine.schema import Schema, binary_view, numeric_view, parse_schema
from amlflow.engine.table import Table

__all__ = [
    "BYTES_PER_NONZERO",
    "BYTES_PER_PARAMETER",
    "BYTES_PER_RECORD_FEATURE",
    "BYTES_PER_TOKEN_FEATURE",
    "BYTES_PER_WEIGHT",
    "MAX_CLASSES",
    "MODEL_TYPES",
    "Predictions",
    "TrainedModel",
    "load_model",
    "target_view",
]

MODEL_TYPES = ("BINARY", "MULTICLASS", "REGRESSION")
MAX_CLASSES = 100
BYTES_PER_PARAMETER = 96
# the memory estimate (estimate_training_bytes): per non-zero, the matrix's float32 value and int32 column
# (8), a float64 copy a solver may make (12) and the batch being copied in (4); per token feature, its
# string, index entry and place in the sorted vocabulary; per weight (feature × class), float64 coefficients,
# SAGA's gradient sum and two copies; per realtime feature, its token and arrays
BYTES_PER_NONZERO = 24
BYTES_PER_TOKEN_FEATURE = 200
BYTES_PER_WEIGHT = 32
BYTES_PER_RECORD_FEATURE = 200
FORMAT = "amlflow-model"
VERSION = 1


# --------------------------------------------------------------------------------------------- targets


def target_view(model_type: str, dictionary: np.ndarray) -> np.ndarray:
    """The target value of each dictionary entry for ``model_type``: BINARY → 0.0/1.0, REGRESSION → float,
    MULTICLASS → the stripped string; missing/invalid → nan (BINARY, REGRESSION) or None (MULTICLASS)."""
    if model_type == "BINARY":
        return binary_view(dictionary)
    if model_type == "REGRESSION":
        return numeric_view(dictionary)
    out = np.empty(len(dictionary), dtype=object)
    out[:] = [(s if (s := str(v).strip()) else None) for v in dictionary]
    return out


def _codes(table: Table, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
    return np.asarray(table.codes(name, start, stop), dtype=np.int64)


# ------------------------------------------------------------------------------------------ prediction


@dataclass
class Predictions:
    """Scores of a range of table rows.

    ``scores``: BINARY → P(target = 1) (n,); MULTICLASS → class probabilities (n, K), columns in
    ``classes`` order, rows summing to 1; REGRESSION → predicted values (n,). ``valid`` is true for every
    row that could be scored (all table rows: missing values are absent features).
    """

    model_type: str
    classes: list[str]
    scores: np.ndarray
    valid: np.ndarray

    def labels(self, threshold: float = 0.5) -> np.ndarray | None:
        """Predicted labels: BINARY ``"1"`` if score ≥ threshold else ``"0"``; MULTICLASS the argmax class;
        REGRESSION None."""
        if self.model_type == "BINARY":
            return np.where(self.scores >= threshold, "1", "0").astype(object)
        if self.model_type == "MULTICLASS":
            labels: np.ndarray = np.asarray(self.classes, dtype=object)[np.argmax(self.scores, axis=1)]
            return labels
        return None


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z, dtype=np.float64)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


@dataclass
class TrainedModel:
    """A fitted model: feature builder + weights (``coef`` features × K, ``intercept`` K)."""

    model_type: str
    schema: Schema
    builder: FeatureBuilder
    coef: np.ndarray
    intercept: np.ndarray
    classes: list[str]
    params: TrainingParameters
    training_info: dict[str, Any] = field(default_factory=dict)

    # ----------------------------------------------------------------------------------------- size

    @property
    def n_parameters(self) -> int:
        """Parameters counted for the size: K per kept feature plus K intercepts."""
        kept = int(np.count_nonzero(np.any(self.coef != 0, axis=1)))
        return int(self.coef.shape[1]) * (kept + 1)

    @property
    def size_in_bytes(self) -> int:
        """AML-style model size: 96 bytes per parameter (docs/aml-reference.md §6.3)."""
        return BYTES_PER_PARAMETER * self.n_parameters

    # -------------------------------------------------------------------------------------- scoring

    def _scores(self, z: np.ndarray) -> np.ndarray:
        if self.model_type == "BINARY":
            return _sigmoid(z[:, 0])
        if self.model_type == "MULTICLASS":
            return _softmax(z)
        regression: np.ndarray = z[:, 0]
        return regression

    def _decision(self, X: sp.csr_matrix) -> np.ndarray:
        z: np.ndarray = np.asarray(X @ self.coef) + self.intercept
        return z

    def iter_predictions(
        self,
        table: Table,
        schema: Schema | None = None,
        *,
        start: int = 0,
        stop: int | None = None,
        batch_rows: int = 50_000,
    ) -> Iterator[tuple[int, int, Predictions]]:
        """Score rows ``[start, stop)`` of ``table`` in batches: yields ``(start, stop, Predictions)``.
        The table is read with the training schema's types (``schema``, the table's own, is not needed
        for scoring)."""
        stop = table.n_rows if stop is None else stop
        enc = self.builder.encoder(table)
        for a in range(start, stop, batch_rows):
            b = min(a + batch_rows, stop)
            X = self.builder.transform(table, a, b, _dicts=enc)
            yield (
                a,
                b,
                Predictions(
                    self.model_type, self.classes, self._scores(self._decision(X)), np.ones(b - a, dtype=bool)
                ),
            )

    def predict_table(
        self, table: Table, schema: Schema | None = None, *, start: int = 0, stop: int | None = None
    ) -> Predictions:
        """Scores of rows ``[start, stop)`` of ``table`` (see :class:`Predictions`)."""
        parts = [p for _, _, p in self.iter_predictions(table, schema, start=start, stop=stop)]
        if not parts:
            k = len(self.classes) if self.model_type == "MULTICLASS" else 0
            shape: tuple[int, ...] = (0, k) if k else (0,)
            return Predictions(self.model_type, self.classes, np.zeros(shape), np.zeros(0, dtype=bool))
        return Predictions(
            self.model_type,
            self.classes,
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.valid for p in parts]),
        )

    def predict_record(
        self, record: Mapping[str, str], threshold: float = 0.5, *, memory_budget: int | None = None
    ) -> dict[str, Any]:
        """AML's ``Prediction`` for one realtime record (docs/aml-reference.md §9): ``predictedLabel`` +
        ``predictedScores`` (BINARY: one entry, the predicted label → P(1); MULTICLASS: every class),
        ``predictedValue`` (REGRESSION), ``details``.

        Raises:
            DataError: (field ``Record``) the record is over 100 KB, would make more than
                :data:`~amlflow.engine.limits.MAX_RECORD_FEATURES` features, or more than
                ``memory_budget`` bytes (default: the job budget) of them.
        """
        check_record(record)
        n = self.builder.record_bound(record)
        if n > MAX_RECORD_FEATURES:
            raise DataError(
                f"Record: the recipe would make up to {n:,} features of this record, over the limit of "
                f"{MAX_RECORD_FEATURES:,} per record (shorten its text values)",
                field="Record",
            )
        check_memory(
            n * BYTES_PER_RECORD_FEATURE,
            memory_budget,
            "Record: scoring this record",
            f"it makes up to {n:,} features",
            error=DataError,
            field="Record",
        )
        cols, vals = self.builder.encode_record(record)
        z = vals.astype(np.float64) @ self.coef[cols] + self.intercept
        details = {"PredictiveModelType": self.model_type, "Algorithm": "SGD"}
        if self.model_type == "BINARY":
            zz = float(z[0])
            p = 1.0 / (1.0 + math.exp(-zz)) if zz >= 0 else math.exp(zz) / (1.0 + math.exp(zz))
            label = "1" if p >= threshold else "0"
            return {"predictedLabel": label, "predictedScores": {label: p}, "details": details}
        if self.model_type == "MULTICLASS":
            probs = _softmax(z[None, :].copy())[0]
            best = int(np.argmax(probs))
            return {
                "predictedLabel": self.classes[best],
                "predictedScores": {c: float(p) for c, p in zip(self.classes, probs, strict=True)},
                "details": details,
            }
        return {"predictedValue": float(z[0]), "details": details}

    # ------------------------------------------------------------------------------------------ I/O

    def save(self, directory: Path | str) -> None:
        """Write ``model.json`` and ``model.npz`` into ``directory`` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "model_type": self.model_type,
            "classes": self.classes,
            "schema": self.schema.to_dict(),
            "params": self.params.to_json(),
            "builder": self.builder.to_json(),
            "training_info": self.training_info,
            "size_in_bytes": self.size_in_bytes,
        }
        tmp_npz = directory / "model.npz.tmp"
        with open(tmp_npz, "wb") as fh:
            np.savez(fh, coef=self.coef, intercept=self.intercept)
        tmp_json = directory / "model.json.tmp"
        with open(tmp_json, "w", encoding="utf-8") as fh:
            json.dump(meta, fh, ensure_ascii=False)
        tmp_npz.replace(directory / "model.npz")
        tmp_json.replace(directory / "model.json")


def load_model(directory: Path | str) -> TrainedModel:
    """Load a model written by :meth:`TrainedModel.save` (plain JSON + arrays; never unpickles)."""
    directory = Path(directory)
    with open(directory / "model.json", encoding="utf-8") as fh:
        meta = json.load(fh)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{directory}: not an {FORMAT} v{VERSION}")
    schema = parse_schema(meta["schema"])
    with np.load(directory / "model.npz", allow_pickle=False) as z:
        coef, intercept = np.array(z["coef"]), np.array(z["intercept"])
    return TrainedModel(
        model_type=meta["model_type"],
        schema=schema,
        builder=FeatureBuilder.from_json(meta["builder"], schema),
        coef=coef,
        intercept=intercept,
        classes=[str(c) for c in meta["classes"]],
        params=TrainingParameters.from_json(meta["params"]),
        training_info=meta.get("training_info", {}),
    )
