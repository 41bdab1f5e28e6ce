"""Cheap requests stay fast while costly predictions run: ``/health`` and DescribeMLModels under Predict load.

What it does (loopback only, bounded, stops by itself):

1. starts ``amlflow serve --port 0`` in its own process (fresh home under a temp dir, per-endpoint rate
   limit off);
2. builds a BINARY model over a TEXT column with a costly recipe (``ngram(lowercase(no_punct(text)), 10)``
   and ``osb(text, 10)``) and creates its realtime endpoint;
3. measures ``GET /health`` and a raw ``DescribeMLModels`` POST (keep-alive HTTP/1.1, one request at a
   time) idle, then again while ``--callers`` client processes (default 4) send Predict requests whose
   TEXT value is ``--text-kb`` KB long (default 90, under the 100 KB record limit) as fast as they can;
4. prints p50/p99/max of both, the Predict callers' latency and throughput, and the server's
   ``--predict-timeout`` answers (``LimitExceededException``) if any.

Target: ``/health`` and DescribeMLModels p99 ≤ 50 ms under that load.

Usage:
    python bench/hardening_bench.py [--callers 4] [--samples 300] [--text-kb 90] [--predict-workers N]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

TARGET = "AmazonML_20141212."
RECIPE = {
    "groups": {},
    "assignments": {},
    "outputs": ["ngram(lowercase(no_punct(text)), 10)", "osb(text, 10)"],
}
SCHEMA = {
    "version": "1.0",
    "targetAttributeName": "label",
    "dataFormat": "CSV",
    "dataFileContainsHeader": True,
    "attributes": [
        {"attributeName": "text", "attributeType": "TEXT"},
        {"attributeName": "label", "attributeType": "BINARY"},
    ],
}
WORDS = [f"w{i}" for i in range(400)]


def _post(conn: http.client.HTTPConnection, operation: str, body: dict[str, Any]) -> tuple[int, bytes]:
    conn.request(
        "POST",
        "/",
        body=json.dumps(body).encode(),
        headers={"X-Amz-Target": TARGET + operation, "Content-Type": "application/x-amz-json-1.1"},
    )
    response = conn.getresponse()
    return response.status, response.read()


def _connection(url: str) -> http.client.HTTPConnection:
    parsed = urlparse(url)
    return http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)


def _start_server(home: Path, log_path: Path, extra: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("amlflow", path=str(Path(sys.executable).parent)) or "amlflow"
    cmd = [exe, "serve", "--port", "0", "--home", str(home), "--log-level", "warning", *extra]
    env = dict(os.environ, AMLFLOW_PREDICT_RATE_LIMIT="0")
    log = log_path.open("wb")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env)
    assert proc.stdout is not None
    match = re.search(r"(http://\S+)", proc.stdout.readline().decode())
    if not match:
        proc.kill()
        raise SystemExit(f"server did not start; see {log_path}")
    return proc, match.group(1)


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def _build_model(url: str, home: Path) -> None:
    rng = random.Random(0)
    folder = home / "s3" / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["text,label"] + [f"{_text(rng, 60)},{rng.randint(0, 1)}" for _ in range(300)]
    (folder / "text.csv").write_text("\n".join(lines) + "\n")
    conn = _connection(url)
    steps: list[tuple[str, dict[str, Any]]] = [
        (
            "CreateDataSourceFromS3",
            {
                "DataSourceId": "ds-hard",
                "DataSpec": {"DataLocationS3": "s3://bench/text.csv", "DataSchema": json.dumps(SCHEMA)},
                "ComputeStatistics": True,
            },
        ),
        (
            "CreateMLModel",
            {
                "MLModelId": "ml-hard",
                "MLModelType": "BINARY",
                "TrainingDataSourceId": "ds-hard",
                "Recipe": json.dumps(RECIPE),
                "Parameters": {"sgd.maxPasses": "2"},
            },
        ),
    ]
    for operation, body in steps:
        status, reply = _post(conn, operation, body)
        if status != 200:
            raise SystemExit(f"{operation}: {status} {reply[:300]!r}")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        _, reply = _post(conn, "GetMLModel", {"MLModelId": "ml-hard"})
        state = json.loads(reply)["Status"]
        if state in ("COMPLETED", "FAILED"):
            break
        time.sleep(0.2)
    if state != "COMPLETED":
        raise SystemExit(f"model ended {state}: {reply[:300]!r}")
    status, reply = _post(conn, "CreateRealtimeEndpoint", {"MLModelId": "ml-hard"})
    if status != 200:
        raise SystemExit(f"CreateRealtimeEndpoint: {status} {reply[:300]!r}")


def _caller(url: str, text_kb: int, seed: int, stop: Any, out: Any) -> None:
    rng = random.Random(seed)
    words = text_kb * 1024 // 5
    conn = _connection(url)
    latencies: list[float] = []
    limited = errors = 0
    stop_at = time.monotonic() + 600  # a hard bound, should the bench itself die
    while not stop.is_set() and time.monotonic() < stop_at:
        record = {"text": _text(rng, words)[: text_kb * 1024]}
        t0 = time.perf_counter()
        status, reply = _post(
            conn, "Predict", {"MLModelId": "ml-hard", "Record": record, "PredictEndpoint": url}
        )
        latencies.append((time.perf_counter() - t0) * 1000)
        if status != 200:
            if b"LimitExceededException" in reply:
                limited += 1
            else:
                errors += 1
    out.put((latencies, limited, errors))


def _measure(url: str, samples: int) -> dict[str, list[float]]:
    conn = _connection(url)
    found: dict[str, list[float]] = {"/health": [], "DescribeMLModels": []}
    for _ in range(samples):
        t0 = time.perf_counter()
        conn.request("GET", "/health")
        response = conn.getresponse()
        response.read()
        found["/health"].append((time.perf_counter() - t0) * 1000)
        assert response.status == 200
        t0 = time.perf_counter()
        status, _ = _post(conn, "DescribeMLModels", {"Limit": 10})
        found["DescribeMLModels"].append((time.perf_counter() - t0) * 1000)
        assert status == 200
        time.sleep(0.005)
    return found


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> int:
    """Run the benchmark; print a Markdown table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--callers", type=int, default=4, help="concurrent costly Predict callers (default 4)"
    )
    parser.add_argument("--samples", type=int, default=300, help="requests of each cheap kind (default 300)")
    parser.add_argument("--text-kb", type=int, default=90, help="TEXT value size in KB (default 90)")
    parser.add_argument("--predict-workers", type=int, default=None, help="the server's --predict-workers")
    parser.add_argument("--predict-timeout", type=float, default=None, help="the server's --predict-timeout")
    args = parser.parse_args()
    extra: list[str] = []
    if args.predict_workers is not None:
        extra += ["--predict-workers", str(args.predict_workers)]
    if args.predict_timeout is not None:
        extra += ["--predict-timeout", str(args.predict_timeout)]

    tmp = Path(tempfile.mkdtemp(prefix="amlflow-hardening-"))
    proc, url = _start_server(tmp / "home", tmp / "server.log", extra)
    try:
        t0 = time.monotonic()
        _build_model(url, tmp / "home")
        print(
            f"server {url}; costly model ready in {time.monotonic() - t0:.1f} s; cpu count {os.cpu_count()}"
        )
        idle = _measure(url, args.samples)
        ctx = mp.get_context("spawn")
        queue: Any = ctx.Queue()
        stop = ctx.Event()
        callers = [
            ctx.Process(target=_caller, args=(url, args.text_kb, i, stop, queue), daemon=True)
            for i in range(args.callers)
        ]
        for c in callers:
            c.start()
        time.sleep(3.0)  # let every caller reach the server
        t_load = time.monotonic()
        loaded = _measure(url, args.samples)
        load_seconds = time.monotonic() - t_load
        stop.set()
        results = [queue.get(timeout=180) for _ in callers]
        for c in callers:
            c.join(30)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)

    print()
    print("| requests | load | n | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for label, found in (("idle", idle), (f"{args.callers} costly Predict callers", loaded)):
        for name, values in found.items():
            print(
                f"| {name} | {label} | {len(values)} | {_pct(values, 0.5):.2f} | {_pct(values, 0.99):.2f} "
                f"| {max(values):.2f} |"
            )
    predict = [ms for latencies, _, _ in results for ms in latencies]
    limited = sum(r[1] for r in results)
    errors = sum(r[2] for r in results)
    print(
        f"| Predict ({args.text_kb} KB TEXT, ngram 10 + osb 10) | {args.callers} callers | {len(predict)} "
        f"| {_pct(predict, 0.5):.2f} | {_pct(predict, 0.99):.2f} | {max(predict, default=float('nan')):.2f} |"
    )
    print()
    print(
        f"Predict during the {load_seconds:.1f} s of loaded sampling and around it: "
        f"{len(predict)} answered, {limited} LimitExceededException (over budget), {errors} other errors"
    )
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
