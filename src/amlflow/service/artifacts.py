"""Where the entities' files live: the artifact root (``AMLFLOW_ARTIFACT_ROOT``), shared by every replica.

An entity's files — a datasource's encoded table and insights, a model, an evaluation's report, job
logs — sit in one directory per entity (:func:`amlflow.service.layout.entity_dir_name`), under:

* a local folder (default ``AMLFLOW_HOME``; or a folder every process mounts): jobs write there and
  readers read there, nothing is copied;
* ``s3://bucket/prefix/``: a job writes its entity's directory locally under ``AMLFLOW_HOME`` (the
  process's cache), then :meth:`Artifacts.publish` uploads every file and a ``.complete`` marker last,
  before the entity turns COMPLETED. A process that needs the files of an entity another replica made
  (:meth:`Artifacts.fetch`) downloads the directory once into its cache, atomically (a temporary folder
  renamed into place), and memory-maps it from there. An entity's files never change after its job
  completed, so a cached copy never goes stale.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
from pathlib import Path

from amlflow.service.layout import KIND_FOLDERS, entity_dir_name
from amlflow.storage import Storage, parse_s3_uri

__all__ = ["MARKER", "Artifacts"]

log = logging.getLogger("amlflow.service")

#: written last by :meth:`Artifacts.publish` and by :meth:`Artifacts.fetch` into a complete local copy
MARKER = ".complete"


class Artifacts:
    """The artifact root of one process (see the module docstring).

    Args:
        home: the process's ``AMLFLOW_HOME`` (its local cache when the root is on S3).
        root: a local folder, ``s3://bucket/prefix/``, or None for ``home``.
        storage: the storage that reaches an ``s3://`` root.
    """

    def __init__(self, home: Path, root: str | os.PathLike[str] | None, storage: Storage | None) -> None:
        text = os.fspath(root) if root is not None else ""
        self.remote = text.startswith("s3://")
        if self.remote:
            if storage is None:
                raise ValueError("an s3:// artifact root needs an S3 storage")
            parse_s3_uri(text)
            self.uri = text if text.endswith("/") else text + "/"
            self.base = Path(home)
        else:
            self.uri = ""
            self.base = Path(text).expanduser() if text else Path(home)
        self.storage = storage
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Artifacts({self.uri or str(self.base)!r})"

    def _relative(self, kind: str, entity_id: str) -> str:
        return f"{KIND_FOLDERS[kind]}/{entity_dir_name(kind, entity_id)}"

    def local(self, kind: str, entity_id: str) -> Path:
        """The entity's directory on this machine (where its job writes)."""
        return self.base / self._relative(kind, entity_id)

    def log_path(self, kind: str, entity_id: str) -> Path:
        """The job log of the entity on this machine."""
        return self.base / "logs" / kind / f"{entity_dir_name(kind, entity_id)}.log"

    def log_uri(self, kind: str, entity_id: str) -> str:
        """The job log's ``LogUri``: its s3:// URI on an S3 root, else a file URI."""
        if self.remote:
            return f"{self.uri}logs/{kind}/{entity_dir_name(kind, entity_id)}.log"
        return self.log_path(kind, entity_id).as_uri()

    def publish(self, kind: str, entity_id: str) -> None:
        """Upload the entity's directory to an S3 root, its ``.complete`` marker last (local: nothing)."""
        if not self.remote:
            return
        assert self.storage is not None
        folder = self.local(kind, entity_id)
        prefix = self.uri + self._relative(kind, entity_id) + "/"
        files = (
            sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MARKER)
            if folder.is_dir()
            else []
        )
        for path in files:
            self.storage.write_atomic(prefix + path.relative_to(folder).as_posix(), path)
        self.storage.write_atomic(prefix + MARKER, str(len(files)).encode())
        (folder / MARKER).parent.mkdir(parents=True, exist_ok=True)
        (folder / MARKER).write_text(str(len(files)))

    def publish_log(self, kind: str, entity_id: str) -> None:
        """Upload the entity's job log to an S3 root (local: nothing)."""
        path = self.log_path(kind, entity_id)
        if self.remote and path.is_file():
            assert self.storage is not None
            self.storage.write_atomic(self.log_uri(kind, entity_id), path)

    def fetch(self, kind: str, entity_id: str) -> Path:
        """The entity's directory, downloaded from an S3 root into the local cache if not there yet.

        Raises:
            FileNotFoundError: the root holds no complete copy of the entity's files.
        """
        folder = self.local(kind, entity_id)
        if not self.remote or (folder / MARKER).is_file():
            return folder
        assert self.storage is not None
        with self._lock:
            if (folder / MARKER).is_file():
                return folder
            prefix = self.uri + self._relative(kind, entity_id) + "/"
            objects = self.storage.list(prefix)
            if not any(o.uri == prefix + MARKER for o in objects):
                raise FileNotFoundError(f"{prefix}: no complete copy of the {kind} {entity_id}")
            work = folder.with_name(f".{folder.name}.fetch-{uuid.uuid4().hex[:8]}")
            try:
                for obj in objects:
                    target = work / obj.uri[len(prefix) :]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with self.storage.open_read(obj.uri) as src, target.open("wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                if folder.exists():  # a partial copy of an earlier run of this process
                    shutil.rmtree(folder)
                folder.parent.mkdir(parents=True, exist_ok=True)
                work.rename(folder)
            finally:
                if work.exists():
                    shutil.rmtree(work, ignore_errors=True)
            log.info("fetched %s %s from %s", kind, entity_id, prefix)
            return folder
