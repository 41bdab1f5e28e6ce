"""The datasource job's CSV encoding on an existing Dask cluster (``AMLFLOW_DASK_ADDRESS``,
``AMLFLOW_DASK_DATASOURCE``), by input file and byte range.

The service plans the work: the input's objects in AML's order, each cut into byte ranges of
:data:`RANGE_BYTES` (a file of at most that size, and every gzip file — a gzip stream cannot be split —
is one part, read whole); the split's sizes are measured as in-process
(:func:`amlflow.engine.dataset.input_sizes`: for a ``sequential`` split a gzip file is decompressed once
to count its bytes). Then:

1. each part goes to a worker (:func:`read_range`, plain data: the artifact root, the storage, the
   datasource id, the object's URI, key and size, the range, the schema's and the rearrangement's JSON,
   the input's total bytes and the file's start in it). The worker reads **only its byte range** of the
   object (one ranged GetObject from ``lo - 1`` on, stopped after the end of the range's last line:
   :meth:`amlflow.storage.S3Storage.open_read_from`), parses it with the engine's own reader
   (:func:`amlflow.engine.dataset_parts.read_part`) into a *part* — a small encoded table with its own
   dictionaries and report — writes it into the artifact root under the datasource's folder
   (``parts/<job token>/<index>/``) and returns a short summary;
2. the service takes the parts in input order as they complete, fetches each one and merges it
   (:class:`amlflow.engine.dataset_parts.PartMerger`: dictionaries remapped, codes streamed, positions
   and line numbers shifted, the MAX_REJECTED_ROWS check on the running total) into the datasource's
   table, then deletes it. The merged table is byte for byte the one the in-process job writes
   (tests/engine/test_dataset_parts.py), so the statistics, computed afterwards from it as in-process,
   are the same document.

Failures come back in input order as the in-process job would meet them, with its messages: a worker
returns an engine ``DataError`` (bad gzip), a missing object or a refused location as data and the
service raises the same exception; more than 10,000 rejected rows is the merge's own ``DataError``. A
failing job leaves a marker beside its parts' prefix before it deletes them, so a task still running
(Dask cannot stop it) drops its part instead of leaving it in the artifact root.

Policy (``AMLFLOW_DASK_DATASOURCE``): ``auto`` (the default) encodes on the cluster when the input is at
least :data:`AUTO_MIN_BYTES` and makes more than one part, in-process otherwise (shipping a small input
costs more than parsing it); ``always`` sends every datasource (even one part); ``never`` keeps the job
in-process. The job log says which and why. Without ``AMLFLOW_DASK_ADDRESS`` nothing here runs.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from amlflow.engine.dataset import (
    DatasetInfo,
    Source,
    input_sizes,
    is_gzip,
)
from amlflow.engine.dataset_parts import PartMerger, read_part
from amlflow.engine.errors import DataError, EngineError
from amlflow.engine.rearrange import Rearrangement, parse_rearrangement
from amlflow.engine.schema import Schema, parse_schema
from amlflow.service.artifacts import Artifacts
from amlflow.service.distributed import client_for
from amlflow.service.errors import AmlError
from amlflow.service.jobs import JobFailed
from amlflow.service.layout import KIND_FOLDERS, entity_dir_name
from amlflow.storage import ObjectInfo, S3Storage, Storage, storage_from_spec, storage_spec

__all__ = ["AUTO_MIN_BYTES", "RANGE_BYTES", "WHEN", "build_on_dask", "plan_parts", "read_range"]

#: the values of ``AMLFLOW_DASK_DATASOURCE``
WHEN = ("auto", "always", "never")
#: a part is at most this many bytes of one file (the last line of a range is finished past it)
RANGE_BYTES = 64 << 20
#: ``auto`` sends a datasource to the cluster from this input size on (docs/scale.md, "Datasources on
#: Dask": below it the in-process parse takes about as long as shipping the parts back)
AUTO_MIN_BYTES = 128 << 20
_TABLE_FILES = ("codes.bin", "dictionaries.json", "meta.json")

_Log = Callable[[str], None]


def _relative(datasource_id: str) -> str:
    return f"{KIND_FOLDERS['DataSource']}/{entity_dir_name('DataSource', datasource_id)}"


def _parts_prefix(root: str, datasource_id: str, token: str) -> str:
    """Where the job's parts go in the artifact root (an s3:// prefix or a local folder)."""
    base = root if root.startswith("s3://") else root.rstrip("/") + "/"
    return f"{base}{_relative(datasource_id)}/parts/{token}/"


def _cancelled_marker(root: str, datasource_id: str, token: str) -> str:
    """The marker a failed job leaves beside its parts' prefix (outside it, so deleting the parts keeps
    it): a task still running then drops its part instead of leaving it in the artifact root."""
    return _parts_prefix(root, datasource_id, token).rstrip("/") + ".cancelled"


def _cancelled(root: str, marker: str) -> bool:
    return S3Storage().exists(marker) if root.startswith("s3://") else Path(marker).exists()


# -------------------------------------------------------------------------------------- on the workers


def read_range(
    root: str,
    storage: str,
    datasource_id: str,
    token: str,
    index: int,
    uri: str,
    key: str,
    size: int,
    lo: int,
    hi: int | None,
    schema_json: str,
    rearrangement_json: str,
    total_bytes: int,
    file_start: int,
) -> dict[str, Any]:
    """On a worker: part ``index`` — the lines of object ``uri`` that start in ``[lo, hi)`` (``hi``
    None: the whole object, gunzipped if it is gzip) — read with
    :func:`~amlflow.engine.dataset_parts.read_part` and written into the artifact root at
    ``parts/<token>/<index>/``. ``storage`` is ``"s3"`` or a local storage root. Returns a summary, or
    ``{"error": kind, "message": ...}`` for the failures the in-process job reports itself (the service
    raises them in input order)."""
    t0 = time.perf_counter()
    store = storage_from_spec(storage)
    source = Source(
        key, int(size), functools.partial(store.open_read, uri), functools.partial(store.open_read_from, uri)
    )
    prefix = _parts_prefix(root, datasource_id, token) + f"{index:06d}/"
    remote = root.startswith("s3://")
    work = Path(tempfile.mkdtemp(prefix="amlflow-dask-part-")) if remote else None
    out = (work / "part") if work is not None else Path(prefix)
    try:
        try:
            info = read_part(
                source,
                parse_schema(schema_json),
                parse_rearrangement(rearrangement_json),
                out,
                total_bytes=int(total_bytes),
                file_start=int(file_start),
                lo=int(lo),
                hi=None if hi is None else int(hi),
            )
        except EngineError as exc:
            return {"error": "data", "message": exc.message, "field": exc.field}
        except FileNotFoundError as exc:
            return {"error": "missing", "message": str(exc)}
        except ValueError as exc:
            return {"error": "value", "message": str(exc)}
        parse_seconds = time.perf_counter() - t0
        # the job failed meanwhile (its tasks are cancelled, but a running one runs to its end): drop the
        # part; checked again after the upload, which may have crossed the service's clean-up
        marker = _cancelled_marker(root, datasource_id, token)
        if _cancelled(root, marker):
            if work is None:
                shutil.rmtree(out, ignore_errors=True)
            return {"index": index, "cancelled": True}
        if work is not None:
            s3 = S3Storage()
            for name in _TABLE_FILES:
                s3.write_atomic(prefix + name, out / name)
            if _cancelled(root, marker):
                for name in _TABLE_FILES:
                    s3.delete(prefix + name)
                return {"index": index, "cancelled": True}
        return {
            "index": index,
            "rows": info.n_rows,
            "bytes": info.bytes_read,
            "parse_seconds": round(parse_seconds, 3),
            "seconds": round(time.perf_counter() - t0, 3),
            "host": os.uname().nodename,
        }
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


# -------------------------------------------------------------------------------------- in the service


def plan_parts(
    objects: Sequence[ObjectInfo], gzip: Sequence[bool], range_bytes: int = RANGE_BYTES
) -> list[tuple[int, int, int | None]]:
    """``(object index, lo, hi)`` per part, in input order: a gzip object or one of at most
    ``range_bytes`` is one part read whole (``hi`` None); a bigger one is cut into equal ranges."""
    out: list[tuple[int, int, int | None]] = []
    for i, (obj, gz) in enumerate(zip(objects, gzip, strict=True)):
        if gz or obj.size <= range_bytes:
            out.append((i, 0, None))
            continue
        n = math.ceil(obj.size / range_bytes)
        cuts = [obj.size * k // n for k in range(n + 1)]
        out.extend((i, a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True))
    return out


def _root(artifacts: Artifacts) -> str:
    return artifacts.uri if artifacts.remote else str(artifacts.base.resolve())


def _raise_part_error(summary: dict[str, Any]) -> None:
    kind, message = summary.get("error"), str(summary.get("message", ""))
    if kind == "data":
        raise DataError(message, field=summary.get("field"))
    if kind == "missing":
        raise FileNotFoundError(message)
    if kind == "value":
        raise ValueError(message)


def build_on_dask(
    address: str,
    artifacts: Artifacts,
    storage: Storage,
    *,
    datasource_id: str,
    objects: Sequence[ObjectInfo],
    schema: Schema,
    rearrangement: Rearrangement,
    out_dir: Path,
    when: str = "auto",
    range_bytes: int | None = None,
    log: _Log | None = None,
    memory_budget: int | None = None,
) -> DatasetInfo | None:
    """Encode the datasource's ``objects`` into the table at ``out_dir`` on the cluster at ``address``
    (see the module docstring), or return None — the caller then runs ``build_dataset`` in-process —
    when ``when`` is ``never``, or ``auto`` and the input is small or one part.

    Raises:
        DataError, FileNotFoundError, ValueError: as the in-process ``build_dataset`` (bad gzip, more
            than 10,000 rejected rows, a missing object, a refused location).
        JobFailed: the cluster cannot be reached, or a worker failed otherwise (naming the cluster).
    """
    say = log or (lambda _msg: None)
    if when not in WHEN:
        raise JobFailed(f"AMLFLOW_DASK_DATASOURCE: {when!r} is not one of {', '.join(WHEN)}")
    if when == "never":
        return None
    spec = storage_spec(storage)
    if spec is None:
        say(f"encoding on Dask: no (the storage {storage!r} is neither S3 nor a local root)")
        return None
    size = sum(o.size for o in objects)
    if when == "auto" and size < AUTO_MIN_BYTES:
        say(
            f"encoding on Dask: no (AMLFLOW_DASK_DATASOURCE=auto and the input's {size:,} bytes are under "
            f"{AUTO_MIN_BYTES:,})"
        )
        return None
    step = range_bytes or RANGE_BYTES
    sources = [Source(o.key, o.size, functools.partial(storage.open_read, o.uri)) for o in objects]
    gz = [o.size > step and is_gzip(s) for o, s in zip(objects, sources, strict=True)]
    plan = plan_parts(objects, gz, step)
    if when == "auto" and len(plan) < 2:
        say("encoding on Dask: no (AMLFLOW_DASK_DATASOURCE=auto and the input is one part)")
        return None
    sizes = input_sizes(sources, rearrangement)  # a sequential split measures gzip files here
    total = sum(sizes)
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    client = client_for(address)
    root = _root(artifacts)
    token = f"{uuid.uuid4().hex[:12]}"
    prefix = _parts_prefix(root, datasource_id, token)
    schema_json = schema.to_json()
    rearrangement_json = json.dumps(rearrangement.to_dict())
    say(
        f"encoding on the Dask cluster at {address} ({when}): {len(objects)} file(s), {size:,} bytes in "
        f"{len(plan)} part(s) of up to {step:,} bytes ({sum(gz)} gzip file(s) read whole)"
    )
    futures = [
        client.submit(
            read_range,
            root,
            spec,
            datasource_id,
            token,
            k,
            objects[i].uri,
            objects[i].key,
            objects[i].size,
            lo,
            hi,
            schema_json,
            rearrangement_json,
            total,
            starts[i],
            pure=False,
            priority=len(plan) - k,  # in input order: the service merges them in that order
        )
        for k, (i, lo, hi) in enumerate(plan)
    ]
    local_parts = out_dir.parent / f".parts-{token}"
    t0 = time.perf_counter()
    waited = merged = 0.0
    summaries: list[dict[str, Any]] = []
    try:
        sizes_by_key = [(o.key, o.size) for o in objects]
        with PartMerger(schema, rearrangement, sizes_by_key, out_dir, memory_budget=memory_budget) as merger:
            for k, future in enumerate(futures):
                t1 = time.perf_counter()
                try:
                    summary = future.result()
                except (EngineError, AmlError, JobFailed):
                    raise
                except Exception as exc:
                    raise JobFailed(
                        f"on the Dask cluster at {address} (AMLFLOW_DASK_ADDRESS): {exc}"
                    ) from None
                future.release()
                _raise_part_error(summary)
                summaries.append(summary)
                part = Path(prefix + f"{k:06d}")
                if artifacts.remote:
                    assert artifacts.storage is not None
                    part = local_parts / f"{k:06d}"
                    part.mkdir(parents=True, exist_ok=True)
                    for name in _TABLE_FILES:
                        uri = f"{prefix}{k:06d}/{name}"
                        with artifacts.storage.open_read(uri) as src, (part / name).open("wb") as dst:
                            shutil.copyfileobj(src, dst, 1 << 20)
                        artifacts.storage.delete(uri)
                t2 = time.perf_counter()
                waited += t2 - t1
                merger.add(part)
                shutil.rmtree(part, ignore_errors=True)
                merged += time.perf_counter() - t2
            t3 = time.perf_counter()
            info = merger.finish()
            merged += time.perf_counter() - t3
    except BaseException:
        with contextlib.suppress(Exception):  # the job's own failure is what matters
            _mark_cancelled(artifacts, root, datasource_id, token)
            client.cancel(futures)
        raise
    finally:
        _clean(artifacts, prefix, local_parts)
    parse = [float(s["parse_seconds"]) for s in summaries]
    say(
        f"dask: {len(plan)} part(s) read on {len({s['host'] for s in summaries})} host(s) "
        f"(parse {min(parse, default=0):.2f}-{max(parse, default=0):.2f} s each), merged in "
        f"{merged:.2f} s, waited/fetched {waited:.2f} s; {time.perf_counter() - t0:.2f} s in all"
    )
    return info


def _mark_cancelled(artifacts: Artifacts, root: str, datasource_id: str, token: str) -> None:
    """Leave the failed job's marker (before the clean-up lists its parts): a task that finishes later
    sees it and drops its part. It stays (an empty object beside the parts' prefix; in a local root, under
    ``parts/``, which start-up's crash clean-up removes)."""
    marker = _cancelled_marker(root, datasource_id, token)
    if artifacts.remote:
        assert artifacts.storage is not None
        artifacts.storage.write_atomic(marker, b"")
    else:
        Path(marker).parent.mkdir(parents=True, exist_ok=True)
        Path(marker).touch()


def _clean(artifacts: Artifacts, prefix: str, local_parts: Path) -> None:
    """Remove the job's parts: those left in the artifact root (a failed job) and the local copies."""
    shutil.rmtree(local_parts, ignore_errors=True)
    if artifacts.remote:
        assert artifacts.storage is not None
        with contextlib.suppress(Exception):
            for obj in artifacts.storage.list(prefix):
                artifacts.storage.delete(obj.uri)
    else:
        shutil.rmtree(prefix, ignore_errors=True)
        with contextlib.suppress(OSError):
            Path(prefix).parent.rmdir()  # parts/, when no other job's parts are there
