"""Alembic environment: Marsad's models, the database from MARSAD_DATABASE_URL or the caller."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from marsad.config import get_settings
from marsad.db import VERSION_TABLE, make_engine
from models import Base

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata

# Full-text search (migration 0006) lives in the database only, not in the models: SQLite's FTS5
# table with its shadow tables, PostgreSQL's generated tsvector column and its GIN index.
SEARCH_TABLE_PREFIX = "articles_fts"
SEARCH_COLUMNS = {("articles", "search_vector")}
SEARCH_INDEXES = {"ix_articles_search_vector"}


def include_name(name: str | None, type_: str, _parent_names: object) -> bool:
    return not (type_ == "table" and name is not None and name.startswith(SEARCH_TABLE_PREFIX))


def include_object(
    obj: object, name: str | None, type_: str, _reflected: bool, _compare_to: object
) -> bool:
    if type_ == "column":
        return (getattr(getattr(obj, "table", None), "name", None), name) not in SEARCH_COLUMNS
    if type_ == "index":
        return name not in SEARCH_INDEXES
    return True


def run_migrations_online() -> None:
    engine = config.attributes.get("engine") or make_engine(get_settings().database_url)
    with engine.begin() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table=VERSION_TABLE,
            # SQLite cannot ALTER most things; batch mode recreates tables instead.
            render_as_batch=True,
            compare_type=True,
            include_name=include_name,
            include_object=include_object,
        )
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("Marsad's migrations run online only: alembic upgrade head")
run_migrations_online()
