"""The ``amlflow`` command: a thin shell over the library.

Subcommands:

* ``amlflow serve`` — the AML-compatible endpoint (AWS JSON 1.1) on 127.0.0.1:8080 by default;
* ``amlflow version`` — print the version;
* ``amlflow operations`` — list the 28 AML operations and whether this endpoint supports them.

Every ``serve`` flag has an environment variable (flag wins): ``--home`` ``AMLFLOW_HOME``, ``--storage``
``AMLFLOW_STORAGE``, ``--storage-root`` ``AMLFLOW_STORAGE_ROOT``, ``--max-jobs`` ``AMLFLOW_MAX_JOBS``,
``--access-key-id`` ``AMLFLOW_ACCESS_KEY_ID``, ``--secret-access-key`` ``AMLFLOW_SECRET_ACCESS_KEY``,
``--log-level`` ``AMLFLOW_LOG_LEVEL``, ``--header-timeout`` ``AMLFLOW_HEADER_TIMEOUT``, ``--body-timeout``
``AMLFLOW_BODY_TIMEOUT``, ``--keep-alive-timeout`` ``AMLFLOW_KEEP_ALIVE_TIMEOUT``, ``--max-connections``
``AMLFLOW_MAX_CONNECTIONS``, ``--predict-workers`` ``AMLFLOW_PREDICT_WORKERS``, ``--predict-timeout``
``AMLFLOW_PREDICT_TIMEOUT``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from amlflow.server.connections import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEP_ALIVE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
)
from amlflow.server.predict import DEFAULT_PREDICT_TIMEOUT, DEFAULT_PREDICT_WORKERS

__all__ = ["build_parser", "main"]

SERVE_EPILOG = """\
examples:
  amlflow serve                                  # http://127.0.0.1:8080, state under AMLFLOW_HOME
  amlflow serve --port 0                         # any free port; the URL is printed on stdout
  amlflow serve --storage s3                     # s3:// URIs through boto3 (AWS_ENDPOINT_URL_S3 honoured)
  AMLFLOW_ACCESS_KEY_ID=AKID AMLFLOW_SECRET_ACCESS_KEY=secret amlflow serve   # require SigV4

then point unmodified boto3 / AWS CLI code at it:
  export AWS_ENDPOINT_URL_MACHINE_LEARNING=http://127.0.0.1:8080
  aws machinelearning describe-ml-models --endpoint-url http://127.0.0.1:8080

SIGTERM/SIGINT: stop accepting, finish open requests, wait up to --shutdown-timeout for running jobs;
jobs still running then are resumed or marked FAILED by the next server on the same home.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``amlflow`` (all subcommands)."""
    from amlflow import __version__

    parser = argparse.ArgumentParser(
        prog="amlflow",
        description="amlflow: the open, local successor to Amazon Machine Learning.",
    )
    parser.add_argument("--version", action="version", version=f"amlflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the AML-compatible HTTP endpoint (AWS JSON 1.1, boto3 / AWS CLI compatible)",
        description="Run the Amazon ML-compatible endpoint: POST / with X-Amz-Target "
        "AmazonML_20141212.<Operation>; GET /health for status.",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    env = os.environ.get
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1, this machine only; 0.0.0.0 for all)",
    )
    serve.add_argument(
        "--port",
        type=int,
        default=8080,
        help="TCP port (default: 8080; 0 picks a free port and prints the URL)",
    )
    serve.add_argument(
        "--home",
        type=Path,
        default=None,
        help="amlflow home: entity database, datasource caches, models "
        "(env AMLFLOW_HOME, default ~/.amlflow)",
    )
    serve.add_argument(
        "--storage",
        choices=("local", "s3"),
        default=None,
        help="where s3:// URIs live: 'local' maps s3://bucket/key to <storage-root>/bucket/key; "
        "'s3' uses boto3 and honours AWS_ENDPOINT_URL_S3 (env AMLFLOW_STORAGE, default local)",
    )
    serve.add_argument(
        "--storage-root",
        type=Path,
        default=None,
        help="root directory of local storage (env AMLFLOW_STORAGE_ROOT, default <home>/s3)",
    )
    serve.add_argument(
        "--max-jobs",
        type=int,
        default=None,
        help="jobs (datasource, model, evaluation, batch prediction) run at once, 1-25 "
        "(env AMLFLOW_MAX_JOBS, default 2)",
    )
    serve.add_argument(
        "--access-key-id",
        default=env("AMLFLOW_ACCESS_KEY_ID"),
        help="require AWS Signature V4 with this access key id (env AMLFLOW_ACCESS_KEY_ID); "
        "without keys any request is accepted, like moto",
    )
    serve.add_argument(
        "--secret-access-key",
        default=env("AMLFLOW_SECRET_ACCESS_KEY"),
        help="the secret for --access-key-id (env AMLFLOW_SECRET_ACCESS_KEY; prefer the "
        "variable: command lines are visible to other users)",
    )
    serve.add_argument(
        "--log-level",
        default=env("AMLFLOW_LOG_LEVEL", "info"),
        choices=("debug", "info", "warning", "error", "critical"),
        help="log level of the JSON-lines log on stderr, one line per request with its "
        "request id, operation, status and duration (env AMLFLOW_LOG_LEVEL, default info)",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        default=1024 * 1024,
        help="largest accepted request body (default 1048576); larger: 413",
    )
    serve.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for running jobs on SIGTERM (default 30)",
    )
    serve.add_argument(
        "--public-url",
        "--advertised-url",
        dest="advertised_url",
        default=None,
        help="URL to report as the realtime EndpointUrl, e.g. the load balancer in front of the "
        "replicas (default: this replica's own http://<bound host>:<port>)",
    )
    shared = serve.add_argument_group("shared state (replicas; docs/shared-state.md)")
    shared.add_argument(
        "--database-url",
        default=None,
        help="state database: postgresql://user:pass@host:port/db shared by every replica "
        "(env AMLFLOW_DATABASE_URL; default SQLite <home>/state.db; prefer the variable for passwords)",
    )
    shared.add_argument(
        "--artifact-root",
        default=None,
        help="where models, encoded datasources, reports and job logs go: a folder or "
        "s3://bucket/prefix/ every replica reads (env AMLFLOW_ARTIFACT_ROOT, default <home>)",
    )
    shared.add_argument(
        "--dask-address",
        default=None,
        help="a Dask scheduler, e.g. tcp://scheduler:8786: evaluations and batch predictions are scored "
        "by partition on its workers, which read models and tables from the artifact root "
        "(env AMLFLOW_DASK_ADDRESS; needs amlflow[dask]; default: in-process)",
    )

    limits = serve.add_argument_group("connections")
    limits.add_argument(
        "--header-timeout",
        type=float,
        default=_env_number("AMLFLOW_HEADER_TIMEOUT", float, DEFAULT_HEADER_TIMEOUT),
        help="seconds a client has to send a request's headers; then the connection is closed "
        f"(env AMLFLOW_HEADER_TIMEOUT, default {DEFAULT_HEADER_TIMEOUT:g})",
    )
    limits.add_argument(
        "--body-timeout",
        type=float,
        default=_env_number("AMLFLOW_BODY_TIMEOUT", float, DEFAULT_BODY_TIMEOUT),
        help="seconds to receive a request's body once its headers are in; then 408 "
        f"(env AMLFLOW_BODY_TIMEOUT, default {DEFAULT_BODY_TIMEOUT:g})",
    )
    limits.add_argument(
        "--keep-alive-timeout",
        type=int,
        default=_env_number("AMLFLOW_KEEP_ALIVE_TIMEOUT", int, DEFAULT_KEEP_ALIVE_TIMEOUT),
        help="seconds an idle kept-alive connection stays open "
        f"(env AMLFLOW_KEEP_ALIVE_TIMEOUT, default {DEFAULT_KEEP_ALIVE_TIMEOUT})",
    )
    limits.add_argument(
        "--max-connections",
        type=int,
        default=_env_number("AMLFLOW_MAX_CONNECTIONS", int, DEFAULT_MAX_CONNECTIONS),
        help="concurrent connections before new requests get 503; 0: no cap "
        f"(env AMLFLOW_MAX_CONNECTIONS, default {DEFAULT_MAX_CONNECTIONS})",
    )

    predict = serve.add_argument_group("real-time Predict")
    predict.add_argument(
        "--predict-workers",
        type=int,
        default=_env_number("AMLFLOW_PREDICT_WORKERS", int, DEFAULT_PREDICT_WORKERS),
        help="threads that run Predict, apart from other operations (env AMLFLOW_PREDICT_WORKERS, "
        f"default {DEFAULT_PREDICT_WORKERS}; 1: most cheap predictions per second)",
    )
    predict.add_argument(
        "--predict-timeout",
        type=float,
        default=_env_number("AMLFLOW_PREDICT_TIMEOUT", float, DEFAULT_PREDICT_TIMEOUT),
        help="seconds a Predict may take, queueing included; then LimitExceededException "
        f"(env AMLFLOW_PREDICT_TIMEOUT, default {DEFAULT_PREDICT_TIMEOUT:g})",
    )

    sub.add_parser("version", help="print the version")
    sub.add_parser("operations", help="list the AML operations and their support here")
    return parser


def _env_number(name: str, kind: type[float] | type[int], default: float) -> float:
    """A number from the environment, or ``default`` (a bad value is reported by argparse's type)."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return kind(raw)
    except ValueError:
        raise SystemExit(f"amlflow: {name}: expected a number, got {raw!r}") from None


def _settings_from(args: argparse.Namespace) -> Any:
    from amlflow.settings import Settings

    overrides: dict[str, Any] = {}
    for name in (
        "home",
        "storage",
        "storage_root",
        "max_jobs",
        "database_url",
        "artifact_root",
        "dask_address",
    ):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


def _serve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from pydantic import ValidationError

    from amlflow.server.connections import ConnectionLimits
    from amlflow.server.logs import configure_logging
    from amlflow.server.serve import ServeOptions, run

    if bool(args.access_key_id) != bool(args.secret_access_key):
        parser.error("--access-key-id and --secret-access-key: give both or neither")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port: expected 0-65535, got {args.port}")
    if args.predict_workers < 1:
        parser.error(f"--predict-workers: expected at least 1, got {args.predict_workers}")
    if not args.predict_timeout > 0:
        parser.error(f"--predict-timeout: expected a positive number of seconds, got {args.predict_timeout}")
    if args.max_body_bytes < 1:
        parser.error(f"--max-body-bytes: expected a positive number, got {args.max_body_bytes}")
    try:
        limits = ConnectionLimits(
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            keep_alive_timeout=args.keep_alive_timeout,
            max_connections=args.max_connections or None,
        )
    except ValueError as exc:
        parser.error(f"--{str(exc).split(':')[0].replace('_', '-')}: {str(exc).partition(': ')[2]}")
    try:
        settings = _settings_from(args)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        parser.error(f"--{field.replace('_', '-')}: {first['msg']}")
    configure_logging(args.log_level)
    credentials = {args.access_key_id: args.secret_access_key} if args.access_key_id else {}
    options = ServeOptions(
        host=args.host,
        port=args.port,
        credentials=credentials,
        max_body_bytes=args.max_body_bytes,
        shutdown_timeout=args.shutdown_timeout,
        advertised_url=args.advertised_url,
        log_level=args.log_level,
        limits=limits,
        predict_workers=args.predict_workers,
        predict_timeout=args.predict_timeout,
    )
    try:
        run(settings, options)
    except OSError as exc:
        print(
            f"amlflow serve: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr
        )
        return 1
    return 0


def _operations() -> int:
    from amlflow.server.compat import OPERATIONS

    width = max(len(name) for name in OPERATIONS)
    for name, entry in OPERATIONS.items():
        print(f"{name:<{width}}  {entry.support:<13}  {entry.note}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``amlflow`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args, parser)
    if args.command == "version":
        from amlflow import __version__

        print(__version__)
        return 0
    if args.command == "operations":
        return _operations()
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
