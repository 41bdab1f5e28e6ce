"""Real-time ``Predict`` throughput and latency through boto3 on loopback, for the banking model.

What it does:

1. starts ``amlflow serve --port 0`` in its own process (fresh home under a temp dir, per-endpoint rate
   limit off) — or uses ``--url`` of a running server;
2. builds the AWS banking sample model through the wire (datasource over ``banking.csv``, BINARY model
   with the sample's recipe), sets ``ScoreThreshold`` 0.77, creates the realtime endpoint;
3. drives ``Predict`` with records from ``banking-batch.csv`` from a pool of client *processes* (each with
   a few threads, each thread its own boto3 client), for a fixed time, after a warm-up;
4. prints throughput and latency percentiles measured three ways, next to AML's published limits:

   * **boto3 client-side**: wall time around ``ml.predict(...)`` in each client thread — includes
     boto3's own work (serialisation, SigV4 signing, parsing: several hundred µs of client CPU per call
     in CPython) and the queueing caused by clients and server sharing the machine's cores;
   * **server-side**: the ``duration_ms`` the server logs for each request (from the body read to the
     response object: protocol, validation, service, serialisation), read back from its log;
   * **raw HTTP** (``--raw``, default on): the same Predict requests sent as plain keep-alive HTTP/1.1
     POSTs from the same number of processes, i.e. without boto3's client overhead, to show the server's
     capacity on its own.

AML's limits: 200 requests/s per real-time endpoint (10,000/s per account), "most requests answered
within 100 ms". Target here: ≥ 1,000 requests/s with a pool of clients and p99 ≤ 10 ms.

Usage:
    python bench/predict_bench.py [--processes 3] [--threads 2] [--duration 10] [--url URL]
    python bench/predict_bench.py --transport-only   # the real app + uvicorn around a stub service that
                                                     # answers every Predict with a fixed BINARY
                                                     # prediction: the transport's own cost

The machine's cores are shared by clients and server: on 2 cores, client processes compete with the
server process, so client-side figures are a pessimistic bound.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "aml-banking"
AML_RPS_LIMIT = 200
AML_LATENCY_NOTE = "most within 100 ms"


def _client(url: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "machinelearning",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=Config(retries={"mode": "standard", "max_attempts": 1}, max_pool_connections=4),
    )


def _records(limit: int = 2000) -> list[dict[str, str]]:
    with (DATA / "banking-batch.csv").open(newline="") as f:
        return [dict(row) for _, row in zip(range(limit), csv.DictReader(f), strict=False)]


def _start_server(home: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("amlflow", path=str(Path(sys.executable).parent)) or "amlflow"
    cmd = [exe, "serve", "--port", "0", "--home", str(home), "--log-level", "info"]
    env = dict(os.environ, AMLFLOW_PREDICT_RATE_LIMIT="0")
    log = log_path.open("wb")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    match = re.search(r"(http://\S+)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}; see {log_path}")
    return proc, match.group(1)


class _StubService:
    """Answers Predict with a fixed BINARY prediction (transport-only measurement)."""

    def dispatch(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "Prediction": {
                "predictedLabel": "0",
                "predictedScores": {"0": 0.0123},
                "details": {"PredictiveModelType": "BINARY", "Algorithm": "SGD"},
            }
        }


def _stub_server_main() -> None:
    import uvicorn

    from amlflow.server.app import create_app
    from amlflow.server.logs import configure_logging
    from amlflow.server.runner import bind_socket, socket_url

    sock = bind_socket("127.0.0.1", 0)
    configure_logging("info")
    print(f"amlflow serving on {socket_url(sock)}", flush=True)
    config = uvicorn.Config(create_app(_StubService()), log_config=None, access_log=False, log_level="info")
    uvicorn.Server(config).run(sockets=[sock])


def _start_stub_server(log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    log = log_path.open("wb")
    proc = subprocess.Popen([sys.executable, __file__, "--stub-server"], stdout=subprocess.PIPE, stderr=log)
    assert proc.stdout is not None
    match = re.search(r"(http://\S+)", proc.stdout.readline().decode())
    if not match:
        proc.kill()
        raise SystemExit(f"stub server did not start; see {log_path}")
    return proc, match.group(1)


def _build_model(url: str, storage_root: Path | None) -> str:
    ml = _client(url)
    bucket_uri = "s3://aml-sample-data"
    if storage_root is not None:
        target = storage_root / "aml-sample-data"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(DATA / "banking.csv", target / "banking.csv")
    ml.create_data_source_from_s3(
        DataSourceId="ds-bench-banking",
        DataSpec={
            "DataLocationS3": f"{bucket_uri}/banking.csv",
            "DataSchema": (DATA / "banking.csv.schema").read_text(),
        },
        ComputeStatistics=True,
    )
    ml.create_ml_model(
        MLModelId="ml-bench-banking",
        MLModelType="BINARY",
        TrainingDataSourceId="ds-bench-banking",
        Recipe=(DATA / "recipe.json").read_text(),
    )
    ml.get_waiter("ml_model_available").wait(
        FilterVariable="TrainingDataSourceId",
        EQ="ds-bench-banking",
        WaiterConfig={"Delay": 0.5, "MaxAttempts": 1200},
    )
    ml.update_ml_model(MLModelId="ml-bench-banking", ScoreThreshold=0.77)
    info = ml.create_realtime_endpoint(MLModelId="ml-bench-banking")["RealtimeEndpointInfo"]
    for _ in range(600):
        if info.get("EndpointStatus") == "READY":
            break
        time.sleep(0.1)
        info = ml.get_ml_model(MLModelId="ml-bench-banking")["EndpointInfo"]
    if info.get("EndpointStatus") != "READY":
        raise SystemExit(f"endpoint not READY: {info}")
    return str(info["EndpointUrl"])


def _boto3_worker(args: tuple[str, str, int, float, float, list[dict[str, str]]]) -> dict[str, Any]:
    url, endpoint, threads, start_at, duration, records = args
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def run(offset: int) -> None:
        ml = _client(url)
        ml.predict(MLModelId="ml-bench-banking", Record=records[0], PredictEndpoint=endpoint)  # connect
        mine: list[float] = []
        i = offset
        while time.time() < start_at:
            time.sleep(0.001)
        stop = start_at + duration
        while time.time() < stop:
            t0 = time.perf_counter()
            try:
                ml.predict(
                    MLModelId="ml-bench-banking", Record=records[i % len(records)], PredictEndpoint=endpoint
                )
                mine.append(time.perf_counter() - t0)
            except Exception as exc:
                with lock:
                    errors.append(type(exc).__name__ + ": " + str(exc)[:200])
            i += 1
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=run, args=(k * 997,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return {"latencies": latencies, "errors": errors}


def _raw_worker(args: tuple[str, str, int, float, float, list[dict[str, str]]]) -> dict[str, Any]:
    url, endpoint, threads, start_at, duration, records = args
    parsed = urlparse(endpoint)
    bodies = [
        json.dumps({"MLModelId": "ml-bench-banking", "Record": r, "PredictEndpoint": endpoint}).encode()
        for r in records
    ]
    headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "AmazonML_20141212.Predict"}
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def run(offset: int) -> None:
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
        mine: list[float] = []
        i = offset
        while time.time() < start_at:
            time.sleep(0.001)
        stop = start_at + duration
        while time.time() < stop:
            t0 = time.perf_counter()
            conn.request("POST", "/", body=bodies[i % len(bodies)], headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            if resp.status == 200:
                mine.append(time.perf_counter() - t0)
            else:
                with lock:
                    errors.append(payload[:200].decode(errors="replace"))
            i += 1
        conn.close()
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=run, args=(k * 991,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return {"latencies": latencies, "errors": errors}


def _drive(
    worker: Any,
    url: str,
    endpoint: str,
    processes: int,
    threads: int,
    duration: float,
    records: list[dict[str, str]],
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    start_at = time.time() + 3.0  # let every process import boto3 and connect first
    with ctx.Pool(processes) as pool:
        results = pool.map(worker, [(url, endpoint, threads, start_at, duration, records)] * processes)
    latencies = sorted(x for r in results for x in r["latencies"])
    errors = [e for r in results for e in r["errors"]]
    return {"latencies": latencies, "errors": errors, "duration": duration, "start": start_at}


def _pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q / 100.0 * (len(sorted_values) - 1))))
    return sorted_values[k]


def _server_durations(log_path: Path, start: float, end: float) -> list[float]:
    from datetime import datetime

    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        if '"operation": "Predict"' not in line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        ts = datetime.fromisoformat(rec["ts"]).timestamp()
        if start <= ts <= end and rec.get("status") == 200:
            out.append(float(rec["duration_ms"]) / 1000.0)
    return sorted(out)


def _row(label: str, lat: list[float], duration: float, errors: int) -> str:
    rps = len(lat) / duration if duration else float("nan")
    return (
        f"| {label} | {len(lat):,} | {rps:,.0f} | {_pct(lat, 50) * 1000:.2f} | {_pct(lat, 99) * 1000:.2f} | "
        f"{(lat[-1] if lat else float('nan')) * 1000:.1f} | {errors} |"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running amlflow server (default: start one)")
    parser.add_argument("--processes", type=int, default=3, help="client processes (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="threads per client process (default 2)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement (default 10)")
    parser.add_argument("--no-raw", action="store_true", help="skip the raw-HTTP measurement")
    parser.add_argument(
        "--transport-only",
        action="store_true",
        help="measure the app and uvicorn around a stub service (no model)",
    )
    parser.add_argument("--stub-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stub_server:
        _stub_server_main()
        return 0

    workdir = Path(tempfile.mkdtemp(prefix="amlflow-predict-bench-"))
    log_path = workdir / "server.log"
    proc = None
    try:
        t0 = time.perf_counter()
        if args.transport_only:
            proc, url = _start_stub_server(log_path)
            endpoint = url
        else:
            if args.url:
                url, storage_root = args.url, None
            else:
                proc, url = _start_server(workdir / "home", log_path)
                storage_root = workdir / "home" / "s3"
            endpoint = _build_model(url, storage_root)
        build_s = time.perf_counter() - t0
        records = _records()
        what = "stub service (transport only)" if args.transport_only else "model built and endpoint READY"
        print(
            f"server {url}; {what} in {build_s:.1f} s; "
            f"{args.processes} client processes x {args.threads} threads, {args.duration:.0f} s each run; "
            f"cpu count {os.cpu_count()}"
        )
        warm = _client(url)
        for r in records[:200]:
            warm.predict(MLModelId="ml-bench-banking", Record=r, PredictEndpoint=endpoint)

        runs = [("boto3 clients (client-side)", _boto3_worker)]
        if not args.no_raw:
            runs.append(("raw HTTP keep-alive (client-side)", _raw_worker))
        print()
        print("| measurement | requests | requests/s | p50 ms | p99 ms | max ms | errors |")
        print("|---|---|---|---|---|---|---|")
        for label, worker in runs:
            res = _drive(worker, url, endpoint, args.processes, args.threads, args.duration, records)
            print(_row(label, res["latencies"], res["duration"], len(res["errors"])), flush=True)
            if proc is not None:
                time.sleep(0.5)
                server = _server_durations(log_path, res["start"], res["start"] + res["duration"])
                print(
                    _row(f"  same run, server-side ({label.split(' (')[0]})", server, res["duration"], 0),
                    flush=True,
                )
            if res["errors"]:
                print(f"  first error: {res['errors'][0]}")
        print(f"| AML published limit | | {AML_RPS_LIMIT} per endpoint | | | | {AML_LATENCY_NOTE} |")
        print()
        print(
            "client-side = wall time around each call in the client thread (includes boto3's own CPU work "
            "and core sharing with the server); server-side = the server's logged duration_ms per request."
        )
        return 0
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
