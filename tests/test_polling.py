"""Adaptive polling: feeds that change often are polled sooner, quiet ones later, failing ones
back off and are finally set inactive; what the feed itself asks (ttl, sy:update*) is respected."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from loopback import LoopbackServer
from marsad import ingest as stages
from marsad.cli import app
from marsad.config import Settings, reset_settings
from marsad.db import session_scope
from marsad.feeds import FeedSpec, parse_feed
from marsad.store import add_feeds
from models import Feed
from webdata import Item, rss

SETTINGS = Settings(poll_min_minutes=10, poll_max_hours=24)


@pytest.mark.parametrize(
    ("current", "brought_new", "hint", "expected"),
    [
        (None, False, None, 10),  # a new feed starts at the minimum
        (40, True, None, 20),  # new items: sooner
        (40, False, None, 60),  # nothing new: later
        (12, True, None, 10),  # never below the minimum
        (1200, False, None, 1440),  # never above the maximum
        (10, True, 120, 120),  # the feed's ttl is a floor
        (10, True, 5000, 1440),  # ... but not beyond the maximum
        (100, False, 30, 150),  # a hint shorter than the interval changes nothing
        (1000, True, None, 500),  # halved exactly
        (15, False, None, 22.5),  # half as long again, exactly
        (1440, False, 1440, 1440),  # at the maximum it stays there
    ],
)
def test_next_interval(current: float | None, brought_new: bool, hint: float | None, expected: float) -> None:
    assert stages.next_interval(current, brought_new, hint, SETTINGS) == expected


def test_the_polling_bounds_and_backoff_defaults_are_the_documented_ones() -> None:
    fields = Settings.model_fields
    assert fields["poll_min_minutes"].default == 10 and fields["poll_max_hours"].default == 24
    assert fields["backoff_base_minutes"].default == 15 and fields["backoff_max_hours"].default == 24


@pytest.mark.parametrize(
    ("failures", "minutes"),
    [
        (0, 15),  # (never called with 0; the first failure's wait all the same)
        (1, 15),
        (2, 30),
        (3, 60),
        (4, 120),
        (5, 240),
        (6, 480),
        (7, 960),
        (8, 1440),  # 1920 capped at 24 hours
        (20, 1440),
        (10_000, 1440),  # no overflow however long a feed has failed
    ],
)
def test_backoff_doubles_from_15_minutes_per_failure_up_to_a_day(failures: int, minutes: int) -> None:
    assert stages.backoff(failures, 15, 24) == timedelta(minutes=minutes)


NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("failures", "retry_after", "wait"),
    [
        (1, None, timedelta(minutes=15)),
        (3, None, timedelta(hours=1)),
        (1, 3600.0, timedelta(hours=1)),  # Retry-After longer than the backoff: it wins
        (3, 600.0, timedelta(hours=1)),  # shorter: the backoff wins
        (9, 2 * 86400.0, timedelta(days=1)),  # a Retry-After of days is held to one day
        (1, 30 * 86400.0, timedelta(days=1)),
        (2, 0.0, timedelta(minutes=30)),  # nonsense values are ignored
        (2, -60.0, timedelta(minutes=30)),
        (2, math.nan, timedelta(minutes=30)),
        (2, math.inf, timedelta(minutes=30)),
    ],
)
def test_next_poll_after_failure_backs_off_and_never_comes_before_retry_after(
    failures: int, retry_after: float | None, wait: timedelta
) -> None:
    settings = Settings(backoff_base_minutes=15, backoff_max_hours=24)
    assert stages.next_poll_after_failure(NOW, failures, retry_after, settings) == NOW + wait


def test_a_feeds_declared_update_period_sets_its_floor() -> None:
    daily = parse_feed(_channel("<sy:updatePeriod>daily</sy:updatePeriod>"), "https://a.example/rss")
    assert stages.next_interval(10, True, daily.hint_minutes, SETTINGS) == 1440


def _channel(extra: str) -> bytes:
    return (
        '<?xml version="1.0"?><rss version="2.0" xmlns:sy="http://purl.org/rss/1.0/modules/syndication/">'
        f"<channel><title>T</title>{extra}<item><title>A</title><link>https://a.example/1</link></item>"
        "</channel></rss>"
    ).encode()


@pytest.mark.parametrize(
    ("extra", "minutes"),
    [
        ("<ttl>90</ttl>", 90),
        ("<sy:updatePeriod>hourly</sy:updatePeriod><sy:updateFrequency>2</sy:updateFrequency>", 30),
        ("<sy:updatePeriod>daily</sy:updatePeriod>", 1440),
        ("<ttl>30</ttl><sy:updatePeriod>hourly</sy:updatePeriod>", 60),  # the longer of the two
        ("<ttl>soon</ttl><sy:updatePeriod>fortnightly</sy:updatePeriod>", None),
        ("<ttl>-5</ttl>", None),
        ("", None),
    ],
)
def test_update_hints_are_read_from_the_feed(extra: str, minutes: float | None) -> None:
    assert parse_feed(_channel(extra), "https://a.example/rss").hint_minutes == minutes


pytestmark_flow = pytest.mark.usefixtures("prefect_harness", "allow_loopback")


def _run(feed_urls: list[str] | None = None) -> stages.RunSummary:
    from flows.ingest import ingest

    return ingest(feed_urls=feed_urls)


def _feed(engine: Engine, url: str) -> Feed:
    with session_scope(engine) as session:
        return session.scalar(select(Feed).where(Feed.url == url))


@pytestmark_flow
def test_intervals_follow_the_feed_and_its_ttl(engine: Engine, http_server: LoopbackServer) -> None:
    busy = http_server.url("/busy.xml")
    quiet = http_server.url("/quiet.xml")
    http_server.add("/busy.xml", rss("Busy", [Item("One", http_server.url("/gone-1.html"), "1")]))
    http_server.add(
        "/quiet.xml",
        rss("Quiet", [Item("Old", http_server.url("/gone-2.html"), "2")]).replace(
            b"<channel>", b"<channel><ttl>180</ttl>"
        ),
    )
    with session_scope(engine) as session:
        add_feeds(session, [FeedSpec(busy), FeedSpec(quiet)])

    before = stages.utcnow()
    _run()
    first_busy, first_quiet = _feed(engine, busy), _feed(engine, quiet)
    assert first_busy.poll_interval_minutes == 10  # first poll: the minimum
    assert first_quiet.poll_interval_minutes == 180 and first_quiet.feed_hint_minutes == 180
    assert before + timedelta(minutes=177) <= first_quiet.next_poll_at <= stages.utcnow() + timedelta(minutes=178)

    # Nothing new on the busy feed: its next wait grows; new items: it shrinks again.
    _run([busy])
    assert _feed(engine, busy).poll_interval_minutes == 15
    http_server.add("/busy.xml", rss("Busy", [
        Item("One", http_server.url("/gone-1.html"), "1"), Item("Two", http_server.url("/gone-3.html"), "3"),
    ]))
    _run([busy])
    assert _feed(engine, busy).poll_interval_minutes == 10
    # A scheduled run now finds neither feed due.
    assert _run().feeds_polled == 0


@pytestmark_flow
def test_a_feed_that_keeps_failing_is_set_inactive_and_can_be_enabled(
    engine: Engine, http_server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARSAD_FEED_MAX_FAILURES", "3")
    reset_settings()
    url = http_server.url("/down.xml")
    http_server.add("/down.xml", "unavailable", status=503)
    with session_scope(engine) as session:
        add_feeds(session, [FeedSpec(url)])
    for failures, minutes in ((1, 15), (2, 30), (3, 60)):
        _run([url])
        feed = _feed(engine, url)
        assert feed.error_count == failures
        assert feed.next_poll_at - feed.last_fetched_at == timedelta(minutes=minutes)  # the backoff
    assert not feed.active and feed.error_count == 3
    assert feed.last_error.startswith("set inactive after 3 failed polls in a row") and "503" in feed.last_error

    http_server.add("/down.xml", rss("Back", [Item("Back", http_server.url("/gone.html"), "b")]))
    result = CliRunner().invoke(app, ["feeds", "enable", url])
    assert result.exit_code == 0, result.output
    feed = _feed(engine, url)
    assert feed.active and feed.error_count == 0 and feed.next_poll_at is None
    assert _run().feeds_ok == 1  # due at the next scheduled run

    assert CliRunner().invoke(app, ["feeds", "disable", url]).exit_code == 0
    assert not _feed(engine, url).active
    unknown = CliRunner().invoke(app, ["feeds", "enable", "https://nowhere.example/rss"])
    assert unknown.exit_code == 1 and "feed not registered" in unknown.stderr


@pytestmark_flow
def test_ingest_feed_on_a_feed_switched_off_for_failing_turns_it_back_on(
    engine: Engine, http_server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARSAD_FEED_MAX_FAILURES", "2")
    reset_settings()
    failing, by_hand = http_server.url("/flaky.xml"), http_server.url("/paused.xml")
    http_server.add("/flaky.xml", "unavailable", status=503)
    http_server.add("/paused.xml", rss("Paused", [Item("P", http_server.url("/gone-p.html"), "p")]))
    with session_scope(engine) as session:
        add_feeds(session, [FeedSpec(failing), FeedSpec(by_hand)])
    for _ in range(2):
        _run([failing])
    assert not _feed(engine, failing).active
    assert CliRunner().invoke(app, ["feeds", "disable", by_hand]).exit_code == 0

    http_server.add("/flaky.xml", rss("Back", [Item("Back", http_server.url("/gone-b.html"), "b")]))
    assert _run([failing, by_hand]).feeds_ok == 2
    back, paused = _feed(engine, failing), _feed(engine, by_hand)
    assert back.active and back.last_error is None and back.error_count == 0
    assert not paused.active  # an operator's choice is not undone by a test poll
