"""`marsad trends`, `search` and `status` as analysts and their scripts call them (the contract)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from digest_data import AMMAN_BAGHDAD, CENTCOM_STRIKE, HAMRIN_RAID, WHEAT_PRICES, add_article, add_feed
from marsad.cli import app
from marsad.config import reset_settings
from marsad.db import session_scope
from models import Feed, IngestRun

runner = CliRunner()
NOW = datetime.now(timezone.utc).replace(microsecond=0)
# Between today's midnight (UTC) and now, whatever the hour the tests run at.
EARLIER_TODAY = NOW - (NOW - datetime.combine(NOW.date(), datetime.min.time(), tzinfo=timezone.utc)) / 2


def marsad(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def archive(engine: Engine) -> None:
    """Today: the raid and the Amman story; three days ago: the strike; ten days ago: an
    off-topic story; a failing feed; one finished ingest run."""
    with session_scope(engine) as session:
        monitor = add_feed(session, "Levant Monitor", "https://levant-monitor.example/feed")
        jisr = add_feed(session, "الجسر", "https://jisr.example/atom")
        broken = add_feed(session, "Broken Feed", "https://broken.example/rss")
        broken.error_count, broken.last_status, broken.last_error = 2, "error", "HTTP 502"
        add_article(session, monitor, HAMRIN_RAID, fetched=NOW, published=EARLIER_TODAY)
        add_article(session, jisr, AMMAN_BAGHDAD, fetched=NOW, published=EARLIER_TODAY)
        add_article(session, monitor, CENTCOM_STRIKE, fetched=NOW - timedelta(days=3), published=NOW - timedelta(days=3))
        add_article(session, monitor, WHEAT_PRICES, fetched=NOW - timedelta(days=10), published=NOW - timedelta(days=10))
        session.add(IngestRun(started_at=NOW - timedelta(minutes=25), finished_at=NOW - timedelta(minutes=24),
                              status="completed", feeds_polled=3, feeds_failed=1, articles_new=2,
                              articles_stored=2, failures={"feed:http_502": 1}))


@pytest.mark.usefixtures("archive")
def test_trends_json_follows_the_contract(engine: Engine) -> None:
    today = NOW.date()
    code, out, err = marsad("trends", "--since", (today - timedelta(days=3)).isoformat(),
                            "--until", today.isoformat(), "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    assert all(set(row) == {"period", "topic", "count"} for row in rows)
    counts = {(row["period"], row["topic"]): row["count"] for row in rows}
    assert len(counts) == 4 * 3  # four days, three topics, zeros included
    assert counts[(today.isoformat(), "isis")] == 2  # the raid, and Amman (also tagged isis)
    assert counts[(today.isoformat(), "regional_cooperation")] == 1
    assert counts[((today - timedelta(days=3)).isoformat(), "coalition")] == 1
    assert sum(counts.values()) == 5


@pytest.mark.usefixtures("archive")
def test_trends_breakdown_csv_and_plot(engine: Engine, tmp_path: Path) -> None:
    from PIL import Image

    chart = tmp_path / "trends.png"
    code, out, err = marsad("trends", "--topic", "isis", "--by", "week", "--breakdown", "language",
                            "--format", "csv", "--plot", str(chart))
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "period,topic,language,count"
    assert any(line.endswith(",isis,ar,1") for line in lines[1:])
    with Image.open(chart) as image:
        assert image.format == "PNG" and image.width >= 600


def test_trends_rejects_unknown_topic(db_url: str) -> None:
    code, _out, err = marsad("trends", "--topic", "football")
    assert code == 1 and err.startswith("marsad: error: ") and "football" in err


@pytest.mark.usefixtures("archive")
def test_search_json_follows_the_contract_in_both_languages(engine: Engine) -> None:
    code, out, err = marsad("search", "Hamrin", "--format", "json")
    assert code == 0, err
    hits = json.loads(out)
    assert [set(h) for h in hits] == [{"id", "url", "title", "published_at", "topics", "snippet"}]
    assert hits[0]["title"] == HAMRIN_RAID.title and hits[0]["topics"] == ["isis"]
    assert "Hamrin" in hits[0]["snippet"]

    code, out, _ = marsad("search", "الاستخبارية", "--topic", "regional_cooperation", "--format", "json")
    assert [h["title"] for h in json.loads(out)] == [AMMAN_BAGHDAD.title]
    code, out, _ = marsad("search", "Hamrin", "--topic", "coalition", "--format", "json")
    assert json.loads(out) == []


def test_search_without_words_is_a_friendly_error(db_url: str) -> None:
    code, _out, err = marsad("search", '"" ()')
    assert code == 1 and err.startswith("marsad: error: ")


@pytest.mark.usefixtures("archive")
def test_status_shows_feeds_runs_and_counts(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARSAD_TIMEZONE", "UTC")
    reset_settings()
    code, out, err = marsad("status", "--format", "json")
    assert code == 0, err
    state = json.loads(out)
    assert state["feeds"]["active"] == 3 and state["feeds"]["ok"] == 2
    assert [f["name"] for f in state["feeds"]["failing"]] == ["Broken Feed"]
    assert state["runs"][0]["articles_new"] == 2 and state["runs"][0]["failures"] == {"feed:http_502": 1}
    topics = {t["topic"]: (t["today"], t["last_7_days"]) for t in state["topics"]}
    assert topics == {"isis": (2, 3), "coalition": (0, 1), "regional_cooperation": (1, 1)}

    code, out, err = marsad("status")
    assert code == 0, err
    assert "3 active (2 ok, 1 failing, 0 silent)" in out
    assert "failing: Broken Feed" in out and "HTTP 502" in out


def test_search_help_says_how_to_start_with_an_exclusion(db_url: str) -> None:
    code, out, _err = marsad("search", "--help")
    assert code == 0 and "marsad search --" in " ".join(out.split())
    code, _out, err = marsad("search", "-wheat hamrin")  # read as an option
    assert code != 0
    code, out, err = marsad("search", "--format", "json", "--", "-wheat hamrin")
    assert code == 0 and json.loads(out) == [], err


@pytest.fixture
def troubled_feeds(engine: Engine) -> None:
    """A feed switched off after failing, one disabled by hand while healthy, one gone silent
    after publishing daily, and one that only ever posted a few articles."""
    with session_scope(engine) as session:
        dead = add_feed(session, "Dead Wire", "https://dead-wire.example/rss")
        dead.active, dead.error_count, dead.last_status = False, 20, "failed"
        dead.last_error = ("set inactive after 20 failed polls in a row (`marsad feeds enable` to "
                           "retry); last error: HTTP 503")
        dead.last_fetched_at = NOW - timedelta(days=2)
        paused = add_feed(session, "Paused Feed", "https://paused.example/rss")
        paused.active, paused.last_status = False, "ok"
        quiet = add_feed(session, "Quiet Daily", "https://quiet.example/rss")
        for n in range(20):
            add_article(session, quiet, WHEAT_PRICES, fetched=NOW - timedelta(days=5 + n),
                        url=f"https://quiet.example/{n}")
        sparse = add_feed(session, "Sparse Monthly", "https://sparse.example/rss")
        for n in range(3):
            add_article(session, sparse, WHEAT_PRICES, fetched=NOW - timedelta(days=9 + 10 * n),
                        url=f"https://sparse.example/{n}")


@pytest.mark.usefixtures("troubled_feeds")
def test_status_lists_feeds_switched_off_after_failing(engine: Engine) -> None:
    code, out, err = marsad("status", "--format", "json")
    assert code == 0, err
    feeds = json.loads(out)["feeds"]
    assert feeds["inactive"] == 2 and feeds["active"] == 2
    assert [f["name"] for f in feeds["silent"]] == ["Quiet Daily"]
    [dead] = feeds["switched_off"]
    assert dead["name"] == "Dead Wire" and dead["url"] == "https://dead-wire.example/rss"
    assert "20 failed polls" in dead["detail"] and "HTTP 503" in dead["detail"]
    assert datetime.fromisoformat(dead["since"]) == NOW - timedelta(days=2)
    assert dead["hint"] == "re-enable with: marsad feeds enable https://dead-wire.example/rss"

    code, out, err = marsad("status")
    assert code == 0, err
    assert "Paused Feed" not in out
    [line] = [line for line in out.splitlines() if "Dead Wire" in line]
    assert line.strip().startswith("switched off: Dead Wire (https://dead-wire.example/rss)")
    assert "HTTP 503" in line and line.endswith("re-enable with: marsad feeds enable https://dead-wire.example/rss")


@pytest.mark.usefixtures("archive", "troubled_feeds")
def test_status_work_does_not_grow_with_the_archive(engine: Engine) -> None:
    """`marsad status` reads each feed's newest article and the recent tags through indexes:
    thousands of older articles add no work (counted in SQLite virtual machine steps), so it
    stays fast over millions of articles (benchmarks/trends.py times it on both backends)."""
    if engine.dialect.name != "sqlite":
        pytest.skip("counts SQLite's virtual machine steps; benchmarks/trends.py times PostgreSQL")
    from sqlalchemy import insert

    from marsad.config import get_settings
    from marsad.status import collect
    from models import Article

    def steps() -> int:
        count = 0

        def tick() -> int:
            nonlocal count
            count += 1
            return 0

        with session_scope(engine) as session:
            raw = session.connection().connection.driver_connection
            raw.set_progress_handler(tick, 10)
            try:
                state = collect(session, get_settings(), NOW)
            finally:
                raw.set_progress_handler(None, 0)
        assert [p.name for p in state.health.silent] == ["Quiet Daily"]
        return count

    before = steps()
    with session_scope(engine) as session:
        feed_id = session.scalar(select(Feed.id).where(Feed.name == "Levant Monitor"))
        session.execute(insert(Article), [
            {"canonical_url": f"https://levant-monitor.example/old/{n}", "url": f"https://levant-monitor.example/old/{n}",
             "feed_id": feed_id, "title": "Old story", "text": "An old story.", "extraction_status": "ok",
             "discovered_at": NOW - timedelta(days=60, minutes=n)}
            for n in range(5000)
        ])
    after = steps()
    assert after < before * 1.2, (before, after)
