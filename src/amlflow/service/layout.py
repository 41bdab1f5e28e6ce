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
import os
import re
from pathlib import Path

__all__ = ["KIND_FOLDERS", "PathRedactor", "entity_dir_name"]

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


class PathRedactor:
    """Rewrites server paths in messages users see: storage objects as ``s3://`` URIs, the rest hidden.

    A path under the local storage root becomes the ``s3://bucket/key`` it stands for; a path under the
    amlflow home becomes ``<amlflow home>/…`` (its absolute location is the server's business).

    Example:
        >>> r = PathRedactor(home="/srv/aml", storage_root="/srv/aml/s3")
        >>> r("cannot read /srv/aml/s3/bucket/a.csv: gone; /srv/aml/models/x/model missing")
        'cannot read s3://bucket/a.csv: gone; <amlflow home>/models/x/model missing'
    """

    def __init__(self, *, home: str | os.PathLike[str], storage_root: str | os.PathLike[str] | None) -> None:
        self._roots: list[tuple[re.Pattern[str], str]] = []
        for root, replacement in ((storage_root, "s3://"), (home, "<amlflow home>/")):
            if root is None:
                continue
            for form in {str(Path(root)), str(Path(root).resolve())}:
                self._roots.append((re.compile(re.escape(form.rstrip("/")) + r"/?"), replacement))

    def __call__(self, text: str) -> str:
        for pattern, replacement in self._roots:
            text = pattern.sub(replacement, text)
        return text
