"""How long an ``amlflow serve`` outage the wine pipeline survives (issue 8: "the longest server outage a
flow survives").

What it does, for each outage length (``--outages``, default 5 15 30 45 60 75 90 s), one after the other,
with real processes and real HTTP on loopback only:

1. starts ``amlflow serve --port 0`` in its own process on a fresh home and storage root (local storage);
2. runs the red-wine pipeline (``flows.wine_pipeline``, ``--variant``, default ``regression``) in a child
   process against it: ``AWS_ENDPOINT_URL_MACHINE_LEARNING`` = the server's URL, ``AMLFLOW_STORAGE=local``
   and the server's ``AMLFLOW_STORAGE_ROOT`` (the flow's uploads land where the server reads), on one
   Prefect test server (``prefect_test_harness``) started by this script and shared by every run;
3. at the kill point (``--kill-at``) sends the server ``--signal`` (TERM: graceful, KILL: abrupt), waits
   for it to exit, waits until the outage length has passed since the signal, then starts
   ``amlflow serve`` again on the same port, home and storage root (so the entity state survives; jobs
   that were interrupted are queued again by the new server);
4. waits for the flow and records whether it completed, its wall time, how many task retries it used, and
   on failure the flow's final error line.

Kill points:

* ``upload`` (default): when the child logs that ``upload_inputs`` finished, i.e. just before the flow's
  three concurrent ``CreateDataSourceFromS3`` calls, so the create tasks meet the outage and must ride it
  on ``tasks._common.RETRY_POLICY`` (6 retries, 1-2-4-8-16-32 s, scaled by ``AMLFLOW_TASK_RETRY_BASE``:
  ``--retry-base``) — the tightest case the retry policy has to cover;
* ``datasource``: once the server lists a datasource (this script polls ``DescribeDataSources``): the
  creates are done and the flow is mostly in its ``wait_for_*`` tasks, which poll through outages until
  their own deadline;
* a number ``S``: ``S`` seconds after the child process started.

"unreachable" is the measured time from the signal until the new server printed its URL (the outage
length plus the old server's exit and the new one's start-up). A run that fails before the restart is
stopped there: its failure time after the signal is the flow's measured tolerance. Every run is bounded
(``--run-timeout``) and the script stops by itself.

Usage:
    python bench/outage_bench.py [--outages 5 15 30 45 60 75 90] [--signal TERM|KILL]
                                 [--kill-at upload|datasource|SECONDS] [--variant regression]
                                 [--retry-base 1] [--no-baseline] [--keep]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
RESULT_MARK = "OUTAGE_BENCH_RESULT"
UPLOAD_DONE = re.compile(r"Task run 'upload_inputs-\w+' - Finished in state Completed")
RETRY = re.compile(r"Task run '(\w+?)-(\w+)' - Task run failed with .* - Retry (\d+)/(\d+) will start")
EXHAUSTED = re.compile(r"Task run '(\w+?)-\w+' - Task run failed with .* - Retries are exhausted")
WAIT_OUTAGE = "polling on until the deadline"
DEFAULT_OUTAGES = [5.0, 15.0, 30.0, 45.0, 60.0, 75.0, 90.0]


# --------------------------------------------------------------------------- the flow, in the child


def child(variant: str, output_dir: str) -> int:
    """Run the wine pipeline once (environment: endpoint, storage, Prefect API); print one result line."""
    sys.path[:0] = [str(REPO), str(REPO / "src")]
    from flows.wine_pipeline import wine_pipeline

    t0 = time.perf_counter()
    try:
        result = wine_pipeline(variant=variant, output_dir=output_dir)
    except Exception as exc:
        message = " ".join(str(exc).split())
        print(
            f"{RESULT_MARK} error {time.perf_counter() - t0:.2f} {type(exc).__name__}: {message}", flush=True
        )
        return 1
    ev = result["evaluation"]
    print(
        f"{RESULT_MARK} ok {time.perf_counter() - t0:.2f} {ev['metric_name']} {ev['metric']:.4f}", flush=True
    )
    return 0


# --------------------------------------------------------------------------- the server


def _env_with_repo(env: dict[str, str]) -> dict[str, str]:
    """``env`` with this checkout's ``src/`` and root first on ``PYTHONPATH`` (the code that runs)."""
    paths = [str(REPO / "src"), str(REPO), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    return {**env, "PYTHONPATH": os.pathsep.join(paths)}


class Server:
    """``amlflow serve`` on one home and storage root; restartable on the port it got first."""

    def __init__(self, home: Path, root: Path, log_path: Path) -> None:
        self.home = home
        self.root = root
        self.log_path = log_path
        self.port = 0
        self.url = ""
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> float:
        """Start it (port 0 the first time, then the same port); return when it printed its URL."""
        cmd = [
            sys.executable,
            "-m",
            "amlflow.cli",
            "serve",
            "--port",
            str(self.port),
            "--home",
            str(self.home),
            "--storage",
            "local",
            "--storage-root",
            str(self.root),
            "--log-level",
            "warning",
            "--shutdown-timeout",
            "20",
        ]
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=_env_with_repo(dict(os.environ))
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:(\d+))", line)
        if not match:
            self.proc.kill()
            self.proc.wait(30)
            raise SystemExit(f"amlflow serve did not start ({line.strip()!r}); see {self.log_path}")
        self.url, self.port = match.group(1), int(match.group(2))
        return time.monotonic()

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` and wait for the process to exit (a graceful stop lets jobs finish, ≤ 20 s)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None


# --------------------------------------------------------------------------- one run


@dataclass
class ChildWatch:
    """What the child's output said (read in a thread while the child runs)."""

    upload_done: threading.Event = field(default_factory=threading.Event)
    retries: dict[str, int] = field(default_factory=dict)
    retried_runs: dict[str, set[str]] = field(default_factory=dict)
    allowed: int = 0
    exhausted: set[str] = field(default_factory=set)
    wait_outages: int = 0
    result: str = ""
    last_error_line: str = ""

    def read(self, stream: IO[str], log: IO[str]) -> None:
        for line in stream:
            log.write(line)
            log.flush()
            if UPLOAD_DONE.search(line):
                self.upload_done.set()
            if match := RETRY.search(line):
                task, n = match.group(1), int(match.group(3))
                self.retries[task] = max(self.retries.get(task, 0), n)
                self.retried_runs.setdefault(task, set()).add(match.group(2))
                self.allowed = int(match.group(4))
            if match := EXHAUSTED.search(line):
                self.exhausted.add(match.group(1))
            if WAIT_OUTAGE in line:
                self.wait_outages += 1
            if line.startswith(RESULT_MARK):
                self.result = line.strip()
            elif "Error" in line or "Exception" in line:
                self.last_error_line = line.strip()


@dataclass
class Outcome:
    """One run's figures."""

    outage: float | None
    completed: bool = False
    note: str = ""
    wall: float = float("nan")
    unreachable: float | None = None
    at_kill: str = ""
    exit_s: float = float("nan")
    startup_s: float = float("nan")
    failed_after_kill: float | None = None
    metric: str = ""
    error: str = ""
    retries: dict[str, int] = field(default_factory=dict)
    retried_runs: dict[str, int] = field(default_factory=dict)
    allowed: int = 0
    exhausted: set[str] = field(default_factory=set)
    wait_outages: int = 0


def _ml_client(url: str) -> Any:
    """A boto3 client for the server (no retries: the poll loop is the retry)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "machinelearning",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=2, read_timeout=10),
    )


def _datasource_statuses(ml: Any) -> list[str]:
    """The statuses of the datasources the server lists ([] before the first one, or on an error)."""
    try:
        return [str(ds["Status"]) for ds in ml.describe_data_sources(Limit=10)["Results"]]
    except Exception:
        return []


def run_once(outage: float | None, args: argparse.Namespace, work: Path, api_url: str, index: int) -> Outcome:
    """One flow run with one outage (``None``: no outage, the baseline)."""
    run_dir = work / f"run-{index}"
    run_dir.mkdir(parents=True)
    server = Server(run_dir / "home", run_dir / "s3", run_dir / "server.log")
    server.start()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AMLFLOW_", "AWS_ENDPOINT_URL", "PREFECT_API_"))
    }
    env.update(
        AWS_ENDPOINT_URL_MACHINE_LEARNING=server.url,
        AMLFLOW_TARGET="endpoint",
        AMLFLOW_STORAGE="local",
        AMLFLOW_STORAGE_ROOT=str(server.root),
        AMLFLOW_HOME=str(run_dir / "client-home"),  # never the server's home
        PREFECT_API_URL=api_url,
        PYTHONUNBUFFERED="1",
    )
    env = _env_with_repo(env)
    if args.retry_base is not None:
        env["AMLFLOW_TASK_RETRY_BASE"] = str(args.retry_base)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(run_dir / "out"), "--variant"]
    watch = ChildWatch()
    outcome = Outcome(outage)
    t_start = time.monotonic()
    with (run_dir / "flow.log").open("w") as log:
        proc = subprocess.Popen(
            [*cmd, args.variant], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        assert proc.stdout is not None
        reader = threading.Thread(target=watch.read, args=(proc.stdout, log), daemon=True)
        reader.start()
        try:
            if outage is not None:
                _outage(proc, server, watch, outage, args, outcome, t_start)
            try:
                proc.wait(max(1.0, args.run_timeout - (time.monotonic() - t_start)))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
                outcome.note = outcome.note or f"flow still running after {args.run_timeout:.0f} s: killed"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
            reader.join(30)
            server.signal(signal.SIGTERM)
    outcome.wall = time.monotonic() - t_start
    outcome.retries, outcome.exhausted, outcome.wait_outages = (
        watch.retries,
        watch.exhausted,
        watch.wait_outages,
    )
    outcome.retried_runs = {task: len(runs) for task, runs in watch.retried_runs.items()}
    outcome.allowed = watch.allowed
    parts = watch.result.split(" ", 3)
    if len(parts) >= 3 and parts[1] == "ok" and proc.returncode == 0:
        outcome.completed = True
        outcome.wall = float(parts[2])
        outcome.metric = parts[3] if len(parts) > 3 else ""
    elif len(parts) >= 4 and parts[1] == "error":
        outcome.wall = float(parts[2])
        outcome.error = parts[3]
    else:
        outcome.error = watch.last_error_line or f"child exited {proc.returncode} with no result line"
    return outcome


def _outage(
    proc: subprocess.Popen[str],
    server: Server,
    watch: ChildWatch,
    outage: float,
    args: argparse.Namespace,
    outcome: Outcome,
    t_start: float,
) -> None:
    """Wait for the kill point, take the server down for ``outage`` seconds, start it again."""
    deadline = t_start + 180.0  # the kill point comes within seconds; this only bounds a broken run
    ml = _ml_client(server.url) if args.kill_at == "datasource" else None
    while proc.poll() is None and time.monotonic() < deadline:
        if args.kill_at == "upload":
            if watch.upload_done.wait(0.01):
                break
        elif args.kill_at == "datasource":
            if statuses := _datasource_statuses(ml):
                outcome.at_kill = f"datasources at the kill: {', '.join(sorted(statuses))}"
                break
            time.sleep(0.02)
        else:
            if time.monotonic() - t_start >= float(args.kill_at):
                break
            time.sleep(0.01)
    if proc.poll() is not None or time.monotonic() >= deadline:
        outcome.note = "the flow ended before the kill point: no outage measured"
        return
    sig = signal.Signals[f"SIG{args.signal}"]
    t_kill = time.monotonic()
    server.signal(sig)
    outcome.exit_s = time.monotonic() - t_kill
    while time.monotonic() < t_kill + outage:
        if proc.poll() is not None:  # the flow gave up during the outage
            outcome.failed_after_kill = time.monotonic() - t_kill
            return
        time.sleep(0.05)
    t_restart = time.monotonic()
    t_up = server.start()
    outcome.startup_s = t_up - t_restart
    outcome.unreachable = t_up - t_kill


# --------------------------------------------------------------------------- report


def _retries(outcome: Outcome) -> str:
    if not outcome.retries:
        return "no task retried"
    used = ", ".join(
        f"{task} x{outcome.retried_runs.get(task, 1)} up to {n}/{outcome.allowed}"
        for task, n in sorted(outcome.retries.items())
    )
    return f"retries: {used}" + (
        f"; exhausted: {', '.join(sorted(outcome.exhausted))}" if outcome.exhausted else ""
    )


def line(outcome: Outcome) -> str:
    """One printed line per run."""
    head = "no outage        " if outcome.outage is None else f"outage {outcome.outage:5.0f} s "
    if outcome.unreachable is not None:
        down = (
            f"unreachable {outcome.unreachable:5.1f} s (old server exited in {outcome.exit_s:.1f} s, "
            f"new one up in {outcome.startup_s:.1f} s)"
        )
    elif outcome.failed_after_kill is not None:
        down = f"flow failed {outcome.failed_after_kill:5.1f} s after the kill, no restart"
    else:
        down = ""
    verdict = "completed" if outcome.completed else "FAILED"
    text = f"{head}| {verdict:9s} | flow {outcome.wall:6.1f} s"
    if down:
        text += f" | {down}"
    if outcome.metric:
        text += f" | {outcome.metric}"
    if outcome.at_kill:
        text += f" | {outcome.at_kill}"
    if outcome.outage is not None:
        text += f" | {_retries(outcome)}; waits that polled through it: {outcome.wait_outages}"
    if outcome.note:
        text += f" | {outcome.note}"
    if not outcome.completed and outcome.error:
        text += f"\n    error: {outcome.error[:400]}"
    return text


def main() -> int:
    """Run the benchmark; print one line per outage length and the longest outage survived."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--outages",
        type=float,
        nargs="+",
        default=DEFAULT_OUTAGES,
        metavar="SECONDS",
        help="outage lengths in seconds (default: 5 15 30 45 60 75 90)",
    )
    parser.add_argument("--signal", choices=["TERM", "KILL"], default="TERM", help="how the server dies")
    parser.add_argument(
        "--kill-at",
        default="upload",
        help="upload (default: before the datasource creates), datasource (once one is listed), or SECONDS "
        "after the flow process started",
    )
    parser.add_argument("--variant", default="regression", choices=["regression", "binary", "multiclass"])
    parser.add_argument(
        "--retry-base", type=float, default=None, help="AMLFLOW_TASK_RETRY_BASE for the flow (default: 1)"
    )
    parser.add_argument("--run-timeout", type=float, default=420.0, help="bound of one run in seconds")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run without an outage")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs of every run)")
    parser.add_argument("--child", metavar="OUTPUT_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.variant, args.child)
    if args.kill_at not in ("upload", "datasource"):
        try:
            float(args.kill_at)
        except ValueError:
            parser.error(f"--kill-at: upload, datasource or a number of seconds, got {args.kill_at!r}")

    work = Path(tempfile.mkdtemp(prefix="amlflow-outage-"))
    # One Prefect test server for every run, its state under the work folder; no telemetry.
    os.environ["PREFECT_HOME"] = str(work / "prefect-home")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    base = args.retry_base if args.retry_base is not None else 1.0
    delays = "-".join(f"{base * 2**r:g}" for r in range(6))
    print(
        f"wine {args.variant} flow vs amlflow serve outages; signal SIG{args.signal}, "
        f"kill at {args.kill_at}; "
        f"task retries 6 ({delays} s); cpu count {os.cpu_count()}; work folder {work}",
        flush=True,
    )
    outcomes: list[Outcome] = []
    t_bench = time.monotonic()
    harness: Any = prefect_test_harness(server_startup_timeout=120)
    try:
        with harness:
            api_url = str(PREFECT_API_URL.value())
            plan: list[float | None] = ([] if args.no_baseline else [None]) + list(args.outages)
            for index, outage in enumerate(plan):
                outcome = run_once(outage, args, work, api_url, index)
                outcomes.append(outcome)
                print(line(outcome), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    measured = [o for o in outcomes if o.outage is not None and not o.note]
    survived = [o.outage for o in measured if o.completed and o.outage is not None]
    longest = max(survived) if survived else 0.0
    failed = [o.outage for o in measured if not o.completed and o.outage is not None]
    shortest_failed = f"; shortest outage failed: {min(failed):.0f} s" if failed else ""
    print(f"bench took {time.monotonic() - t_bench:.0f} s{shortest_failed}")
    print(
        f"longest outage survived: {longest:.0f} s (signal SIG{args.signal}, kill at {args.kill_at}, "
        f"retry base {base:g} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
