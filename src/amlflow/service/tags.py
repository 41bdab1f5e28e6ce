"""Tags: AddTags, DeleteTags, DescribeTags (docs/aml-reference.md §2.6): at most 50 per resource, keys of
1–128 and values of at most 256 letters, digits, spaces or ``_ . : / = + - @``, no ``aws:`` keys.
"""

from __future__ import annotations

from typing import Any

from amlflow.service import validate as _validate
from amlflow.service.entities import EntityOps
from amlflow.service.errors import (
    InvalidTagException,
    ResourceNotFoundException,
    TagLimitExceededException,
)
from amlflow.service.state import Entity

__all__ = ["MAX_TAGS", "Tags"]

MAX_TAGS = 50


class Tags(EntityOps):
    """AddTags, DeleteTags, DescribeTags."""

    def _taggable(self, resource_id: str, resource_type: str) -> Entity:
        entity = self.state.get(resource_type, resource_id)
        if entity is None:
            raise ResourceNotFoundException(f"No {resource_type} with id {resource_id} exists.")
        return entity

    @staticmethod
    def _check_tag_key(key: str, where: str) -> None:
        if not key or len(key) > 128:
            raise InvalidTagException(f"{where}: tag key must be 1 to 128 characters, got {len(key)}.")
        if key.lower().startswith("aws:"):
            raise InvalidTagException(f"{where}: tag key {key!r} uses the reserved prefix 'aws:'.")
        if not _validate._matcher(r"^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$")(key):
            raise InvalidTagException(
                f"{where}: tag key {key!r} has characters outside letters, digits, "
                f"spaces and _ . : / = + - @."
            )

    def add_tags(
        self,
        *,
        Tags: list[dict[str, str]],
        ResourceId: str,
        ResourceType: str,
    ) -> dict[str, Any]:
        self._taggable(ResourceId, ResourceType)
        current = dict(self.state.tags(ResourceType, ResourceId))
        for i, tag in enumerate(Tags, 1):
            key, value = tag.get("Key", ""), tag.get("Value")
            self._check_tag_key(key, f"Tags.{i}.Key")
            if value is not None and (
                len(value) > 256 or not _validate._matcher(r"^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$")(value)
            ):
                raise InvalidTagException(
                    f"Tags.{i}.Value: tag value {value!r} must be at most 256 letters, "
                    f"digits, spaces or _ . : / = + - @."
                )
            current[key] = value
        if len(current) > MAX_TAGS:
            raise TagLimitExceededException(
                f"Tags: {ResourceType} {ResourceId} would have {len(current)} tags; "
                f"at most {MAX_TAGS} are allowed."
            )
        self.state.set_tags(ResourceType, ResourceId, list(current.items()))
        return {"ResourceId": ResourceId, "ResourceType": ResourceType}

    def delete_tags(
        self,
        *,
        TagKeys: list[str],
        ResourceId: str,
        ResourceType: str,
    ) -> dict[str, Any]:
        self._taggable(ResourceId, ResourceType)
        for i, key in enumerate(TagKeys, 1):
            if not key or len(key) > 128:
                raise InvalidTagException(f"TagKeys.{i}: tag key must be 1 to 128 characters.")
        drop = set(TagKeys)
        current = [(k, v) for k, v in self.state.tags(ResourceType, ResourceId) if k not in drop]
        self.state.set_tags(ResourceType, ResourceId, current)
        return {"ResourceId": ResourceId, "ResourceType": ResourceType}

    def describe_tags(self, *, ResourceId: str, ResourceType: str) -> dict[str, Any]:
        self._taggable(ResourceId, ResourceType)
        tags = [
            {"Key": k, "Value": v} if v is not None else {"Key": k}
            for k, v in self.state.tags(ResourceType, ResourceId)
        ]
        return {"ResourceId": ResourceId, "ResourceType": ResourceType, "Tags": tags}
