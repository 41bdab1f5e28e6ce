"""The service's worker process: ``python -m amlflow.reader_worker`` (started by
:mod:`amlflow.service.reader_processes`, which documents the protocol). It reads datasources (one request:
the CSV into a table, and its statistics) and trains shards of a data-parallel fit
(:mod:`amlflow.service.training_processes`: ``shard_open``, ``shard_pass`` and ``shard_drop`` requests; a
shard's chunks stay in the worker between its requests).

A module of its own, outside ``amlflow.service``, so a worker imports only the engine and the storage.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

READY = "ready"

#: the shards of data-parallel fits this worker holds: (job token, shard) -> (chunks, table)
_shards: dict[tuple[str, int], Any] = {}
_lock = threading.Lock()  # guards _shards and _batch_inputs (requests run on their own threads)


#: glibc's mallopt parameters, and the thresholds training runs with (:func:`_malloc_for_training`)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
TRAINING_MALLOC_THRESHOLD = 32 << 20
_malloc_raised: bool | None = None


def _glibc() -> Any:
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:  # not glibc
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def _malloc_for_training() -> bool:
    """With ``MALLOC_TRIM_THRESHOLD_`` in the environment (a process that started a Dask ``LocalCluster``
    sets it to 65536 in its own environment, which this worker inherits; users set it too), glibc's trim
    and mmap thresholds at 32 MiB for this worker from its first shard on, as the Dask training tasks do
    (``amlflow.service.dask_training._malloc_for_training``): with the variable set, every array of
    128 KiB or more the learner makes per mini-batch is a fresh ``mmap`` and the heap is given back at
    every batch — measured, 0.8–1.0 s per MNIST shard pass against 0.42–0.47 s. Whether it changed
    anything (once per worker)."""
    global _malloc_raised
    if _malloc_raised is None:
        libc = _glibc() if "MALLOC_TRIM_THRESHOLD_" in os.environ else None
        if libc is not None:
            libc.mallopt(_M_TRIM_THRESHOLD, TRAINING_MALLOC_THRESHOLD)
            libc.mallopt(_M_MMAP_THRESHOLD, TRAINING_MALLOC_THRESHOLD)
        _malloc_raised = libc is not None
    return _malloc_raised


def _give_back_memory() -> None:
    """After a fit: the freed heap back to the system (glibc keeps it otherwise), so an idle worker holds
    little more than its imports."""
    import gc

    gc.collect()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def _engine_error(exc: Any) -> dict[str, Any]:
    return {"error": "engine", "type": type(exc).__name__, "message": exc.message, "field": exc.field}


def _shard_request(request: dict[str, Any]) -> dict[str, Any]:
    import time

    from amlflow.engine.errors import EngineError
    from amlflow.engine.sgd import load_state, run_shard, save_state, shard_config
    from amlflow.engine.streaming import ShardSpec, measure_shard, open_shard
    from amlflow.engine.table import EncodedTable

    op, token = request["op"], str(request["token"])
    t0 = time.perf_counter()
    try:
        if op == "shard_drop":
            with _lock:
                gone = [k for k in _shards if k[0] == token]
                for k in gone:
                    del _shards[k]
            _give_back_memory()
            return {"dropped": len(gone)}
        key = (token, int(request["shard"]))
        if op == "shard_open":
            raised = _malloc_for_training()
            spec = ShardSpec.from_json(request["spec"])
            spill = request.get("spill")
            chunks = open_shard(
                EncodedTable.open(request["table"]),
                spec,
                [(int(a), int(b)) for a, b in request["ranges"]],
                spill=None if spill is None else Path(spill),
            )
            total, rows = measure_shard(chunks)
            with _lock:
                _shards[key] = (chunks, spec)
            return {"sq": total, "rows": rows, "seconds": time.perf_counter() - t0, "malloc_raised": raised}
        if op == "shard_pass":
            with _lock:
                chunks, spec = _shards[key]
            state = run_shard(
                chunks,
                load_state(request["state_in"]),
                shard_config(spec.sgd_config(), int(request["shards"])),
                pass_index=int(request["pass_index"]),
                shard=key[1],
                sync=int(request["sync"]),
                syncs=int(request["syncs"]),
                mean_sq_norm=float(request["mean_sq"]),
            )
            save_state(state, request["state_out"])
            return {"seconds": time.perf_counter() - t0}
    except EngineError as exc:
        return _engine_error(exc)
    raise ValueError(f"unknown request {op!r}")


#: the models and tables batch partitions were scored with: (model dir, its model.json's mtime, table dir)
_batch_inputs: dict[tuple[str, int, str], tuple[Any, Any]] = {}
_KEEP_BATCH_INPUTS = 2


def _scoring_inputs(request: dict[str, Any]) -> tuple[Any, Any]:
    """The model and table of a scoring request, kept for the next partitions (a model folder is never
    rewritten in place; its model.json's mtime is in the key all the same)."""
    from amlflow.engine.model import load_model
    from amlflow.engine.table import EncodedTable

    model_dir = Path(request["model"])
    key = (str(model_dir), (model_dir / "model.json").stat().st_mtime_ns, str(request["table"]))
    with _lock:
        got = _batch_inputs.get(key)
    if got is None:
        got = (load_model(model_dir), EncodedTable.open(request["table"]))
        with _lock:
            _batch_inputs[key] = got
            while len(_batch_inputs) > _KEEP_BATCH_INPUTS:
                del _batch_inputs[next(iter(_batch_inputs))]
    return got


def _score_part(request: dict[str, Any]) -> dict[str, Any]:
    """The model's scores of table rows ``[start, stop)`` (``amlflow.service.batch_processes``, an
    evaluation), saved as a ``.npy`` file at ``out``."""
    import numpy as np

    from amlflow.engine.errors import EngineError

    try:
        model, table = _scoring_inputs(request)
        scores = model.predict_table(table, start=int(request["start"]), stop=int(request["stop"])).scores
    except EngineError as exc:
        return _engine_error(exc)
    np.save(request["out"], scores, allow_pickle=False)
    return {"rows": len(scores)}


def _batch_part(request: dict[str, Any]) -> dict[str, Any]:
    """Positions ``[first, stop)`` of a batch prediction's span (``amlflow.service.batch_processes``):
    AML's batch CSV cut into the span's blocks (``RecordBlocks``; the header only in the span's first
    partition), each deflated and appended to the file ``out``; the blocks' (length, CRC-32, uncompressed
    size) and the partition's counts."""
    from amlflow.engine.batch import write_batch_output
    from amlflow.engine.errors import EngineError
    from amlflow.engine.schema import parse_schema
    from amlflow.storage.gzip_blocks import RecordBlocks, deflate_block

    try:
        model, table = _scoring_inputs(request)
        first, stop, span_first = int(request["first"]), int(request["stop"]), int(request["span_first"])
        blocks: list[list[int]] = []
        with open(request["out"], "wb") as fh:

            def emit(raw: bytes) -> None:
                block = deflate_block(raw)
                fh.write(block.data)
                blocks.append([len(block.data), block.crc, block.size])

            sink = RecordBlocks(int(request["block_rows"]), header=first == span_first, emit=emit)
            counts = write_batch_output(
                model,
                table,
                parse_schema(request["schema"]),
                sink,  # type: ignore[arg-type]
                threshold=float(request["threshold"]),
                rows=(first, stop),
            )
            sink.close()
    except EngineError as exc:
        return _engine_error(exc)
    return {"blocks": blocks, "total": int(counts.total), "invalid": int(counts.invalid)}


def _serve_one(request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op", "read")
    if op.startswith("shard_"):
        return _shard_request(request)
    if op == "batch_part":
        return _batch_part(request)
    if op == "score_part":
        return _score_part(request)
    import functools

    from amlflow.engine.dataset import EncodedTable, Source, build_dataset
    from amlflow.engine.dataset_parts import read_part
    from amlflow.engine.errors import EngineError
    from amlflow.engine.rearrange import parse_rearrangement
    from amlflow.engine.schema import parse_schema
    from amlflow.engine.stats import compute_statistics
    from amlflow.storage import storage_from_spec

    env = request.get("env")
    if env is not None:  # S3 as the service's environment configures it now (endpoint, credentials)
        for k in [k for k in os.environ if k.startswith("AWS_") and k not in env]:
            del os.environ[k]
        os.environ.update(env)
    schema = parse_schema(request["schema"])
    try:
        if op == "statistics":  # of a table already written (a datasource read in parts)
            only = request.get("attributes")
            table = EncodedTable.open(request["table"])
            return {"insights": compute_statistics(table, schema, only=None if only is None else set(only))}
        store = storage_from_spec(request["storage"])
        if op == "read_part":  # the lines that start in a byte range of one object
            uri, key, size = request["object"]
            source = Source(
                key,
                int(size),
                functools.partial(store.open_read, uri),
                functools.partial(store.open_read_from, uri),
            )
            part = read_part(
                source,
                schema,
                parse_rearrangement(request["rearrangement"]),
                request["out_dir"],
                total_bytes=int(request["total_bytes"]),
                file_start=int(request["file_start"]),
                lo=int(request["lo"]),
                hi=None if request["hi"] is None else int(request["hi"]),
                memory_budget=request.get("memory_budget"),
            )
            return {"part": part.to_dict()}
        if op != "read":
            raise ValueError(f"unknown request {op!r}")
        sources = [
            Source(key, int(size), functools.partial(store.open_read, uri))
            for uri, key, size in request["objects"]
        ]
        out_dir = Path(request["out_dir"])
        info = build_dataset(
            sources,
            schema,
            parse_rearrangement(request["rearrangement"]),
            out_dir,
            memory_budget=request.get("memory_budget"),
        )
        insights = None
        if request["statistics"] and info.n_rows:
            insights = compute_statistics(EncodedTable.open(out_dir), schema)
    except EngineError as exc:
        return _engine_error(exc)
    except FileNotFoundError as exc:
        return {"error": "missing", "message": str(exc)}
    except ValueError as exc:
        return {"error": "value", "message": str(exc)}
    return {"info": info.to_dict(), "insights": insights}


def main() -> None:
    # the imports a request needs, before "ready"
    import amlflow.engine.dataset
    import amlflow.engine.stats  # noqa: F401

    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but answers on the answer channel
    out.write(READY + "\n")
    out.flush()

    def run(request: dict[str, Any]) -> None:
        try:
            answer = _serve_one(request)
        except Exception:
            answer = {"error": "internal", "message": traceback.format_exc()}
        out.write(json.dumps(answer) + "\n")
        out.flush()

    # the main thread only reads: requests come one at a time (the service waits for each answer), so
    # while one runs the read waits — and returns end-of-file the moment the service is gone
    for line in sys.stdin:
        threading.Thread(target=run, args=(json.loads(line),), daemon=True).start()
    os._exit(0)


if __name__ == "__main__":
    main()
