"""Entity state in SQLite (WAL) under ``AMLFLOW_HOME/state.db``.

One row per entity: ``(kind, id)`` → ``status``, ``created_at`` and two JSON documents:

* ``attrs``: the entity's wire attributes (PascalCase, as in the ``Get*`` response; timestamps as epoch
  seconds, floats with millisecond precision);
* ``internal``: what the service needs and the API does not show (the normalised create request for
  idempotency, the parsed schema, the recipe text, ...).

Tags live in their own table. Every change is committed before the call returns, so a state another
thread (or the next process) reads is always a committed one. One connection, guarded by a lock:
entity updates are small and the service is not write-heavy.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Entity", "StateStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entities (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    attrs TEXT NOT NULL,
    internal TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE TABLE IF NOT EXISTS tags (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT,
    position INTEGER NOT NULL,
    PRIMARY KEY (kind, id, key)
);
"""


@dataclass
class Entity:
    """A stored entity: ``attrs`` are wire attributes, ``internal`` the service's own data."""

    kind: str
    id: str
    attrs: dict[str, Any] = field(default_factory=dict)
    internal: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.attrs.get("Status", ""))


class StateStore:
    """SQLite-backed entity and tag store (thread-safe)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @staticmethod
    def _row(row: tuple[Any, ...]) -> Entity:
        return Entity(row[0], row[1], json.loads(row[2]), json.loads(row[3]))

    def insert(self, entity: Entity) -> bool:
        """Insert ``entity``; False (and nothing written) if one with its kind and id exists."""
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO entities (kind, id, status, created_at, attrs, internal) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    entity.kind,
                    entity.id,
                    entity.status,
                    float(entity.attrs.get("CreatedAt", 0.0)),
                    json.dumps(entity.attrs),
                    json.dumps(entity.internal),
                ),
            )
            return cur.rowcount == 1

    def get(self, kind: str, entity_id: str) -> Entity | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT kind, id, attrs, internal FROM entities WHERE kind = ? AND id = ?", (kind, entity_id)
            ).fetchone()
        return self._row(row) if row else None

    def all(self, kind: str | None = None, statuses: tuple[str, ...] | None = None) -> list[Entity]:
        """Entities of ``kind`` (all kinds if None), optionally only those in ``statuses``, by creation."""
        sql = "SELECT kind, id, attrs, internal FROM entities"
        where, args = [], []
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        if statuses:
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            args.extend(statuses)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, id"
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [self._row(r) for r in rows]

    def update(
        self,
        kind: str,
        entity_id: str,
        change: Callable[[Entity], bool | None] | None = None,
        *,
        attrs: Mapping[str, Any] | None = None,
        internal: Mapping[str, Any] | None = None,
    ) -> Entity | None:
        """Atomically read-modify-write one entity.

        ``attrs``/``internal`` are merged (a ``None`` value removes the key); then ``change(entity)`` may
        edit the entity in place and return False to abort without writing. Returns the entity as
        stored afterwards (None if it does not exist).
        """
        with self._tx() as conn:
            row = conn.execute(
                "SELECT kind, id, attrs, internal FROM entities WHERE kind = ? AND id = ?", (kind, entity_id)
            ).fetchone()
            if row is None:
                return None
            entity = self._row(row)
            for target, updates in ((entity.attrs, attrs), (entity.internal, internal)):
                for key, value in (updates or {}).items():
                    if value is None:
                        target.pop(key, None)
                    else:
                        target[key] = value
            if change is not None and change(entity) is False:
                return self._row(row)
            conn.execute(
                "UPDATE entities SET status = ?, attrs = ?, internal = ? WHERE kind = ? AND id = ?",
                (entity.status, json.dumps(entity.attrs), json.dumps(entity.internal), kind, entity_id),
            )
            return entity

    # ------------------------------------------------------------------------------------------ tags

    def tags(self, kind: str, entity_id: str) -> list[tuple[str, str | None]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT key, value FROM tags WHERE kind = ? AND id = ? ORDER BY position, key",
                (kind, entity_id),
            ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def set_tags(self, kind: str, entity_id: str, tags: list[tuple[str, str | None]]) -> None:
        """Replace the tags of one entity (in this order)."""
        with self._tx() as conn:
            conn.execute("DELETE FROM tags WHERE kind = ? AND id = ?", (kind, entity_id))
            conn.executemany(
                "INSERT INTO tags (kind, id, key, value, position) VALUES (?, ?, ?, ?, ?)",
                [(kind, entity_id, k, v, i) for i, (k, v) in enumerate(tags)],
            )
