"""Describe*: FilterVariable with EQ/NE/GT/GE/LT/LE/Prefix, SortOrder, Limit and NextToken paging
(docs/aml-reference.md §2.4).
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from amlflow.service.entities import DESCRIBE_FIELDS, EntityOps
from amlflow.service.errors import (
    InvalidInputException,
)
from amlflow.service.state import Entity
from amlflow.service.validate import decode_next_token, encode_next_token

__all__ = ["COMMON_FILTERS", "FILTERS", "Describe"]

#: FilterVariable → (attribute, kind of comparison)
FILTERS = {
    "DataSource": {"DataLocationS3": "DataLocationS3"},
    "MLModel": {
        "TrainingDataSourceId": "TrainingDataSourceId",
        "RealtimeEndpointStatus": "EndpointInfo.EndpointStatus",
        "MLModelType": "MLModelType",
        "Algorithm": "Algorithm",
        "TrainingDataURI": "InputDataLocationS3",
    },
    "Evaluation": {
        "MLModelId": "MLModelId",
        "DataSourceId": "EvaluationDataSourceId",
        "DataURI": "InputDataLocationS3",
    },
    "BatchPrediction": {
        "MLModelId": "MLModelId",
        "DataSourceId": "BatchPredictionDataSourceId",
        "DataURI": "InputDataLocationS3",
    },
}
COMMON_FILTERS = {
    "CreatedAt": "CreatedAt",
    "LastUpdatedAt": "LastUpdatedAt",
    "Status": "Status",
    "Name": "Name",
    "IAMUser": "CreatedByIamUser",
}


def _time_value(text: str) -> float:
    """A CreatedAt/LastUpdatedAt comparator: epoch seconds or an ISO-8601 time."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = _dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputException(
            f"Comparator value {text!r}: expected epoch seconds or an ISO-8601 time for a time FilterVariable"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.UTC)
    return parsed.timestamp()


class Describe(EntityOps):
    """DescribeDataSources, DescribeMLModels, DescribeEvaluations, DescribeBatchPredictions."""

    def _describe(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        variable = params.get("FilterVariable")
        ops = {
            k: params[k] for k in ("EQ", "GT", "LT", "GE", "LE", "NE", "Prefix") if params.get(k) is not None
        }
        if ops and variable is None:
            raise InvalidInputException(f"FilterVariable: required with {', '.join(sorted(ops))}.")
        path = None
        if variable is not None:
            path = COMMON_FILTERS.get(variable) or FILTERS[kind].get(variable)
            if path is None:
                raise InvalidInputException(f"FilterVariable: {variable!r} is not a filter of {kind}.")
        limit = int(params.get("Limit") or 100)
        offset = 0
        token = params.get("NextToken")
        if token:
            offset = decode_next_token(token)
        is_time = variable in ("CreatedAt", "LastUpdatedAt")

        def value_of(e: Entity) -> Any:
            value: Any = e.attrs
            for part in (path or "CreatedAt").split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if variable is None or is_time:
                return float(value or 0.0)
            return "" if value is None else str(value)

        entities = self.state.all(kind)
        if variable != "Status":
            entities = [e for e in entities if e.status != "DELETED"]
        if ops:
            keep = []
            for e in entities:
                v = value_of(e)
                ok = True
                for op, raw in ops.items():
                    if op == "Prefix":
                        ok = (
                            str(v).startswith(raw)
                            if not is_time
                            else str(e.attrs.get(path or "")).startswith(raw)
                        )
                    else:
                        c = _time_value(raw) if is_time else raw
                        ok = {
                            "EQ": v == c,
                            "NE": v != c,
                            "GT": v > c,
                            "LT": v < c,
                            "GE": v >= c,
                            "LE": v <= c,
                        }[op]
                    if not ok:
                        break
                if ok:
                    keep.append(e)
            entities = keep
        entities.sort(
            key=lambda e: (value_of(e), e.attrs.get("CreatedAt", 0.0), e.id),
            reverse=params.get("SortOrder") == "dsc",
        )
        page = entities[offset : offset + limit]
        out: dict[str, Any] = {"Results": [self._out(e, DESCRIBE_FIELDS[kind]) for e in page]}
        if offset + limit < len(entities):
            out["NextToken"] = encode_next_token(offset + limit)
        return out

    def describe_data_sources(self, **params: Any) -> dict[str, Any]:
        return self._describe("DataSource", params)

    def describe_ml_models(self, **params: Any) -> dict[str, Any]:
        return self._describe("MLModel", params)

    def describe_evaluations(self, **params: Any) -> dict[str, Any]:
        return self._describe("Evaluation", params)

    def describe_batch_predictions(self, **params: Any) -> dict[str, Any]:
        return self._describe("BatchPrediction", params)
