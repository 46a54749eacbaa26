"""Storage faults and overlapping runs, on real SQLite and PostgreSQL: a run that cannot write
fails with a clear error, what it committed stays, and the next run stores exactly the rest.

The ingests here run the stages of flows/ingest.py in the same order without Prefect (as
test_digest.run_digest does for the digest), with a page batch of 2 instead of MARSAD_PAGE_BATCH's
default of 200, so that a run has several batches to be interrupted between. Where a
real process kill is the point, the ingest runs in a subprocess of its own.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from digest_data import HAMRIN_RAID, add_article, add_feed
from loopback import LoopbackServer
from smtp import SmtpServer
from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.exc import OperationalError
from test_digest import NOW, digest_rows, run_digest
from webdata import ENGLISH_PARAGRAPHS, Item, article_page, rss

from marsad import db as marsad_db
from marsad import delivery
from marsad import ingest as stages
from marsad.config import get_settings, reset_settings
from marsad.db import make_engine, session_scope
from marsad.errors import OutboxError
from marsad.extract import shared_pool
from marsad.feeds import FeedSpec
from marsad.store import add_feeds
from models import Article, DigestStatus, ExtractionStatus

TESTS = Path(__file__).resolve().parent.parent
BATCH = 2
PAGES = 8


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARSAD_ALLOW_HOSTS", "127.0.0.1")
    monkeypatch.setenv("MARSAD_EXTRACT_WORKERS", "1")
    reset_settings()


def ingest_once(engine: Engine) -> stages.RunSummary:
    """What one run of the ingest flow does, without Prefect, in batches of BATCH pages."""
    settings = get_settings()
    pool = shared_pool(settings.extract_workers, settings.extract_timeout, settings.extract_max_bytes)
    run_id = stages.open_run(engine)
    outcomes = stages.parse_feeds(stages.poll_feeds(engine, settings))
    record = stages.record_feeds(engine, settings, run_id, outcomes)
    stored = []
    while pending := stages.claim_pages(engine, settings, limit=BATCH):
        fetched = stages.fetch_pages(settings, pending)
        stored.append(stages.store_articles(engine, settings, stages.tag_articles(
            stages.extract_pages(pool, settings, fetched))))
    return stages.finish_run(engine, run_id, outcomes, record, stored)


def _subprocess_main() -> None:  # python -c entry point for the ingest subprocesses
    engine = make_engine(os.environ["MARSAD_DATABASE_URL"])
    print(ingest_once(engine).as_log_line(), flush=True)


def start_ingest_process() -> subprocess.Popen[str]:
    code = (f"import sys; sys.path[:0] = [{str(TESTS)!r}, {str(Path(__file__).parent)!r}]; "
            "import test_storage_faults as t; t._subprocess_main()")
    # A session of its own: the kill reaches the extractor worker it starts as well.
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env=dict(os.environ))


def serve_slow_news(server: LoopbackServer, delay: float = 0.6) -> list[str]:
    """One feed of PAGES articles whose pages take ``delay`` seconds each; returns the page paths."""
    paths = [f"/news/{n}.html" for n in range(PAGES)]
    for n, path in enumerate(paths):
        server.add(path, article_page(f"Story {n}: ISIS cell {n} dismantled", ENGLISH_PARAGRAPHS), delay=delay)
    server.add("/feed.xml", rss("Frontier Wire", [
        Item(f"Story {n}: ISIS cell {n} dismantled", server.url(path), f"fw-{n}", "Teaser.")
        for n, path in enumerate(paths)
    ]), content_type="application/rss+xml")
    return paths


def stored_ok(engine: Engine) -> int:
    with session_scope(engine) as session:
        return session.scalar(select(func.count()).select_from(Article).where(
            Article.extraction_status == ExtractionStatus.OK)) or 0


def all_articles(engine: Engine) -> list[Article]:
    with session_scope(engine) as session:
        return list(session.scalars(select(Article).order_by(Article.id)))


def expire_page_leases(engine: Engine) -> None:
    """Time passes: the leases a dead or failed run held on its pages run out."""
    with session_scope(engine) as session:
        session.execute(update(Article).where(Article.extraction_status == ExtractionStatus.PENDING)
                        .values(next_fetch_at=None))


def assert_every_page_stored_once(engine: Engine, server: LoopbackServer, paths: list[str]) -> None:
    articles = all_articles(engine)
    assert sorted(a.canonical_url for a in articles) == sorted(server.url(p) for p in paths)
    assert {a.extraction_status for a in articles} == {ExtractionStatus.OK}
    assert all(a.title and a.title.startswith("Story ") for a in articles)


def add_feed_url(engine: Engine, url: str) -> None:
    with session_scope(engine) as session:
        add_feeds(session, [FeedSpec(url=url)])


# --- killed, overlapping ------------------------------------------------------------------------


def test_an_ingest_killed_after_its_first_batch_keeps_it_and_the_rerun_stores_the_rest_once(
    engine: Engine, http_server: LoopbackServer
) -> None:
    paths = serve_slow_news(http_server)
    add_feed_url(engine, http_server.url("/feed.xml"))
    process = start_ingest_process()
    try:
        deadline = time.monotonic() + 60
        while stored_ok(engine) < BATCH:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the first batch was never committed"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    committed = {a.id for a in all_articles(engine) if a.extraction_status == ExtractionStatus.OK}
    assert BATCH <= len(committed) < PAGES  # killed mid-run, its committed batches durable
    assert len(all_articles(engine)) == PAGES  # every item was recorded before any page was fetched

    # A rerun at once leaves the dead run's leased batch alone, and duplicates nothing.
    ingest_once(engine)
    assert len(all_articles(engine)) == PAGES
    expire_page_leases(engine)
    summary = ingest_once(engine)
    assert summary.articles_new == 0
    assert_every_page_stored_once(engine, http_server, paths)
    for article in all_articles(engine):
        if article.id in committed:  # what was committed was not fetched again
            assert len(http_server.requests_for(article.canonical_url.split(str(http_server.port))[1])) == 1


def test_two_ingest_processes_at_once_store_each_article_once(engine: Engine, http_server: LoopbackServer) -> None:
    paths = serve_slow_news(http_server, delay=0.2)
    add_feed_url(engine, http_server.url("/feed.xml"))
    processes = [start_ingest_process() for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert_every_page_stored_once(engine, http_server, paths)
    assert len(http_server.requests_for("/feed.xml")) == 1  # the feed was claimed by one of them
    assert all(len(http_server.requests_for(p)) == 1 for p in paths)  # each page by one of them


# --- the database goes away in the middle of a run ----------------------------------------------


@contextmanager
def database_unavailable(db_url: str, engine: Engine) -> Iterator[None]:
    """PostgreSQL: refuse new connections and end the open ones. SQLite: another process's
    connection holds the write lock (the busy timeout is shortened so the wait is brief)."""
    if engine.dialect.name == "postgresql":
        name = engine.url.database
        admin = make_engine(db_url.rsplit("/", 1)[0] + "/postgres").execution_options(isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            connection.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name})
        try:
            yield
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            admin.dispose()
    else:
        holder = sqlite3.connect(engine.url.database, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            holder.rollback()
            holder.close()


def test_database_gone_mid_run_is_a_clear_error_and_the_next_run_stores_exactly_the_rest(
    db_url: str, http_server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(marsad_db, "SQLITE_BUSY_TIMEOUT_MS", 500)
    engine = make_engine(db_url)
    paths = serve_slow_news(http_server, delay=0)
    add_feed_url(engine, http_server.url("/feed.xml"))
    settings = get_settings()
    pool = shared_pool(settings.extract_workers, settings.extract_timeout, settings.extract_max_bytes)
    run_id = stages.open_run(engine)
    outcomes = stages.parse_feeds(stages.poll_feeds(engine, settings))
    stages.record_feeds(engine, settings, run_id, outcomes)
    first = stages.claim_pages(engine, settings, limit=BATCH)
    stages.store_articles(engine, settings, stages.tag_articles(
        stages.extract_pages(pool, settings, stages.fetch_pages(settings, first))))
    second = stages.tag_articles(stages.extract_pages(
        pool, settings, stages.fetch_pages(settings, stages.claim_pages(engine, settings, limit=BATCH))))

    with database_unavailable(db_url, engine):
        started = time.monotonic()
        with pytest.raises(OperationalError) as failure:
            stages.store_articles(engine, settings, second)
        message = str(failure.value.orig)
    assert ("database is locked" in message) if engine.dialect.name == "sqlite" else (
        "not currently accepting connections" in message or "terminat" in message), message
    assert time.monotonic() - started < 20

    assert stored_ok(engine) == BATCH  # the first batch stands, the failed one left no half
    expire_page_leases(engine)
    summary = ingest_once(engine)
    assert summary.articles_stored == PAGES - BATCH
    assert_every_page_stored_once(engine, http_server, paths)
    engine.dispose()


# --- SQLite busy, at the command line ------------------------------------------------------------


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sqlite_writer_waits_for_a_short_lock_and_reports_a_long_one_in_one_line(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from marsad.cli import app

    assert marsad_db.SQLITE_BUSY_TIMEOUT_MS == 30_000  # what production waits
    monkeypatch.setattr(marsad_db, "SQLITE_BUSY_TIMEOUT_MS", 1500)
    marsad_db.get_engine.cache_clear()
    path = db_url.removeprefix("sqlite:///")
    runner = CliRunner()

    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    threading.Timer(0.5, holder.rollback).start()  # a lock shorter than the busy timeout
    started = time.monotonic()
    waited = runner.invoke(app, ["feeds", "add", "https://wire.example/rss"])
    assert waited.exit_code == 0, waited.output
    assert time.monotonic() - started >= 0.4

    holder.execute("BEGIN IMMEDIATE")  # and one that outlasts it
    try:
        started = time.monotonic()
        refused = runner.invoke(app, ["feeds", "add", "https://other.example/rss"])
        elapsed = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
    assert refused.exit_code == 1
    assert refused.stderr.strip() == (
        "marsad: error: database error: database is locked: another process kept the SQLite "
        "database busy for more than 1.5 s (another marsad run, or a tool holding a transaction "
        "open); try again when it is done"
    )
    assert "Traceback" not in refused.output
    assert 1.4 <= elapsed < 10
    with session_scope(make_engine(db_url)) as session:
        from models import Feed

        assert session.scalars(select(Feed.url)).all() == ["https://wire.example/rss"]


# --- disk full -----------------------------------------------------------------------------------


@pytest.fixture
def one_story(engine: Engine) -> None:
    with session_scope(engine) as session:
        feed = add_feed(session, "Levant Monitor", "https://levant-monitor.example/feed")
        add_article(session, feed, HAMRIN_RAID, fetched=NOW - timedelta(hours=1))


@pytest.mark.usefixtures("one_story")
def test_outbox_on_a_full_device_keeps_the_digest_pending_and_unsent(
    engine: Engine, smtp_server: SmtpServer
) -> None:
    """ENOSPC from the kernel: the outbox's temporary file is /dev/full, where every write fails
    with "No space left on device" (no root, no mount needed)."""
    outbox = Path("outbox")
    outbox.mkdir()
    partial = outbox / ".marsad-digest-2026-11-20-analyst@newsroom.test.eml.partial"
    partial.symlink_to("/dev/full")
    with pytest.raises(OutboxError, match="No space left on device"):
        run_digest(engine)
    row = digest_rows(engine)[0]
    assert row.status == DigestStatus.PENDING and "No space left on device" in (row.last_error or "")
    assert smtp_server.sink.received == []  # nothing sent without its outbox copy
    assert not (outbox / "marsad-digest-2026-11-20-analyst@newsroom.test.eml").exists()

    partial.unlink()  # space again
    assert [r.status for r in run_digest(engine, now=NOW + timedelta(minutes=30))] == ["sent"]
    assert run_digest(engine, now=NOW + timedelta(hours=1)) == []
    assert len(smtp_server.sink.received) == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sqlite_file_size_limit_is_a_clear_error_and_the_data_before_it_stays(db_url: str, tmp_path: Path) -> None:
    """RLIMIT_FSIZE in the command's process: SQLite's writes past it fail as on a full disk."""
    engine = make_engine(db_url)
    add_feed_url(engine, "https://kept.example/rss")
    with engine.connect() as connection:  # fold the WAL in: the limit then bites on new pages
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    path = Path(db_url.removeprefix("sqlite:///"))
    feeds = tmp_path / "feeds.yaml"
    feeds.write_text("".join(f"- url: https://wire{n}.example/{'x' * 200}/rss\n" for n in range(3000)))
    limit = path.stat().st_size + 16 * 1024
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
            "from marsad.cli import app; sys.argv = ['marsad', 'feeds', 'import', sys.argv[1]]; app()")
    result = subprocess.run([sys.executable, "-c", code, str(feeds)], capture_output=True, text=True,
                            timeout=120, env=dict(os.environ), check=False)
    assert result.returncode == 1, result
    assert result.stderr.startswith("marsad: error: database error: "), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert any(s in result.stderr for s in ("disk I/O error", "database or disk is full")), result.stderr

    engine = make_engine(db_url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        from models import Feed

        assert connection.execute(select(Feed.url)).scalars().all() == ["https://kept.example/rss"]
    engine.dispose()


# --- digests that overlap ------------------------------------------------------------------------


@pytest.mark.usefixtures("one_story")
def test_two_whole_digest_runs_at_once_send_one_digest(engine: Engine, smtp_server: SmtpServer) -> None:
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    reports: list[str] = []

    def run() -> None:
        barrier.wait()
        try:
            reports.extend(r.status for r in run_digest(engine))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert reports.count("sent") == 1
    assert len(digest_rows(engine)) == 1 and len(smtp_server.sink.received) == 1


def _two_recipients_and_a_full_disk_for_the_second(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> tuple[date, Path]:
    """One story for two recipients; the second one's outbox copy cannot be written (/dev/full).
    Returns today (the flow reads the real clock) and the path to unlink to free the space."""
    with session_scope(engine) as session:
        feed = add_feed(session, "Levant Monitor", "https://levant-monitor.example/feed")
        add_article(session, feed, HAMRIN_RAID, fetched=datetime.now(timezone.utc) - timedelta(minutes=30))
    monkeypatch.setenv("MARSAD_DIGEST_TO", "analyst@newsroom.test,desk@newsroom.test")
    reset_settings()
    outbox = Path("outbox")
    outbox.mkdir()
    today = datetime.now(get_settings().tz).date()
    partial = outbox / f".marsad-digest-{today}-desk@newsroom.test.eml.partial"
    partial.symlink_to("/dev/full")
    return today, partial


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_digest_flow_that_failed_half_way_rerun_the_same_day_sends_each_digest_once(
    engine: Engine, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.digest import digest

    today, partial = _two_recipients_and_a_full_disk_for_the_second(engine, monkeypatch)

    with pytest.raises(OutboxError, match="cannot write the digest"):
        digest(day=today)
    assert [m["To"] for m in smtp_server.sink.messages()] == ["analyst@newsroom.test"]

    partial.unlink()
    again = digest(day=today)
    assert again.prepared == 0  # the same day's digests, not new ones
    assert sorted(m["To"] for m in smtp_server.sink.messages()) == ["analyst@newsroom.test", "desk@newsroom.test"]
    assert [r.status for r in digest_rows(engine)] == [DigestStatus.SENT, DigestStatus.SENT]


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_prefect_retrying_the_whole_digest_flow_sends_each_digest_once(
    engine: Engine, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk is full for the second recipient's outbox copy through the task's own retry, so the
    flow fails and Prefect retries it whole; the space is freed before that retry."""
    from flows.digest import digest

    today, partial = _two_recipients_and_a_full_disk_for_the_second(engine, monkeypatch)
    disk_full: list[OutboxError] = []
    write_outbox = delivery.write_outbox

    def write_then_free_space_after_two_failures(*args: object, **kwargs: object) -> object:
        try:
            return write_outbox(*args, **kwargs)  # type: ignore[arg-type]
        except OutboxError as exc:
            disk_full.append(exc)
            if len(disk_full) == 2:  # the task's retry failed too: the flow fails
                partial.unlink()
            raise

    monkeypatch.setattr(delivery, "write_outbox", write_then_free_space_after_two_failures)
    summary = digest.with_options(retries=1, retry_delay_seconds=0)(day=today)

    assert len(disk_full) == 2 and "No space left on device" in str(disk_full[0])
    assert summary.prepared == 0  # the retried run found the day's digests, it made none
    assert sorted(m["To"] for m in smtp_server.sink.messages()) == ["analyst@newsroom.test", "desk@newsroom.test"]
    assert [r.status for r in digest_rows(engine)] == [DigestStatus.SENT, DigestStatus.SENT]
