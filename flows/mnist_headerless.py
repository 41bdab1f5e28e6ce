"""MNIST, headerless variant: 784 numeric pixels then the label, no header line.

AML configuration: separate training and test datasources; recipe ``ALL_BINARY, ALL_CATEGORICAL,
quantile_bin(ALL_NUMERIC,50), lowercase(ALL_TEXT)``; ``sgd.maxPasses=100``,
``sgd.l2RegularizationAmount=1e-4``.
The test datasource is both evaluated and batch-predicted; the batch output's ``trueLabel`` column is read
back to score the accuracy (AML: about 91 %).
"""

from __future__ import annotations

import argparse
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from flows._runner import print_run_footer
from flows.pipeline import aml_pipeline, repo_path
from tasks.reports import accuracy_from_batch_output

__all__ = ["HEADERLESS_PARAMETERS", "mnist_headerless"]

HEADERLESS_PARAMETERS: dict[str, str] = {
    "sgd.maxPasses": "100",
    "sgd.l2RegularizationAmount": "1e-4",
    "sgd.shuffleType": "auto",
}


@flow(name="mnist-headerless", log_prints=True)
def mnist_headerless(
    train: str | None = None,
    test: str | None = None,
    parameters: dict[str, str] | None = None,
    bucket: str = "amlflow",
    output_dir: str = "amlflow-output",
    salt: str = "",
    endpoint_url: str | None = None,
) -> dict[str, Any]:
    """Headerless MNIST end to end, with the accuracy read back from the batch output.

    Args:
        train: ``train_data.csv`` (default: the repo's 5,000-row sample).
        test: ``test_data.csv`` with labels last (default: the repo's 1,000-row sample).
        parameters: AML training parameters (default: ``HEADERLESS_PARAMETERS``).
        bucket: S3 bucket.
        output_dir: local folder for reports and the batch output copy.
        salt: change to force new AML entities.
        endpoint_url: an AML endpoint (default: environment, else embedded).
    """
    test_path = str(repo_path(test, "data/mnist-sample/test_data.csv.gz"))
    result = aml_pipeline(
        name="mnist-headerless",
        train_data=str(repo_path(train, "data/mnist-sample/train_data.csv.gz")),
        data_schema=str(repo_path("schemas/mnist-headerless.csv.schema")),
        model_type="MULTICLASS",
        eval_data=test_path,
        batch_data=test_path,
        recipe=repo_path("recipes/mnist-headerless.recipe.json"),
        parameters=parameters or HEADERLESS_PARAMETERS,
        bucket=bucket,
        output_dir=output_dir,
        salt=salt,
        endpoint_url=endpoint_url,
    )
    result["accuracy"] = accuracy_from_batch_output(result["batch"]["local_files"], case="mnist-headerless")
    print(f"accuracy from the batch output's trueLabel column: {result['accuracy']['accuracy']:.4f}")
    result["flow_run_id"] = str(flow_run.get_id())
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Headerless MNIST on amlflow")
    parser.add_argument("--train")
    parser.add_argument("--test")
    parser.add_argument("--endpoint-url")
    args = parser.parse_args()
    outcome = mnist_headerless(train=args.train, test=args.test, endpoint_url=args.endpoint_url)
    print_run_footer(outcome, outcome.get("flow_run_id"))
