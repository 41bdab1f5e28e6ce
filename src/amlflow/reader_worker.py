"""The datasource reader process: ``python -m amlflow.reader_worker`` (started by
:mod:`amlflow.service.reader_processes`, which documents the protocol).

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


def _serve_one(request: dict[str, Any]) -> dict[str, Any]:
    import functools

    from amlflow.engine.dataset import EncodedTable, Source, build_dataset
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
    store = storage_from_spec(request["storage"])
    sources = [
        Source(key, int(size), functools.partial(store.open_read, uri))
        for uri, key, size in request["objects"]
    ]
    schema = parse_schema(request["schema"])
    out_dir = Path(request["out_dir"])
    try:
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
        return {"error": "engine", "type": type(exc).__name__, "message": exc.message, "field": exc.field}
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
