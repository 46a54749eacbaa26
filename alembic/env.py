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
        )
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("Marsad's migrations run online only: alembic upgrade head")
run_migrations_online()
