"""Entity state, tags and job leases in one SQL database: SQLite under ``AMLFLOW_HOME`` (the embedded
default) or PostgreSQL (``AMLFLOW_DATABASE_URL``), through SQLAlchemy Core — one code path for both.

One row per entity: ``(kind, id)`` → ``status``, ``created_at``, two JSON documents and a lease:

* ``attrs``: the entity's wire attributes (PascalCase, as in the ``Get*`` response; timestamps as epoch
  seconds, floats with millisecond precision);
* ``internal``: what the service needs and the API does not show (the normalised create request for
  idempotency, the parsed schema, the recipe text, ...);
* ``lease_owner`` / ``lease_expires``: the process that owns the entity's job and until when
  (docs/shared-state.md). A job runs only in the process holding its lease; a lease is renewed by its
  owner's heartbeat and, once expired, any process may claim it.

Every change is committed before the call returns, so what another thread, process or machine reads is
always a committed state. Writes are serialised per row: PostgreSQL locks the row (``SELECT … FOR
UPDATE``; claims skip rows another transaction holds, ``SKIP LOCKED``, the standard job-queue pattern);
SQLite takes its database write lock at the start of every write transaction (``BEGIN IMMEDIATE``), so
read-modify-write cycles of several processes on one home never interleave.

The schema is versioned (table ``amlflow_schema``) and migrated forward at start-up
(:data:`MIGRATIONS`, run through alembic's ``Operations``); a database newer than this code is refused.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Entity",
    "Lease",
    "LeaseLost",
    "StateStore",
    "database_url",
    "new_owner_id",
    "owner_is_dead",
]

_META = sa.MetaData()
ENTITIES = sa.Table(
    "entities",
    _META,
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float(53), nullable=False),
    sa.Column("attrs", sa.Text, nullable=False),
    sa.Column("internal", sa.Text, nullable=False),
    sa.Column("lease_owner", sa.String(200), nullable=True),
    sa.Column("lease_expires", sa.Float(53), nullable=True),
)
TAGS = sa.Table(
    "tags",
    _META,
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("value", sa.Text, nullable=True),
    sa.Column("position", sa.Integer, nullable=False),
)
VERSION = sa.Table("amlflow_schema", _META, sa.Column("version", sa.Integer, nullable=False))


def _v1(conn: Connection) -> None:
    """Version 1: entities and tags (the schema amlflow's SQLite state had before versioning)."""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    inspector = sa.inspect(conn)
    if inspector.has_table("entities"):
        return  # an unversioned database from before the leases: it is version 1
    op = Operations(MigrationContext.configure(conn))
    op.create_table(
        "entities",
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float(53), nullable=False),
        sa.Column("attrs", sa.Text, nullable=False),
        sa.Column("internal", sa.Text, nullable=False),
    )
    if not inspector.has_table("tags"):
        op.create_table(
            "tags",
            sa.Column("kind", sa.String(32), primary_key=True),
            sa.Column("id", sa.String(128), primary_key=True),
            sa.Column("key", sa.String(128), primary_key=True),
            sa.Column("value", sa.Text, nullable=True),
            sa.Column("position", sa.Integer, nullable=False),
        )


def _v2(conn: Connection) -> None:
    """Version 2: job leases (owner, expiry) and an index for the job scan."""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    op = Operations(MigrationContext.configure(conn))
    op.add_column("entities", sa.Column("lease_owner", sa.String(200), nullable=True))
    op.add_column("entities", sa.Column("lease_expires", sa.Float(53), nullable=True))
    op.create_index("entities_status", "entities", ["status", "created_at"])


#: Forward migrations, in order: ``MIGRATIONS[i]`` takes the schema from version ``i`` to ``i + 1``.
MIGRATIONS: tuple[Callable[[Connection], None], ...] = (_v1, _v2)
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass
class Entity:
    """A stored entity: ``attrs`` are wire attributes, ``internal`` the service's own data."""

    kind: str
    id: str
    attrs: dict[str, Any] = field(default_factory=dict)
    internal: dict[str, Any] = field(default_factory=dict)
    lease_owner: str | None = None
    lease_expires: float | None = None

    @property
    def status(self) -> str:
        return str(self.attrs.get("Status", ""))


@dataclass(frozen=True)
class Lease:
    """A live or expired lease as :meth:`StateStore.leases` lists it."""

    kind: str
    id: str
    owner: str
    expires: float


class LeaseLost(RuntimeError):
    """A write guarded by a lease found the lease gone (expired and claimed by another process)."""


def new_owner_id() -> str:
    """A lease owner id for this process: ``<host>/<pid>/<random>`` (unique across restarts)."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:12]}"


def owner_is_dead(owner: str) -> bool:
    """True when ``owner`` is a process of this host that no longer exists (its lease can be taken at
    once instead of after its expiry). Unknown hosts and live or unreadable pids: False."""
    host, _, rest = owner.partition("/")
    pid_text = rest.partition("/")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def database_url(url: str | os.PathLike[str]) -> str:
    """The SQLAlchemy URL of ``url``: a path is a SQLite file; ``postgresql://`` uses psycopg 3."""
    text = os.fspath(url)
    if "://" not in text:
        return f"sqlite:///{Path(text).expanduser()}"
    if text.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + text.split("://", 1)[1]
    return text


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs and reprs)."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<database url>"


class StateStore:
    """Entities, tags and job leases in SQLite or PostgreSQL (thread- and process-safe).

    Args:
        url: a SQLite file path, or a database URL (``sqlite:///…``, ``postgresql://user:pass@host/db``).
    """

    def __init__(self, url: str | os.PathLike[str]) -> None:
        self.url = database_url(url)
        parsed = sa.engine.make_url(self.url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            db = parsed.database or ""
            if db and db != ":memory:":
                Path(db).parent.mkdir(parents=True, exist_ok=True)
            self.path: Path | None = Path(db) if db else None
            self.engine = sa.create_engine(
                self.url, connect_args={"check_same_thread": False, "timeout": 60}, pool_size=8
            )
            sa.event.listen(self.engine, "connect", _sqlite_connect)
            sa.event.listen(self.engine, "begin", _sqlite_begin)
        else:
            self.path = None
            self.engine = sa.create_engine(self.url, pool_pre_ping=True, pool_size=8, max_overflow=8)
        self._lock = threading.RLock()
        try:
            self.migrate()
        except BaseException:
            self.engine.dispose()
            raise

    def __repr__(self) -> str:
        return f"StateStore({redact_url(self.url)!r})"

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------------------ transactions

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: row locks as taken)."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn = conn.execution_options(amlflow_read=True)
            with conn.begin():
                yield conn

    def _lock_for_update(self, query: sa.Select[Any], *, skip_locked: bool = False) -> sa.Select[Any]:
        if self.dialect == "sqlite":
            return query  # the whole database is locked by BEGIN IMMEDIATE
        return query.with_for_update(skip_locked=skip_locked)

    # -------------------------------------------------------------------------------- migrations

    def schema_version(self) -> int:
        """The version of the database's schema (0: empty database)."""
        with self._read() as conn:
            return _version(conn)

    def migrate(self) -> int:
        """Bring the schema to :data:`SCHEMA_VERSION` (once, whichever process gets there first)."""
        with self._write() as conn:
            if self.dialect == "postgresql":  # one migrating process at a time, released at commit
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(7218455093)"))
            version = _version(conn)
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"the state database {redact_url(self.url)} has schema version {version}, newer than "
                    f"this amlflow's {SCHEMA_VERSION}; upgrade amlflow"
                )
            if version == SCHEMA_VERSION:
                return version
            for step in MIGRATIONS[version:]:
                step(conn)
            if not sa.inspect(conn).has_table("amlflow_schema"):
                VERSION.create(conn)
            conn.execute(VERSION.delete())
            conn.execute(VERSION.insert().values(version=SCHEMA_VERSION))
            return SCHEMA_VERSION

    # ---------------------------------------------------------------------------------- entities

    @staticmethod
    def _row(row: Any) -> Entity:
        return Entity(
            row.kind,
            row.id,
            json.loads(row.attrs),
            json.loads(row.internal),
            row.lease_owner,
            row.lease_expires,
        )

    def insert(self, entity: Entity) -> bool:
        """Insert ``entity``; False (and nothing written) if one with its kind and id exists."""
        values = {
            "kind": entity.kind,
            "id": entity.id,
            "status": entity.status,
            "created_at": float(entity.attrs.get("CreatedAt", 0.0)),
            "attrs": json.dumps(entity.attrs),
            "internal": json.dumps(entity.internal),
        }
        with self._write() as conn:
            exists = conn.execute(
                sa.select(ENTITIES.c.id).where(ENTITIES.c.kind == entity.kind, ENTITIES.c.id == entity.id)
            ).first()
            if exists is not None:
                return False
            try:
                with conn.begin_nested():
                    conn.execute(ENTITIES.insert().values(**values))
            except sa.exc.IntegrityError:  # another process inserted it between the two statements
                return False
            return True

    def get(self, kind: str, entity_id: str) -> Entity | None:
        with self._read() as conn:
            row = conn.execute(
                sa.select(ENTITIES).where(ENTITIES.c.kind == kind, ENTITIES.c.id == entity_id)
            ).first()
        return self._row(row) if row else None

    def all(self, kind: str | None = None, statuses: tuple[str, ...] | None = None) -> list[Entity]:
        """Entities of ``kind`` (all kinds if None), optionally only those in ``statuses``, by creation."""
        query = sa.select(ENTITIES)
        if kind is not None:
            query = query.where(ENTITIES.c.kind == kind)
        if statuses:
            query = query.where(ENTITIES.c.status.in_(statuses))
        query = query.order_by(ENTITIES.c.created_at, ENTITIES.c.id)
        with self._read() as conn:
            rows = conn.execute(query).fetchall()
        return [self._row(r) for r in rows]

    def update(
        self,
        kind: str,
        entity_id: str,
        change: Callable[[Entity], bool | None] | None = None,
        *,
        attrs: Mapping[str, Any] | None = None,
        internal: Mapping[str, Any] | None = None,
        owner: str | None = None,
        release: bool = False,
    ) -> Entity | None:
        """Atomically read-modify-write one entity.

        ``attrs``/``internal`` are merged (a ``None`` value removes the key); then ``change(entity)`` may
        edit the entity in place and return False to abort without writing. Returns the entity as
        stored afterwards (None if it does not exist).

        With ``owner``, the write happens only while ``owner`` holds the entity's lease (else
        :class:`LeaseLost`); ``release`` also gives the lease up in the same write.
        """
        with self._write() as conn:
            row = conn.execute(
                self._lock_for_update(
                    sa.select(ENTITIES).where(ENTITIES.c.kind == kind, ENTITIES.c.id == entity_id)
                )
            ).first()
            if row is None:
                return None
            if owner is not None and row.lease_owner != owner:
                raise LeaseLost(
                    f"{kind} {entity_id}: the lease of {owner} is gone (now {row.lease_owner or 'none'})"
                )
            entity = self._row(row)
            for target, updates in ((entity.attrs, attrs), (entity.internal, internal)):
                for key, value in (updates or {}).items():
                    if value is None:
                        target.pop(key, None)
                    else:
                        target[key] = value
            if change is not None and change(entity) is False:
                if release:
                    self._set_lease(conn, kind, entity_id, None, None)
                return self._row(row)
            values: dict[str, Any] = {
                "status": entity.status,
                "attrs": json.dumps(entity.attrs),
                "internal": json.dumps(entity.internal),
            }
            if release:
                values.update(lease_owner=None, lease_expires=None)
                entity.lease_owner = entity.lease_expires = None
            conn.execute(
                ENTITIES.update().where(ENTITIES.c.kind == kind, ENTITIES.c.id == entity_id).values(**values)
            )
            return entity

    # ------------------------------------------------------------------------------------ leases

    def claimable(self, at: float | None = None) -> list[Entity]:
        """PENDING and INPROGRESS entities whose job no process holds (no lease, or an expired one), by
        creation."""
        stamp = time.time() if at is None else at
        query = (
            sa.select(ENTITIES)
            .where(ENTITIES.c.status.in_(("PENDING", "INPROGRESS")))
            .where(sa.or_(ENTITIES.c.lease_owner.is_(None), ENTITIES.c.lease_expires < stamp))
            .order_by(ENTITIES.c.created_at, ENTITIES.c.id)
        )
        with self._read() as conn:
            return [self._row(r) for r in conn.execute(query).fetchall()]

    def claim(
        self, kind: str, entity_id: str, owner: str, ttl: float, *, dead: frozenset[str] = frozenset()
    ) -> tuple[Entity, str | None] | None:
        """Take the lease of one PENDING or INPROGRESS entity for ``ttl`` seconds.

        Succeeds when no process holds the lease, it expired, ``owner`` holds it already, or its owner is
        in ``dead`` (processes known to be gone). Returns the entity and the previous owner of an expired
        or dead lease (None if there was none), or None when the entity is done, missing or held.
        PostgreSQL skips a row another transaction has locked (``FOR UPDATE SKIP LOCKED``).
        """
        stamp = time.time()
        with self._write() as conn:
            row = conn.execute(
                self._lock_for_update(
                    sa.select(ENTITIES).where(ENTITIES.c.kind == kind, ENTITIES.c.id == entity_id),
                    skip_locked=True,
                )
            ).first()
            if row is None or row.status not in ("PENDING", "INPROGRESS"):
                return None
            held = row.lease_owner is not None and row.lease_owner != owner
            if held and row.lease_expires >= stamp and row.lease_owner not in dead:
                return None
            self._set_lease(conn, kind, entity_id, owner, stamp + ttl)
            entity = self._row(row)
            entity.lease_owner, entity.lease_expires = owner, stamp + ttl
            return entity, (row.lease_owner if held else None)

    def renew(self, owner: str, ttl: float) -> set[tuple[str, str]]:
        """Extend every lease ``owner`` holds by ``ttl`` seconds from now; the keys still held."""
        stamp = time.time()
        with self._write() as conn:
            conn.execute(
                ENTITIES.update().where(ENTITIES.c.lease_owner == owner).values(lease_expires=stamp + ttl)
            )
            rows = conn.execute(
                sa.select(ENTITIES.c.kind, ENTITIES.c.id).where(ENTITIES.c.lease_owner == owner)
            ).fetchall()
        return {(r.kind, r.id) for r in rows}

    def release(self, kind: str, entity_id: str, owner: str) -> bool:
        """Give up ``owner``'s lease of one entity; False if it did not hold it."""
        with self._write() as conn:
            result = conn.execute(
                ENTITIES.update()
                .where(ENTITIES.c.kind == kind, ENTITIES.c.id == entity_id, ENTITIES.c.lease_owner == owner)
                .values(lease_owner=None, lease_expires=None)
            )
            return bool(result.rowcount)

    def leases(self, owner: str | None = None) -> list[Lease]:
        """The leases held (live or expired), optionally only ``owner``'s."""
        query = sa.select(ENTITIES.c.kind, ENTITIES.c.id, ENTITIES.c.lease_owner, ENTITIES.c.lease_expires)
        query = query.where(ENTITIES.c.lease_owner.is_not(None))
        if owner is not None:
            query = query.where(ENTITIES.c.lease_owner == owner)
        with self._read() as conn:
            rows = conn.execute(query.order_by(ENTITIES.c.kind, ENTITIES.c.id)).fetchall()
        return [Lease(r.kind, r.id, r.lease_owner, r.lease_expires) for r in rows]

    @staticmethod
    def _set_lease(
        conn: Connection, kind: str, entity_id: str, owner: str | None, expires: float | None
    ) -> None:
        conn.execute(
            ENTITIES.update()
            .where(ENTITIES.c.kind == kind, ENTITIES.c.id == entity_id)
            .values(lease_owner=owner, lease_expires=expires)
        )

    # -------------------------------------------------------------------------------------- tags

    def tags(self, kind: str, entity_id: str) -> list[tuple[str, str | None]]:
        query = (
            sa.select(TAGS.c.key, TAGS.c.value)
            .where(TAGS.c.kind == kind, TAGS.c.id == entity_id)
            .order_by(TAGS.c.position, TAGS.c.key)
        )
        with self._read() as conn:
            rows = conn.execute(query).fetchall()
        return [(r.key, r.value) for r in rows]

    def set_tags(self, kind: str, entity_id: str, tags: list[tuple[str, str | None]]) -> None:
        """Replace the tags of one entity (in this order)."""
        with self._write() as conn:
            conn.execute(TAGS.delete().where(TAGS.c.kind == kind, TAGS.c.id == entity_id))
            if tags:
                conn.execute(
                    TAGS.insert(),
                    [
                        {"kind": kind, "id": entity_id, "key": k, "value": v, "position": i}
                        for i, (k, v) in enumerate(tags)
                    ],
                )


def _version(conn: Connection) -> int:
    inspector = sa.inspect(conn)
    if inspector.has_table("amlflow_schema"):
        value = conn.execute(sa.select(VERSION.c.version)).scalar()
        return int(value or 0)
    return 1 if inspector.has_table("entities") else 0


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # SQLAlchemy's begin event below issues BEGIN itself
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=60000")
    # switching to (or confirming) WAL can answer "database is locked" at once, without the busy handler,
    # while another process opens the same new database: seen in CI with two processes starting on one
    # home (tests/service/test_shared_state.py); retry it for as long as the busy timeout would wait
    deadline = time.monotonic() + 60
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    read = conn.get_execution_options().get("amlflow_read", False)
    conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")
