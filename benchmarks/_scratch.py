"""A throwaway PostgreSQL database for a benchmark run, on MARSAD_TEST_POSTGRES_URL's server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text

from marsad.db import make_engine

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextmanager
def scratch_postgres(prefix: str) -> Iterator[Engine]:
    """An engine on a new database named ``<prefix>_<random>``, dropped afterwards however the
    run ends (FORCE: a benchmark that fails may leave connections open)."""
    admin = make_engine(os.environ.get("MARSAD_TEST_POSTGRES_URL", DEFAULT_ADMIN_URL))
    admin = admin.execution_options(isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(admin.url.set(database=name).render_as_string(hide_password=False))
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
