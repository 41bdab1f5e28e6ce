"""What the Dask tests share (issue 10): moto's S3 with the repository's MNIST sample, a 2-worker
``LocalCluster`` of processes started after it (the workers inherit the S3 environment), and the service
settings whose only store shared with the workers is that S3 (the artifact root ``s3://artifacts/x/``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest

from amlflow.service import distributed as dask_jobs
from amlflow.settings import Settings
from tests.s3 import moto_s3_server
from tests.server.aml_data import DATA

ROOT = "s3://artifacts/x/"
MNIST_PARAMETERS = {
    "sgd.maxPasses": "10",
    "sgd.l2RegularizationAmount": "1e-5",
    "sgd.shuffleType": "auto",
    "sgd.maxMLModelSizeInBytes": str(100 * 1024 * 1024),
}


@contextmanager
def mnist_s3(monkeypatch: pytest.MonkeyPatch, extra: Mapping[str, bytes] | None = None) -> Iterator[str]:
    """moto's S3 on loopback with buckets ``data`` and ``artifacts``, the sample's training file at
    ``s3://data/mnist/train.csv.gz`` and ``extra`` (key → bytes) in ``data``; set in the environment
    before any Dask worker starts."""
    with moto_s3_server(monkeypatch) as url:
        s3 = boto3.client("s3", endpoint_url=url)
        for bucket in ("data", "artifacts"):
            s3.create_bucket(Bucket=bucket)
        sample = (DATA / "mnist-sample" / "train.csv.gz").read_bytes()
        s3.put_object(Bucket="data", Key="mnist/train.csv.gz", Body=sample)
        for key, body in (extra or {}).items():
            s3.put_object(Bucket="data", Key=key, Body=body)
        yield url


@contextmanager
def local_cluster(n_workers: int = 2) -> Iterator[Any]:
    """A LocalCluster of ``n_workers`` processes (one thread each, dashboard on a free port); the
    service's cached clients are closed when it stops."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=n_workers, processes=True, threads_per_worker=1, dashboard_address=":0"
    ) as cluster:
        try:
            yield cluster
        finally:
            dask_jobs.close_clients()


def s3_settings(home: Path, db: Path, **extra: Any) -> Settings:
    """Service settings on S3 storage with the artifact root :data:`ROOT` and a SQLite state file."""
    return Settings(
        home=home,
        storage="s3",
        artifact_root=ROOT,
        database_url=f"sqlite:///{db}",
        job_poll_interval=0.2,
        **extra,
    )
