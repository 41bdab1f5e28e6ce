"""Kaggle "Digit Recognizer" (MNIST) as Amazon ML ran it — the main demo.

``python -m flows.mnist_pipeline`` runs on the repo's real sample (5,000 training digits, 1,000 test
digits) with the embedded defaults: ephemeral Prefect, in-process AML service, local storage, no
credentials, no network. Point it at the full Kaggle files with ``--train`` / ``--test`` (and
``--test-labels`` to score the submission).

The AML configuration: 70/30 sequential split of ``train.csv``; MULTICLASS; every pixel CATEGORICAL in the
training schema with recipe ``ALL_CATEGORICAL``; ``sgd.maxPasses=10``, ``sgd.l2RegularizationAmount=1e-5``,
``sgd.shuffleType=auto``, 100 MiB model cap; batch prediction of ``test.csv`` whose schema types the pixels
NUMERIC (as AML accepted). Then a Kaggle submission ``ImageId,Label`` and, with labels, its accuracy.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from flows._runner import print_run_footer
from flows.pipeline import aml_pipeline, repo_path
from tasks.reports import kaggle_submission

__all__ = ["MNIST_PARAMETERS", "mnist_pipeline"]

MNIST_PARAMETERS: dict[str, str] = {
    "sgd.maxPasses": "10",
    "sgd.l2RegularizationAmount": "1e-5",
    "sgd.shuffleType": "auto",
    "sgd.maxMLModelSizeInBytes": str(100 * 1024 * 1024),
}


@flow(name="mnist-pipeline", log_prints=True)
def mnist_pipeline(
    train: str | None = None,
    test: str | None = None,
    test_labels: str | None = None,
    parameters: dict[str, str] | None = None,
    train_percent: int = 70,
    bucket: str = "amlflow",
    output_dir: str = "amlflow-output",
    name: str = "mnist",
    salt: str = "",
    endpoint_url: str | None = None,
) -> dict[str, Any]:
    """Kaggle MNIST end to end: datasources, MULTICLASS model, evaluation ∥ batch prediction, submission.

    Args:
        train: Kaggle ``train.csv`` (label + 784 pixels, header); default: the repo's 5,000-row sample.
        test: Kaggle ``test.csv`` (784 pixels, header); default: the repo's 1,000-row sample.
        test_labels: ``ImageId,Label`` answers for ``test`` (default: the sample's; pass ``""`` for none).
        parameters: AML training parameters (default: AML's MNIST run, see ``MNIST_PARAMETERS``).
        train_percent: training share of the sequential split.
        bucket: S3 bucket for inputs and outputs.
        output_dir: local folder for reports, the batch output copy and ``submission.csv``.
        name: case name (S3 prefix, entity names).
        salt: change to force new AML entities.
        endpoint_url: an AML endpoint (default: environment, else embedded).

    Returns:
        The pipeline summary plus ``submission`` (path, rows, accuracy).
    """
    sample = train is None and test is None
    train_path = repo_path(train, "data/mnist-sample/train.csv.gz")
    test_path = repo_path(test, "data/mnist-sample/test.csv.gz")
    labels = repo_path(test_labels, "data/mnist-sample/test_labels.csv" if sample else None) or None
    assert train_path is not None and test_path is not None
    result = aml_pipeline(
        name=name,
        train_data=train_path,
        data_schema=str(repo_path("schemas/mnist-train.csv.schema")),
        model_type="MULTICLASS",
        batch_data=test_path,
        batch_schema=str(repo_path("schemas/mnist-test.csv.schema")),
        recipe=repo_path("recipes/mnist.recipe.json"),
        parameters=parameters or MNIST_PARAMETERS,
        train_percent=train_percent,
        bucket=bucket,
        output_dir=output_dir,
        salt=salt,
        endpoint_url=endpoint_url,
    )
    result["submission"] = kaggle_submission(
        result["batch"]["local_files"],
        f"{result['output_dir']}/submission.csv",
        test_labels=labels,
        case="mnist",
    )
    sub = result["submission"]
    print(
        f"Kaggle submission: {sub['path']} ({sub['rows']} rows)"
        + (f", accuracy {sub['accuracy']:.4f}" if sub["accuracy"] is not None else "")
    )
    result["flow_run_id"] = str(flow_run.get_id())
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line: ``python -m flows.mnist_pipeline [--train F --test F --test-labels F]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", help="Kaggle train.csv (default: the repo's sample)")
    parser.add_argument("--test", help="Kaggle test.csv (default: the repo's sample)")
    parser.add_argument("--test-labels", help="ImageId,Label answers for --test (optional)")
    parser.add_argument("--output-dir", default="amlflow-output")
    parser.add_argument("--bucket", default="amlflow")
    parser.add_argument("--endpoint-url", help="an amlflow serve / AML endpoint (default: embedded)")
    parser.add_argument(
        "--parameters", help='JSON object of sgd.* parameters, e.g. \'{"sgd.maxPasses": "5"}\''
    )
    args = parser.parse_args(argv)
    result = mnist_pipeline(
        train=args.train,
        test=args.test,
        test_labels=args.test_labels,
        output_dir=args.output_dir,
        bucket=args.bucket,
        endpoint_url=args.endpoint_url,
        parameters=json.loads(args.parameters) if args.parameters else None,
    )
    ev = result["evaluation"]
    print(f"\nMNIST: {ev['metric_name']} {ev['metric']:.4f} (baseline {_fmt(ev['baseline'])})")
    print(f"Kaggle submission: {result['submission']['path']}")
    print_run_footer(result, result.get("flow_run_id"))
    return result


def _fmt(value: object) -> str:
    """A metric for people: 4 decimals, or as is when it is not a number (no baseline from the back end)."""
    return f"{value:.4f}" if isinstance(value, int | float) else str(value)


if __name__ == "__main__":
    main()
