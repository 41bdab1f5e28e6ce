"""AML's limits and the bounds amlflow adds where AML left them implicit (docs/aml-reference.md §3.3, §5.3,
§9, §10), with the checks the service calls at its boundaries.

* size of one observation (a CSV row, a ``Predict`` ``Record``): 100 KB — ``dataset`` rejects the row,
  :func:`check_record` the record;
* attributes of a schema: 1,000 — ``schema.parse_schema``;
* output variables of a recipe: 10,000, counted after group expansion (each member, each cartesian
  pair) — ``recipe.parse_recipe``;
* nesting of one recipe expression: 32 levels, assignments substituted; nodes of one expression: 256 —
  ``recipe.parse_recipe``;
* classes of a MULTICLASS target: 100 — ``model.train``;
* tokens per value (the words of a TEXT value, ``ngram``, ``osb``, ``cartesian`` pairs): 10,000, the first
  ones kept — ``recipe.transforms``;
* features of one ``Predict`` record: 1,000,000 — ``model.TrainedModel.predict_record``;
* memory of a training job: the job's budget — ``model.train``, estimated before anything is built.

The observation, attribute, output and class limits are AML's (§10); the expression bounds keep parsing
linear; the token cap makes feature building linear in the input (without it,
``cartesian(ngram(a,10), ngram(b,10))`` has ~100 · |a| · |b| tokens per record). The memory budget
(:func:`default_memory_budget`, or the ``memory_budget`` a caller passes, e.g. from
``AMLFLOW_MEMORY_LIMIT``) turns what would be a ``MemoryError`` or an OOM kill into a
:class:`~amlflow.engine.errors.TrainingError` naming the estimate.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from amlflow.engine.errors import DataError, EngineError, TrainingError

if TYPE_CHECKING:
    from amlflow.engine.dataset import DatasetInfo

__all__ = [
    "MAX_EXPRESSION_DEPTH",
    "MAX_EXPRESSION_NODES",
    "MAX_RECORD_BYTES",
    "MAX_RECORD_FEATURES",
    "MAX_TOKENS_PER_VALUE",
    "MEMORY_FRACTION",
    "check_memory",
    "check_record",
    "default_memory_budget",
    "format_bytes",
    "require_records",
]

MAX_RECORD_BYTES = 100 * 1024
MAX_EXPRESSION_DEPTH = 32
MAX_EXPRESSION_NODES = 256
MAX_TOKENS_PER_VALUE = 10_000
MAX_RECORD_FEATURES = 1_000_000
MEMORY_FRACTION = 0.5


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    return None


def _rlimit() -> int | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    limits = []
    for which in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
        soft, _ = resource.getrlimit(which)
        if soft != resource.RLIM_INFINITY and soft > 0:
            limits.append(int(soft))
    return min(limits) if limits else None


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not on POSIX
        return None


@functools.lru_cache(maxsize=1)
def default_memory_budget() -> int:
    """The memory one job may plan for: :data:`MEMORY_FRACTION` of the smallest of physical memory, the
    cgroup's limit and the process's ``RLIMIT_AS`` / ``RLIMIT_DATA`` (4 GB when none can be read)."""
    known = [v for v in (_physical_memory(), _cgroup_limit(), _rlimit()) if v]
    return int(MEMORY_FRACTION * min(known)) if known else 4 << 30


def format_bytes(n: float) -> str:
    """``n`` bytes for a message: ``1.2 GB``, ``340 MB``, ``12 KB``."""
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def check_memory(
    needed: int,
    budget: int | None,
    what: str,
    advice: str,
    *,
    error: type[EngineError] = TrainingError,
    field: str | None = None,
) -> None:
    """Raise ``error`` when ``needed`` bytes exceed ``budget`` (None: :func:`default_memory_budget`).

    Args:
        needed: the estimate, in bytes.
        budget: the job's memory budget in bytes, or None for the default.
        what: the work estimated, e.g. ``"training"`` (the message starts with it).
        advice: how to get under the budget, appended to the message.
        error: the engine error to raise (``TrainingError`` for a job, ``DataError`` for a record).
        field: the input the error names, if any.
    """
    limit = default_memory_budget() if budget is None else budget
    if needed > limit:
        raise error(
            f"{what} would need ~{format_bytes(needed)}, over the job memory budget of "
            f"{format_bytes(limit)}; {advice}",
            field=field,
        )


def check_record(record: Mapping[str, str], field: str = "Record") -> None:
    """Raise :class:`DataError` when a realtime record is over AML's 100 KB per observation (its names and
    values, UTF-8)."""
    size = sum(
        len(str(k).encode("utf-8", "surrogatepass")) + len(str(v).encode("utf-8", "surrogatepass"))
        for k, v in record.items()
    )
    if size > MAX_RECORD_BYTES:
        raise DataError(
            f"{field}: {size:,} bytes, over the limit of {MAX_RECORD_BYTES:,} bytes (100 KB) per observation",
            field=field,
        )


def require_records(info: DatasetInfo, location: str, field: str = "DataLocationS3") -> None:
    """Raise :class:`DataError` when a datasource has no valid record (an empty file, a header only, every
    row rejected, or a DataRearrangement that selects nothing): AML FAILS an input it cannot accept."""
    if info.n_rows > 0:
        return
    detail = f"all {info.n_rejected} record(s) were rejected" if info.n_rejected else "it has no records"
    raise DataError(
        f"{field}: no valid record in {location} for this datasource ({detail}; "
        "an empty file, a header only, or a DataRearrangement that selects nothing).",
        field=field,
    )
