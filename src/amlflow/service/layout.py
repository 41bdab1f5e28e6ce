"""Where an entity's files live under ``AMLFLOW_HOME``: derived from (kind, id), never the id itself.

AML's id pattern ``[a-zA-Z0-9_.-]+`` admits ``.``, ``..`` and names equal to amlflow's own files
(``table``, ``model``, ``insights.json``), and ids that differ only in case collide on case-insensitive
filesystems (macOS, Windows). So no id is ever used as a path component: an entity's directory (and its
job log) is named ``<slug>-<hash>``, where the hash is the SHA-256 of the kind and the exact id (so two
entities never share a directory, case-only differences included) and the slug is a lowercase, readable
hint of the id that is never ``.`` or ``..``.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["KIND_FOLDERS", "entity_dir_name"]

#: The folder under the home for each entity kind.
KIND_FOLDERS = {
    "DataSource": "datasources",
    "MLModel": "models",
    "Evaluation": "evaluations",
    "BatchPrediction": "batch-predictions",
}

_SLUG_CHARS = re.compile(r"[^a-z0-9_-]+")


def entity_dir_name(kind: str, entity_id: str) -> str:
    """The directory (and log) name of one entity: ``<slug>-<24 hex digits of SHA-256(kind, id)>``.

    Example:
        >>> entity_dir_name("DataSource", "..") != entity_dir_name("DataSource", ".")
        True
        >>> entity_dir_name("DataSource", "Table") != entity_dir_name("DataSource", "table")
        True
        >>> entity_dir_name("MLModel", "ml-1").startswith("ml-1-")
        True
    """
    digest = hashlib.sha256(f"{kind}\0{entity_id}".encode()).hexdigest()[:24]
    slug = _SLUG_CHARS.sub("_", entity_id.lower())[:32].strip("_") or "id"
    return f"{slug}-{digest}"
