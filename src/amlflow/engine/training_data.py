"""The training table as the learners see it (docs/scale.md): the target read per dictionary entry and per
row (``_Target``: nothing of the table's size but the valid-row mask), the row weights per dictionary entry,
the constant-1 intercept column both modes append to the features (``_with_bias``), and, for the streaming
mode, the table as :class:`~amlflow.engine.sgd.Chunks` (``_TableChunks``: a chunk's features built with the
fitted builder when asked for, kept on disk between passes in a temporary directory when there is room:
``_spill_dir``). Used by :mod:`amlflow.engine.streaming` (which re-exports these names),
:mod:`amlflow.engine.model` and the in-memory mode (:mod:`amlflow.engine.train_memory`).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from amlflow.engine.errors import TrainingError
from amlflow.engine.limits import format_bytes
from amlflow.engine.recipe import FeatureBuilder
from amlflow.engine.recipe.features import FeatureBound
from amlflow.engine.schema import Schema, numeric_view
from amlflow.engine.sgd import Chunk
from amlflow.engine.table import Table
from amlflow.engine.trained import MAX_CLASSES, _codes, target_view

# every name is internal to the training modules (model, streaming, train_memory): nothing public here
__all__: list[str] = []


# streaming, spilled chunk features on disk: a float32 value and an int32 column per non-zero
SPILL_BYTES_PER_NONZERO = 8


def _with_bias(X: sp.csr_matrix) -> sp.csr_matrix:
    """``X`` with a constant-1 column appended (built directly on the CSR arrays)."""
    n, f = X.shape
    counts = np.diff(X.indptr)
    indptr = X.indptr.astype(np.int64) + np.arange(n + 1)
    indices = np.empty(X.nnz + n, dtype=np.int32)
    data = np.empty(X.nnz + n, dtype=np.float32)
    last = indptr[1:] - 1
    keep = np.ones(X.nnz + n, dtype=bool)
    keep[last] = False
    indices[keep] = X.indices
    data[keep] = X.data
    indices[last] = f
    data[last] = 1.0
    del counts
    return sp.csr_matrix((data, indices, indptr), shape=(n, f + 1))


@dataclass
class _Target:
    """The target of the training table, per dictionary entry and per row (nothing of the table's size
    but the valid-row mask): ``entry`` maps a dictionary entry to its value (float: nan = invalid) or class
    index (int: -1 = invalid); ``counts`` counts each entry's rows."""

    name: str
    entry: np.ndarray
    counts: np.ndarray
    valid: np.ndarray
    classes: list[str]

    @property
    def n_valid(self) -> int:
        return int(self.valid.sum())

    def entry_ok(self) -> np.ndarray:
        ok: np.ndarray = self.entry >= 0 if self.entry.dtype.kind == "i" else ~np.isnan(self.entry)
        return ok

    def values(self, table: Table, start: int, stop: int) -> np.ndarray:
        """Targets of the valid rows of ``[start, stop)``."""
        got: np.ndarray = self.entry[_codes(table, self.name, start, stop)][self.valid[start:stop]]
        return got


def _entries(model_type: str, tview: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """The target per dictionary entry: the class index (-1: invalid) for MULTICLASS, else the value."""
    if model_type == "MULTICLASS":
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index.get(v, -1) if v is not None else -1 for v in tview], dtype=np.int64)
    return np.asarray(tview, dtype=np.float64)


def _target(model_type: str, table: Table, target: str, batch_rows: int = 1 << 20) -> _Target:
    """Read the target column in batches (as ``train`` always did, per dictionary entry then per row)."""
    tview = target_view(model_type, table.dictionary(target))
    counts = np.zeros(len(tview), dtype=np.int64)
    for a, b in table.iter_row_batches(batch_rows):
        counts += np.bincount(_codes(table, target, a, b), minlength=len(tview))
    classes: list[str] = []
    if model_type == "MULTICLASS":
        present = np.array([v is not None for v in tview], dtype=bool)
        names = sorted({tview[i] for i in np.flatnonzero(present & (counts > 0))})
        if len(names) > MAX_CLASSES:
            raise TrainingError(
                f"{target}: {len(names)} distinct target values; "
                f"a MULTICLASS model allows at most {MAX_CLASSES}",
                field=target,
            )
        classes = names
    else:
        classes = ["0", "1"] if model_type == "BINARY" else []
    entry = _entries(model_type, tview, classes)
    ok = entry >= 0 if model_type == "MULTICLASS" else ~np.isnan(entry)
    valid = np.empty(table.n_rows, dtype=bool)
    for a, b in table.iter_row_batches(batch_rows):
        valid[a:b] = ok[_codes(table, target, a, b)]
    return _Target(target, entry, counts, valid, classes)


def _check_target(model_type: str, tgt: _Target) -> None:
    target = tgt.name
    if tgt.n_valid == 0:
        raise TrainingError(f"{target}: no training record has a valid target value", field=target)
    used = np.flatnonzero(tgt.entry_ok() & (tgt.counts > 0))
    if model_type == "BINARY":
        seen = np.unique(tgt.entry[used])
        if len(seen) < 2:
            raise TrainingError(
                f"{target}: every valid training record has target {int(seen[0])}; "
                "a BINARY model needs both 0 and 1",
                field=target,
            )
    elif model_type == "MULTICLASS" and len(tgt.classes) < 2:
        raise TrainingError(
            f"{target}: only one target class ({tgt.classes[0]!r}); a MULTICLASS model needs at least 2",
            field=target,
        )


class _TableChunks:
    """The training table as :class:`amlflow.engine.sgd.Chunks`: features of ``chunk_rows`` rows at a time
    built with the fitted builder (valid rows only, the constant-1 column last), their targets and weights.

    With a ``spill`` directory, each chunk is written there (plain ``.npy`` arrays) the first time it is
    built and read back on later passes instead of being built again; without one every pass builds it."""

    def __init__(
        self,
        table: Table,
        builder: FeatureBuilder,
        tgt: _Target,
        chunk_rows: int,
        model_type: str,
        center: float,
        weight: tuple[str, np.ndarray, float] | None,
        spill: Path | None = None,
        ranges: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        self.table = table
        self.builder = builder
        self.enc = builder.encoder(table)
        self.tgt = tgt
        self.ranges = list(table.iter_row_batches(chunk_rows)) if ranges is None else list(ranges)
        self.model_type = model_type
        self.center = center
        self.weight = weight  # (attribute, weight per dictionary entry, the largest weight)
        self.spill = spill
        self.spilled: set[int] = set()
        self.kept: Chunk | None = None

    def __len__(self) -> int:
        return len(self.ranges)

    def chunk(self, i: int) -> Chunk:
        if self.kept is not None:  # a single chunk: held between passes (no more memory than within one)
            return self.kept
        if i in self.spilled:
            return self._read(i)
        a, b = self.ranges[i]
        sel = self.tgt.valid[a:b]
        X = self.builder.transform(self.table, a, b, _dicts=self.enc)
        X = _with_bias(X if sel.all() else X[sel])
        y = self.tgt.values(self.table, a, b)
        if self.model_type == "REGRESSION":
            y = y - self.center
        w = None
        if self.weight is not None:
            name, per_entry, top = self.weight
            w = per_entry[_codes(self.table, name, a, b)][sel] / top
        out = Chunk(X, y, w)
        if len(self.ranges) == 1:
            self.kept = out
        elif self.spill is not None:
            self._write(i, X, y, w)
        return out

    def _arrays(self, i: int) -> dict[str, Path]:
        assert self.spill is not None
        return {k: self.spill / f"{i}.{k}.npy" for k in ("data", "indices", "indptr", "y", "w")}

    def _write(self, i: int, X: sp.csr_matrix, y: np.ndarray, w: np.ndarray | None) -> None:
        paths = self._arrays(i)
        for key, arr in (("data", X.data), ("indices", X.indices), ("indptr", X.indptr), ("y", y), ("w", w)):
            if arr is not None:
                np.save(paths[key], arr, allow_pickle=False)
        self.spilled.add(i)

    def _read(self, i: int) -> Chunk:
        paths = self._arrays(i)
        indptr = np.load(paths["indptr"], allow_pickle=False)
        X = sp.csr_matrix(
            (
                np.load(paths["data"], allow_pickle=False),
                np.load(paths["indices"], allow_pickle=False),
                indptr,
            ),
            shape=(len(indptr) - 1, self.builder.n_features + 1),
        )
        w = np.load(paths["w"], allow_pickle=False) if paths["w"].exists() else None
        return Chunk(X, np.load(paths["y"], allow_pickle=False), w)


def _weight_entries(table: Table, schema: Schema) -> tuple[str, np.ndarray] | None:
    if schema.row_weight is None or schema.row_weight not in table.names:
        return None
    wv = numeric_view(table.dictionary(schema.row_weight))
    return schema.row_weight, np.where(np.isnan(wv) | (wv < 0), 1.0, wv)


def _spill_dir(
    stack: contextlib.ExitStack[Any],
    bound: FeatureBound,
    *,
    n_classes: int,
    passes: int,
    chunk_rows: int,
    scratch: Path | str | None,
    say: Callable[[str], None],
) -> Path | None:
    """A temporary directory (removed with ``stack``) to keep the chunks' features between passes, when
    there is more than one pass and the disk under ``scratch`` (None: the system's temporary directory) has
    twice the room the features need; otherwise None (every pass builds them again; a single chunk is kept in
    memory)."""
    if passes < 2 or bound.rows <= chunk_rows:
        return None
    need = (bound.nonzeros + bound.rows) * SPILL_BYTES_PER_NONZERO + bound.rows * 8 * (n_classes + 2)
    where = Path(scratch) if scratch is not None else Path(tempfile.gettempdir())
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        free = 0
    if free < 2 * need:
        say(f"streaming: chunk features rebuilt every pass (~{format_bytes(need)} would not fit on disk)")
        return None
    path = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=".amlflow-stream-", dir=where)))
    say(f"streaming: chunk features kept on disk between passes (~{format_bytes(need)})")
    return path
