"""What the endpoint supports of Amazon ML's API, operation by operation, and how it differs from AWS.

This is the data behind ``docs/operations.md`` (written by ``scripts/gen_operations.py``, checked for
staleness by a test) and ``amlflow operations``. Every operation of botocore's model must have an entry.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GENERAL_DIFFERENCES", "OPERATIONS", "Support"]


@dataclass(frozen=True)
class Support:
    """One operation's support level and its differences from AWS.

    Attributes:
        support: ``supported`` or ``not supported``.
        note: the differences from Amazon ML (empty when it behaves the same).
    """

    support: str
    note: str = ""


_CREATE_DS = (
    "Asynchronous like AML: returns the id at once, the datasource goes PENDING → INPROGRESS → "
    "COMPLETED/FAILED in seconds instead of minutes. Reads `s3://` URIs from the configured storage "
    "(local root or S3 through boto3, `AWS_ENDPOINT_URL_S3` honoured). `DataRearrangement` "
    "(sequential and random splits, `complement`) as AML; statistics per `ComputeStatistics`."
)
_NOT_LOCAL_DB = (
    "Not supported locally: there is no Redshift/RDS to unload from. Answers `InvalidInputException` "
    "saying so; unload to CSV in S3 yourself and use `CreateDataSourceFromS3`."
)

OPERATIONS: dict[str, Support] = {
    "AddTags": Support("supported", "Tags are kept per entity; AML's limit of 50 tags per object applies."),
    "CreateBatchPrediction": Support(
        "supported",
        "Writes AML's layout: `<OutputUri>/batch-prediction/result/<id>-<file>.gz` and the manifest, "
        "uploaded whole or not at all. `TotalRecordCount` / `InvalidRecordCount` as AML.",
    ),
    "CreateDataSourceFromRDS": Support("not supported", _NOT_LOCAL_DB),
    "CreateDataSourceFromRedshift": Support("not supported", _NOT_LOCAL_DB),
    "CreateDataSourceFromS3": Support("supported", _CREATE_DS),
    "CreateEvaluation": Support(
        "supported",
        "`PerformanceMetrics.Properties` holds `BinaryAUC`, `MulticlassAvgFScore` (macro-F1) or "
        "`RegressionRMSE`. What AML showed only in its console (baseline, confusion matrix, thresholds, "
        "alerts) is kept as reports outside the API.",
    ),
    "CreateMLModel": Support(
        "supported",
        "SGD learners for BINARY / MULTICLASS / REGRESSION with AML's `sgd.*` parameters; `Recipe` or "
        "`RecipeUri` (neither: a suggested recipe, as AML). Reproducible with a fixed seed "
        "(`AMLFLOW_SEED`).",
    ),
    "CreateRealtimeEndpoint": Support(
        "supported",
        "`EndpointUrl` is this server's own URL (e.g. `http://127.0.0.1:8080`), not an amazonaws.com "
        "address; botocore sends `Predict` there (`switch_host_machinelearning`), so unmodified code works.",
    ),
    "DeleteBatchPrediction": Support(
        "supported", "Status becomes DELETED; output files are kept, as in AML."
    ),
    "DeleteDataSource": Support("supported", "Status becomes DELETED (irreversible), as in AML."),
    "DeleteEvaluation": Support("supported", "Status becomes DELETED (irreversible), as in AML."),
    "DeleteMLModel": Support("supported", "Status becomes DELETED (irreversible), as in AML."),
    "DeleteRealtimeEndpoint": Support("supported", "Returns `EndpointStatus` NONE at once."),
    "DeleteTags": Support("supported"),
    "DescribeBatchPredictions": Support(
        "supported", "Every `FilterVariable`, comparison operator, `Prefix`, `SortOrder` and `Limit` (1-100)."
    ),
    "DescribeDataSources": Support(
        "supported", "Every `FilterVariable`, comparison operator, `Prefix`, `SortOrder` and `Limit` (1-100)."
    ),
    "DescribeEvaluations": Support(
        "supported", "Every `FilterVariable`, comparison operator, `Prefix`, `SortOrder` and `Limit` (1-100)."
    ),
    "DescribeMLModels": Support(
        "supported", "Every `FilterVariable`, comparison operator, `Prefix`, `SortOrder` and `Limit` (1-100)."
    ),
    "DescribeTags": Support("supported"),
    "GetBatchPrediction": Support("supported", "`LogUri` points at a local log, not a presigned S3 URL."),
    "GetDataSource": Support(
        "supported", "`Verbose=True` adds `DataSourceSchema`. `LogUri` points at a local log."
    ),
    "GetEvaluation": Support("supported", "`LogUri` points at a local log."),
    "GetMLModel": Support(
        "supported",
        "`Verbose=True` adds `Recipe` and `Schema`. `EndpointInfo.EndpointUrl` is this server's URL.",
    ),
    "Predict": Support(
        "supported",
        "`PredictEndpoint` accepts this server's own URL although the model's `VipURL` pattern asks for "
        "an amazonaws.com address (the one deliberate validation exception). The per-endpoint limit "
        "(200 requests/s, `LimitExceededException` beyond) can be switched off for benchmarks.",
    ),
    "UpdateBatchPrediction": Support("supported"),
    "UpdateDataSource": Support("supported"),
    "UpdateEvaluation": Support("supported"),
    "UpdateMLModel": Support(
        "supported",
        "`ScoreThreshold` changes BINARY labels in later `Predict` calls and batch predictions, as in AML.",
    ),
}

GENERAL_DIFFERENCES: list[str] = [
    "Requests are validated against botocore's model on the server — required members, types, "
    "lengths, patterns and enums — which AWS did and botocore's client does only in part; "
    "failures are `InvalidInputException` naming the member and the constraint.",
    "Signature V4 is verified only when the server is started with access keys "
    "(`--access-key-id/--secret-access-key`); otherwise any credentials are accepted, like moto. "
    "Signature errors use AWS's codes: `MissingAuthenticationTokenException`, "
    "`IncompleteSignatureException`, `UnrecognizedClientException`, `InvalidSignatureException` "
    '(including "Signature expired" beyond 5 minutes of skew), all HTTP 400.',
    "Transport errors outside the model: `UnknownOperationException` (unknown `X-Amz-Target`), "
    "`SerializationException` (bad JSON), `RequestEntityTooLargeException` (HTTP 413, body over the "
    "limit, 1 MiB by default).",
    "Jobs run in seconds, not minutes; the number of concurrent jobs is `--max-jobs` (AML: 25).",
    "Entity state lives in SQLite under `AMLFLOW_HOME`; `CreatedByIamUser` is a fixed local user.",
    "`GET /health` is an extra, non-AWS endpoint for liveness checks.",
]
