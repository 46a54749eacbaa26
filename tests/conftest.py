"""Shared fixtures: a real loopback HTTP server, real SQLite and PostgreSQL, Prefect's test harness.

PostgreSQL: MARSAD_TEST_POSTGRES_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test)
is used to create one scratch database per test session (per xdist worker). Without a reachable
server the PostgreSQL cases skip, saying why, except in CI (CI=true), where they fail instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from loopback import LoopbackServer
from smtp import SmtpServer
from marsad.config import reset_settings
from marsad.db import make_engine, upgrade

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Prefect's temporary server gets 20 s to start by default; on a busy two-core machine (xdist
# workers each starting one) it can need more.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

POSTGRES_ADMIN_URL = os.environ.get(
    "MARSAD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Every test starts from the defaults, in its own folder, with no user .env or MARSAD_* leaking in."""
    for name in list(os.environ):
        if name.startswith("MARSAD_") and name != "MARSAD_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    reset_settings()
    yield
    reset_settings()


@pytest.fixture
def http_server() -> Iterator[LoopbackServer]:
    with LoopbackServer("127.0.0.1") as server:
        yield server


@pytest.fixture
def smtp_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpServer]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1, configured as Marsad's server."""
    with SmtpServer() as server:
        monkeypatch.setenv("MARSAD_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("MARSAD_SMTP_PORT", str(server.port))
        monkeypatch.setenv("MARSAD_SMTP_SECURITY", "none")
        monkeypatch.setenv("MARSAD_SMTP_TIMEOUT", "10")
        monkeypatch.setenv("MARSAD_DIGEST_FROM", "marsad@observatory.test")
        monkeypatch.setenv("MARSAD_DIGEST_TO", "analyst@newsroom.test")
        reset_settings()
        yield server


# Databases -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_url(worker_id: str) -> Iterator[str]:
    """A scratch PostgreSQL database for this test session, migrated to head."""
    admin = make_engine(POSTGRES_ADMIN_URL).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            name = f"marsad_test_{worker_id}_{uuid.uuid4().hex[:8]}"
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any failure to reach the server means "no PostgreSQL"
        message = f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {str(exc).splitlines()[0]}"
        if IN_CI:
            pytest.fail(f"{message} (CI must run the PostgreSQL tests)")
        pytest.skip(message)
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def worker_id(request: pytest.FixtureRequest) -> str:
    # pytest-xdist provides this fixture; without xdist every test runs in the "main" worker.
    workerinput = getattr(request.config, "workerinput", None)
    return workerinput["workerid"] if workerinput else "main"


def _truncate_all(engine: Engine) -> None:
    from models import Base

    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            names = ", ".join(table.name for table in Base.metadata.sorted_tables)
            connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(Base.metadata.sorted_tables):
                connection.execute(table.delete())


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A migrated, empty database URL on each backend, also set as MARSAD_DATABASE_URL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'marsad.db'}"
        engine = make_engine(url)
        upgrade(engine)
    else:
        url = request.getfixturevalue("postgres_url")
        engine = make_engine(url)
        _truncate_all(engine)
    engine.dispose()
    monkeypatch.setenv("MARSAD_DATABASE_URL", url)
    reset_settings()
    yield url
    from marsad.db import get_engine

    get_engine.cache_clear()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the fetcher reach the test server on 127.0.0.1 (and only that loopback address)."""
    monkeypatch.setenv("MARSAD_ALLOW_HOSTS", "127.0.0.1")
    reset_settings()


# Prefect ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """Prefect's own test harness: a temporary API and database for the whole session."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    # The harness's own 30 s start-up limit is too short when both xdist workers start theirs at
    # once on a busy two-core machine.
    with prefect_test_harness(server_startup_timeout=180), temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
