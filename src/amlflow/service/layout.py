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

__all__ = ["BATCH_WORK_PREFIX", "KIND_FOLDERS", "PathRedactor", "clean_leftovers", "entity_dir_name"]

#: The folder under the home for each entity kind.
KIND_FOLDERS = {
    "DataSource": "datasources",
    "MLModel": "models",
    "Evaluation": "evaluations",
    "BatchPrediction": "batch-predictions",
}

_SLUG_CHARS = re.compile(r"[^a-z0-9_-]+")

#: Prefix of a batch prediction's local work directory (directly under the home) while it scores.
BATCH_WORK_PREFIX = ".bp-"
#: What a crash can leave: atomic-write temp files, the engine's half-written tables, batch work folders.
_LEFTOVER_FILE = re.compile(r"^\.amlflow-tmp-")
_LEFTOVER_TABLE = re.compile(r"^\..+\.tmp-[0-9a-f]+$")


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


def clean_leftovers(
    home: Path, storage_root: Path | None = None, artifact_base: Path | None = None
) -> list[Path]:
    """Remove what a crashed process left half-written; return what was removed.

    Under ``home``: batch work folders (``.bp-*``), the engine's temporary tables (``.<name>.tmp-<hex>``
    beside an entity's ``table``/``model``), and atomic-write temp files (``.amlflow-tmp-*``); under the
    local ``storage_root``, atomic-write temp files. Under ``home`` and a local ``artifact_base``: a
    datasource's Dask parts (``parts/``, and the local copies ``.parts-*``), which only a running
    datasource job uses — a part whose worker finished after its job had failed and cleaned up stays
    there otherwise. Finished files are never touched: they are only ever renamed into place whole.
    Called only while no process holds a job.
    """
    import shutil

    removed: list[Path] = []
    for base in dict.fromkeys(b for b in (home, artifact_base) if b is not None and b.is_dir()):
        for entity_dir in (base / KIND_FOLDERS["DataSource"]).glob("*"):
            for path in [entity_dir / "parts", *entity_dir.glob(".parts-*")]:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
    if home.is_dir():
        for path in home.glob(BATCH_WORK_PREFIX + "*"):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        for folder in KIND_FOLDERS.values():
            for entity_dir in (home / folder).glob("*"):
                for path in entity_dir.glob(".*"):
                    if _LEFTOVER_TABLE.match(path.name) or _LEFTOVER_FILE.match(path.name):
                        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(
                            missing_ok=True
                        )
                        removed.append(path)
    roots = [home] + ([storage_root] if storage_root is not None and storage_root.is_dir() else [])
    for root in roots:
        for path in root.rglob(".amlflow-tmp-*"):
            if path.is_file() and path not in removed:
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed
