"""Engines, sessions and schema upgrades. Engines are passed explicitly; nothing global but a cache."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from marsad.errors import DatabaseError

# The repository's alembic/ folder: Marsad is installed editable (pip install -e .), as the README says.
ALEMBIC_DIR = Path(__file__).resolve().parent.parent / "alembic"
# Prefect keeps its own alembic_version table; ours has its own name so the two can share a database.
VERSION_TABLE = "marsad_alembic_version"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the digest and trends read while an ingest writes; the busy timeout makes an
    # overlapping writer wait instead of failing with "database is locked".
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str) -> Engine:
    """A new engine for ``url`` with Marsad's connection settings."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseError(f"MARSAD_DATABASE_URL is not a database URL: {url!r}") from exc
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        )
        event.listen(engine, "connect", _configure_sqlite)
        return engine
    try:
        return create_engine(parsed, pool_pre_ping=True)
    except Exception as exc:  # missing driver and the like: name it instead of a traceback
        raise DatabaseError(f"cannot use database {parsed.render_as_string()}: {exc}") from exc


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """One engine per URL per process (tasks in one process share its pool)."""
    return make_engine(url)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error."""
    session = sessionmaker(engine, expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    if not (ALEMBIC_DIR / "env.py").exists():
        raise DatabaseError(
            f"migrations not found at {ALEMBIC_DIR}; install Marsad from its repository "
            "with `pip install -e .`"
        )
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Create or upgrade the schema to ``revision``."""
    from alembic import command

    try:
        command.upgrade(_alembic_config(engine), revision)
    except OperationalError as exc:
        raise DatabaseError(_describe_connection_error(engine, exc)) from exc


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with connect(engine) as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE}
        )
        return context.get_current_revision()


def head_revision(engine: Engine) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()


# Databases found at the head revision by this process: a command and the flow it runs each ask.
_verified: set[str] = set()


def ensure_schema(engine: Engine) -> None:
    """Initialise an empty database; refuse to run on one that needs an upgrade.

    A fresh install should just work, but migrating a production database is an operator's
    decision, taken with ``marsad init``.
    """
    key = engine.url.render_as_string(hide_password=False)
    if key in _verified:
        return
    _ensure_schema(engine)
    _verified.add(key)


def _ensure_schema(engine: Engine) -> None:
    current = current_revision(engine)
    if current is None:
        from models import Base

        with connect(engine) as connection:
            clashing = set(inspect(connection).get_table_names()) & set(Base.metadata.tables)
        if clashing:
            # Other applications' tables (Prefect's, say) may share the database; ours may not
            # exist without a version, or the migration would fail half-way.
            raise DatabaseError(
                f"the database has Marsad's tables ({', '.join(sorted(clashing))}) but no "
                f"{VERSION_TABLE} table; point MARSAD_DATABASE_URL at Marsad's own database"
            )
        upgrade(engine)
        return
    head = head_revision(engine)
    if current != head:
        raise DatabaseError(
            f"the database schema is at {current}, this Marsad needs {head}: run `marsad init`"
        )


@contextmanager
def connect(engine: Engine) -> Iterator[Any]:
    try:
        connection = engine.connect()
    except OperationalError as exc:
        raise DatabaseError(_describe_connection_error(engine, exc)) from exc
    try:
        yield connection
    finally:
        connection.close()


def _describe_connection_error(engine: Engine, exc: OperationalError) -> str:
    first_line = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
    return f"cannot reach the database {engine.url.render_as_string()}: {first_line}"
