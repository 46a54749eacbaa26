"""Trends on SQLite and PostgreSQL: exact counts per day, ISO week and month in the analysts' time
zone (late evening and just after midnight, daylight-saving changes, half-hour offsets, year ends,
undated articles), breakdowns, zero-filled periods, spikes, the chart, and the story times the
schema stores (backfill in migration 0005, kept in step by the ingest, views for analysts)."""

from __future__ import annotations

import io
import random
import time as time_module
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from PIL import Image
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from alembic import command
from marsad import trends
from marsad.config import get_settings, reset_settings
from marsad.db import _alembic_config
from marsad.errors import InputError
from marsad.ingest import ArticleUpdate, store_articles
from marsad.trends import find_spikes, period_start, plot, spikes, topic_counts
from models import Article, ArticleTag, Feed

BAGHDAD = ZoneInfo("Asia/Baghdad")  # UTC+3, no daylight saving
TEHRAN = ZoneInfo("Asia/Tehran")  # UTC+3:30
BEIRUT = ZoneInfo("Asia/Beirut")  # +2/+3: clocks skip 00:00-01:00 on 29 March 2026 and repeat
# 23:00-24:00 on 24 October 2026


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(tz: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=tz).astimezone(UTC)


class Corpus:
    """Articles stored as the ingest leaves them: a feed, a story time, tags, places."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.feed = Feed(url="https://al-jisr.example/rss", name="Al-Jisr", language="ar")
        self.unnamed = Feed(url="https://unnamed.example/rss", name=None)
        session.add_all([self.feed, self.unnamed])
        session.flush()
        self.n = 0

    def add(
        self,
        published: datetime | None,
        topics: tuple[str, ...] = ("isis",),
        *,
        discovered: datetime | None = None,
        feed: Feed | None = None,
        site_name: str | None = None,
        language: str = "en",
        places: list[str] | None = None,
    ) -> Article:
        self.n += 1
        url = f"https://news.example/{self.n}"
        article = Article(
            canonical_url=url, url=url, feed_id=(feed or self.feed).id if feed is not False else None,
            title=f"Story {self.n}", published_at=published,
            discovered_at=discovered or (published + timedelta(minutes=20) if published else utc(2026, 1, 1)),
            language=language, site_name=site_name, places=places, extraction_status="ok",
        )
        self.session.add(article)
        self.session.flush()
        for topic in topics:
            self.session.add(ArticleTag(article_id=article.id, topic=topic, score=0.9, evidence=[],
                                        tagger_version="test"))
        self.session.flush()
        return article


def counts(rows: list[dict], **match: object) -> dict[date, int]:
    return {r["period"]: r["count"] for r in rows if all(r.get(k) == v for k, v in match.items())}


# --- days, weeks and months in the analysts' time zone -------------------------------------------


def test_days_are_the_analysts_days_and_undated_articles_count_when_first_seen(engine: Engine) -> None:
    with Session(engine) as session:
        c = Corpus(session)
        c.add(local(BAGHDAD, 2026, 3, 1, 23, 30))  # 20:30 UTC on 1 March: 1 March in Baghdad
        c.add(local(BAGHDAD, 2026, 3, 2, 0, 30))  # 21:30 UTC on 1 March: 2 March in Baghdad
        c.add(local(BAGHDAD, 2026, 3, 2, 23, 59), ("isis", "coalition"))
        # Undated: counts on the day it was first seen, 3 March 00:10 in Baghdad.
        c.add(None, ("coalition",), discovered=local(BAGHDAD, 2026, 3, 3, 0, 10))
        c.add(local(BAGHDAD, 2026, 2, 28, 23, 59))  # before the range
        c.add(local(BAGHDAD, 2026, 3, 4, 0, 0))  # after the range (exactly its end)
        session.commit()

        rows = trends.trends(session, since=date(2026, 3, 1), until=date(2026, 3, 3), tz=BAGHDAD)
        assert [(r["period"], r["topic"]) for r in rows] == [
            (date(2026, 3, d), t) for d in (1, 2, 3) for t in ("isis", "coalition", "regional_cooperation")
        ]
        assert counts(rows, topic="isis") == {date(2026, 3, 1): 1, date(2026, 3, 2): 2, date(2026, 3, 3): 0}
        assert counts(rows, topic="coalition") == {date(2026, 3, 1): 0, date(2026, 3, 2): 1, date(2026, 3, 3): 1}
        assert counts(rows, topic="regional_cooperation") == dict.fromkeys(
            (date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)), 0)

        # The same articles in UTC fall on other days (00:00 on 4 March in Baghdad is 3 March).
        in_utc = trends.trends(session, topics=["isis"], since=date(2026, 3, 1), until=date(2026, 3, 3),
                               tz=ZoneInfo("UTC"))
        assert counts(in_utc) == {date(2026, 3, 1): 2, date(2026, 3, 2): 1, date(2026, 3, 3): 1}


def test_half_hour_offset_and_the_configured_time_zone(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARSAD_TIMEZONE", "Asia/Tehran")
    reset_settings()
    with Session(engine) as session:
        c = Corpus(session)
        c.add(utc(2026, 5, 10, 20, 29))  # 23:59 in Tehran: 10 May
        c.add(utc(2026, 5, 10, 20, 30))  # 00:00 in Tehran: 11 May
        session.commit()
        rows = trends.trends(session, topics=["isis"], since=date(2026, 5, 10), until=date(2026, 5, 11))
    assert counts(rows) == {date(2026, 5, 10): 1, date(2026, 5, 11): 1}


def test_daylight_saving_changes_in_beirut(engine: Engine) -> None:
    with Session(engine) as session:
        c = Corpus(session)
        c.add(utc(2026, 3, 28, 21, 59))  # 23:59 (+02) on 28 March
        c.add(utc(2026, 3, 28, 22, 0))  # 01:00 (+03) on 29 March: midnight does not exist that day
        c.add(utc(2026, 3, 29, 20, 59))  # 23:59 (+03) on 29 March
        c.add(utc(2026, 3, 29, 21, 0))  # 00:00 (+03) on 30 March
        c.add(utc(2026, 10, 24, 20, 30))  # 23:30 (+03) on 24 October
        c.add(utc(2026, 10, 24, 21, 30))  # 23:30 again (+02) on 24 October: the repeated hour
        c.add(utc(2026, 10, 24, 22, 0))  # 00:00 (+02) on 25 October
        session.commit()
        spring = trends.trends(session, topics=["isis"], since=date(2026, 3, 28), until=date(2026, 3, 30), tz=BEIRUT)
        autumn = trends.trends(session, topics=["isis"], since=date(2026, 10, 24), until=date(2026, 10, 25), tz=BEIRUT)
        # The week of the spring change has 167 hours; all four articles are in it or the next.
        weeks = trends.trends(session, topics=["isis"], by="week", since=date(2026, 3, 23), until=date(2026, 4, 5), tz=BEIRUT)
    assert counts(spring) == {date(2026, 3, 28): 1, date(2026, 3, 29): 2, date(2026, 3, 30): 1}
    assert counts(autumn) == {date(2026, 10, 24): 2, date(2026, 10, 25): 1}
    assert counts(weeks) == {date(2026, 3, 23): 3, date(2026, 3, 30): 1}


def test_iso_weeks_and_months_across_the_year_end(engine: Engine) -> None:
    with Session(engine) as session:
        c = Corpus(session)
        c.add(local(BAGHDAD, 2026, 12, 27, 23, 30))  # Sunday of 2026-W52
        c.add(local(BAGHDAD, 2026, 12, 28, 0, 30))  # Monday of 2026-W53
        c.add(local(BAGHDAD, 2026, 12, 31, 23, 59))  # 2026-W53, December
        c.add(local(BAGHDAD, 2027, 1, 1, 0, 0))  # 2026-W53, January
        c.add(local(BAGHDAD, 2027, 1, 3, 23, 59))  # Sunday of 2026-W53
        c.add(local(BAGHDAD, 2027, 1, 4, 0, 1))  # Monday of 2027-W01
        c.add(None, discovered=local(BAGHDAD, 2027, 1, 4, 2, 0))  # undated, 2027-W01
        session.commit()
        weeks = trends.trends(session, topics=["isis"], by="week", since=date(2026, 12, 21), until=date(2027, 1, 10), tz=BAGHDAD)
        months = trends.trends(session, topics=["isis"], by="month", since=date(2026, 11, 1), until=date(2027, 1, 31), tz=BAGHDAD)
        partial = trends.trends(session, topics=["isis"], by="week", since=date(2026, 12, 31), until=date(2027, 1, 4), tz=BAGHDAD)
    assert date(2026, 12, 28).isocalendar()[:2] == (2026, 53)
    assert date(2027, 1, 4).isocalendar()[:2] == (2027, 1)
    assert counts(weeks) == {date(2026, 12, 21): 1, date(2026, 12, 28): 4, date(2027, 1, 4): 2}
    assert counts(months) == {date(2026, 11, 1): 0, date(2026, 12, 1): 3, date(2027, 1, 1): 4}
    # Periods are labelled by their first day; only days inside [since, until] count.
    assert counts(partial) == {date(2026, 12, 28): 3, date(2027, 1, 4): 2}


def test_counts_match_python_over_a_year_of_random_times_in_a_dst_zone(engine: Engine) -> None:
    rng = random.Random(5)
    instants = [utc(2026, 1, 1) + timedelta(seconds=rng.randrange(366 * 86400)) for _ in range(400)]
    # and a few on the exact edges of the Beirut days around both changes
    instants += [local(BEIRUT, 2026, 3, 29, 1, 0), local(BEIRUT, 2026, 3, 30, 0, 0),
                 local(BEIRUT, 2026, 10, 25, 0, 0), local(BEIRUT, 2026, 10, 25, 0, 0) - timedelta(microseconds=1)]
    with Session(engine) as session:
        c = Corpus(session)
        for i, when in enumerate(instants):
            if i % 10 == 0:
                c.add(None, ("coalition",), discovered=when)
            else:
                c.add(when, ("coalition",))
        session.commit()
        expected_days = Counter(w.astimezone(BEIRUT).date() for w in instants if w.astimezone(BEIRUT).year == 2026)
        for by in ("day", "week", "month"):
            rows = trends.trends(session, topics=["coalition"], by=by, since=date(2026, 1, 1),
                                 until=date(2026, 12, 31), tz=BEIRUT)
            expected: Counter[date] = Counter()
            for day, n in expected_days.items():
                expected[period_start(day, by)] += n
            got = counts(rows)
            assert {k: v for k, v in got.items() if v} == dict(expected), by
            assert len(got) == {"day": 365, "week": 53, "month": 12}[by]  # zero-filled


# --- breakdowns, defaults, errors ----------------------------------------------------------------


def test_breakdowns_by_source_language_and_place(engine: Engine) -> None:
    day = date(2026, 6, 1)
    with Session(engine) as session:
        c = Corpus(session)
        noon = local(BAGHDAD, 2026, 6, 1, 12, 0)
        c.add(noon, ("isis", "coalition"), language="ar", places=["Mosul", "Raqqa"])
        c.add(noon, language="ar", places=["Mosul"])
        c.add(noon, feed=c.unnamed, site_name="Rudaw", places=[])  # no feed name: its site name
        c.add(noon, feed=c.unnamed, places=None)  # neither: the feed's URL
        c.add(noon, feed=False, site_name="Kurdistan24")  # no feed at all
        c.add(local(BAGHDAD, 2026, 6, 3, 12, 0), language="ar", places=["Mosul", "Mosul"])
        session.commit()
        kw = {"since": day, "until": date(2026, 6, 3), "tz": BAGHDAD}
        by_source = trends.trends(session, topics=["isis"], breakdown="source", **kw)
        by_language = trends.trends(session, breakdown="language", **kw)
        by_place = trends.trends(session, topics=["isis"], breakdown="place", **kw)

    assert [r["source"] for r in by_source if r["period"] == day] == [
        "Al-Jisr", "Kurdistan24", "Rudaw", "https://unnamed.example/rss"]
    assert counts(by_source, source="Al-Jisr") == {day: 2, date(2026, 6, 2): 0, date(2026, 6, 3): 1}
    assert counts(by_source, source="Rudaw")[day] == 1
    assert counts(by_language, topic="isis", language="ar") == {day: 2, date(2026, 6, 2): 0, date(2026, 6, 3): 1}
    assert counts(by_language, topic="isis", language="en") == {day: 3, date(2026, 6, 2): 0, date(2026, 6, 3): 0}
    assert counts(by_language, topic="coalition", language="ar") == {day: 1, date(2026, 6, 2): 0, date(2026, 6, 3): 0}
    assert not [r for r in by_language if r["topic"] == "coalition" and r["language"] == "en"]
    # an article counts once per place it names, and once for a place named twice
    assert counts(by_place, place="Mosul") == {day: 2, date(2026, 6, 2): 0, date(2026, 6, 3): 1}
    assert counts(by_place, place="Raqqa") == {day: 1, date(2026, 6, 2): 0, date(2026, 6, 3): 0}
    assert {r["place"] for r in by_place} == {"Mosul", "Raqqa"}
    assert set(by_place[0]) == {"period", "topic", "place", "count"}


def test_default_range_and_user_errors(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    import marsad.trends as module

    monkeypatch.setattr(module, "utcnow", lambda: utc(2026, 7, 3, 22, 0))  # 4 July in Baghdad
    with Session(engine) as session:
        assert trends.trends(session, topics=["isis"], tz=BAGHDAD) == [
            {"period": date(2026, 7, 4), "topic": "isis", "count": 0}]
        c = Corpus(session)
        c.add(local(BAGHDAD, 2026, 7, 1, 9, 0))
        session.commit()
        rows = trends.trends(session, tz=BAGHDAD)
        assert [r["period"] for r in rows[::3]] == [date(2026, 7, d) for d in (1, 2, 3, 4)]
        with pytest.raises(InputError, match="unknown topic 'daesh'"):
            trends.trends(session, topics=["daesh"])
        with pytest.raises(InputError, match="unknown period"):
            trends.trends(session, by="year")
        with pytest.raises(InputError, match="unknown breakdown"):
            trends.trends(session, breakdown="author")
        with pytest.raises(InputError, match="after"):
            trends.trends(session, since=date(2026, 7, 5), until=date(2026, 7, 4))


def test_topic_counts_for_status(engine: Engine) -> None:
    now = local(BAGHDAD, 2026, 9, 10, 0, 30)  # just after midnight in Baghdad
    with Session(engine) as session:
        c = Corpus(session)
        c.add(local(BAGHDAD, 2026, 9, 10, 0, 5), ("isis", "coalition"))  # today
        c.add(local(BAGHDAD, 2026, 9, 9, 23, 55))  # yesterday
        c.add(local(BAGHDAD, 2026, 9, 4, 0, 0))  # six days ago: in the last 7 days
        c.add(local(BAGHDAD, 2026, 9, 3, 23, 59))  # seven days ago: not
        session.commit()
        assert topic_counts(session, now, tz=BAGHDAD) == [
            {"topic": "isis", "today": 1, "last_7_days": 3},
            {"topic": "coalition", "today": 1, "last_7_days": 1},
            {"topic": "regional_cooperation", "today": 0, "last_7_days": 0},
        ]


# --- spikes -------------------------------------------------------------------------------------


def series(values: list[int], topic: str = "isis", start: date = date(2026, 1, 1)) -> list[dict]:
    return [{"period": start + timedelta(days=i), "topic": topic, "count": v} for i, v in enumerate(values)]


def test_spikes_on_a_constructed_series() -> None:
    rng = random.Random(3)
    values = [rng.choice((8, 9, 10, 11, 12)) for _ in range(90)]
    values[40], values[70] = 40, 25  # two news days
    found = spikes(series(values))
    assert [s["period"] for s in found] == [date(2026, 1, 1) + timedelta(days=40), date(2026, 1, 1) + timedelta(days=70)]
    first = found[0]
    assert first["count"] == 40 and 9 < first["baseline"] < 11 and first["z"] > 3
    assert first["threshold"] == pytest.approx(first["baseline"] + 3 * first["sd"], abs=0.02)
    # a lower k finds more, never fewer
    assert {s["period"] for s in found} <= {s["period"] for s in spikes(series(values), k=2)}


def test_no_spikes_on_flat_slowly_rising_or_tiny_series() -> None:
    assert spikes(series([10] * 60)) == []
    assert spikes(series([10] * 40 + [11] + [10] * 19)) == []  # one more than usual is no news
    assert spikes(series([5 + i // 3 for i in range(120)])) == []  # steady growth
    assert spikes(series([2] + [0] * 40 + [4] + [0] * 10)) == []  # below the minimum count
    quiet = spikes(series([2] + [0] * 40 + [6] + [0] * 10))
    assert [(s["count"], s["baseline"], s["z"]) for s in quiet] == [(6, 0.0, None)]
    assert spikes(series([2] + [0] * 40 + [6]), min_count=10) == []
    # The empty periods before a series' first article are no baseline: a new feed or a new
    # deployment does not start with a spike.
    assert spikes(series([0] * 40 + [9, 11, 10, 12, 10, 9, 11, 10, 10, 11, 10, 9, 12, 10, 11])) == []
    late = spikes(series([0] * 40 + [10, 11, 9, 10, 12, 10, 9, 11, 10, 10, 11, 10, 9, 12, 10, 11, 45]))
    assert [s["count"] for s in late] == [45]
    # too little history to judge: nothing
    assert spikes(series([1, 1, 1, 50])) == []


def test_spikes_are_judged_per_topic() -> None:
    rows = series([10] * 40 + [60], "isis") + series([100] * 41, "coalition")
    assert [(s["topic"], s["count"]) for s in spikes(rows)] == [("isis", 60)]


def test_find_spikes_reads_the_history_before_since(engine: Engine) -> None:
    start = date(2026, 4, 1)
    with Session(engine) as session:
        c = Corpus(session)
        for i in range(35):
            day = start + timedelta(days=i)
            for n in range(20 if i == 33 else 3):
                c.add(local(BAGHDAD, day.year, day.month, day.day, 9, n))
        session.commit()
        found = find_spikes(session, topics=["isis"], since=start + timedelta(days=30),
                            until=start + timedelta(days=34), tz=BAGHDAD)
    assert [(s["period"], s["count"], s["baseline"]) for s in found] == [(start + timedelta(days=33), 20, 3.0)]


# --- the chart ----------------------------------------------------------------------------------


def test_plot_writes_a_readable_png(tmp_path: Path) -> None:
    rng = random.Random(1)
    rows = [
        {"period": date(2026, 1, 1) + timedelta(days=i), "topic": topic, "count": rng.randrange(5, 20) + (60 if i == 50 and topic == "isis" else 0)}
        for i in range(120)
        for topic in ("isis", "coalition", "regional_cooperation")
    ]
    path = plot(rows, tmp_path / "charts" / "trends.png", spikes=spikes(rows))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert 20_000 < len(data) < 1_000_000
    image = Image.open(io.BytesIO(data)).convert("RGB")
    assert image.size[0] >= 1000 and image.size[1] >= 500
    colours = Counter(image.get_flattened_data() if hasattr(image, "get_flattened_data") else image.getdata())
    white_share = colours[(255, 255, 255)] / (image.size[0] * image.size[1])
    assert 0.5 < white_share < 0.99  # a white page with drawing on it, not blank nor filled
    reds = sum(n for (r, g, b), n in colours.items() if r > 150 and g < 80 and b < 80)
    assert reds > 500  # the ISIS line is drawn in its colour


def test_plot_of_an_empty_range_still_writes_a_png(tmp_path: Path) -> None:
    path = plot([], tmp_path / "empty.png", by="week")
    assert path.read_bytes()[:4] == b"\x89PNG"



def _x_days(figure) -> tuple[float, float]:
    import matplotlib.dates as mdates

    low, high = figure.axes[0].get_xlim()
    return mdates.num2date(low).date(), mdates.num2date(high).date()


def test_a_single_period_gets_an_axis_of_days_not_years() -> None:
    import matplotlib.pyplot as plt

    rows = [{"period": date(2026, 3, 5), "topic": t, "count": c} for t, c in (("isis", 3), ("coalition", 3))]
    figure = trends.draw(rows, by="day", tz=BAGHDAD)
    try:
        assert _x_days(figure) == (date(2026, 3, 4), date(2026, 3, 6))
        ticks = figure.axes[0].get_xticks()
        assert all(float(t).is_integer() for t in ticks)  # whole days: no 06:00, 12:00 ticks
        lines = figure.axes[0].get_lines()
        assert {line.get_marker() for line in lines} == {"o", "s"}  # coincident points stay visible
    finally:
        plt.close(figure)


def test_an_empty_or_all_zero_range_keeps_its_dates_and_whole_counts() -> None:
    import matplotlib.pyplot as plt

    empty = trends.draw([], by="day", since=date(2026, 3, 1), until=date(2026, 3, 9), tz=BAGHDAD)
    zeros = trends.draw(
        [{"period": date(2026, 3, 1) + timedelta(days=i), "topic": "isis", "count": 0} for i in range(5)],
        by="day", tz=BAGHDAD,
    )
    try:
        assert _x_days(empty) == (date(2026, 3, 1), date(2026, 3, 9))
        assert "no articles" in empty.axes[0].get_title()
        assert zeros.axes[0].get_ylim() == (0, 1)
        assert all(float(t).is_integer() for t in zeros.axes[0].get_yticks())
    finally:
        plt.close(empty)
        plt.close(zeros)


def test_the_legend_sits_beside_the_data_and_says_what_was_left_out() -> None:
    import matplotlib.pyplot as plt

    rows = [
        {"period": date(2026, 3, 1) + timedelta(days=i), "topic": topic, "place": place, "count": i % 7 + n}
        for i in range(20)
        for topic in ("isis", "coalition")
        for n, place in enumerate(("Raqqa", "Idlib", "Anbar", "Hasakah", "Aleppo", "Homs"))
    ]
    figure = trends.draw(rows, by="day", tz=BAGHDAD)
    try:
        figure.canvas.draw()
        axes, (legend,) = figure.axes[0], figure.legends
        assert axes.get_legend() is None
        renderer = figure.canvas.get_renderer()
        assert legend.get_window_extent(renderer).x0 >= axes.get_window_extent(renderer).x1
        assert legend.get_title().get_text() == "the 8 largest of 12"
        assert len(legend.get_texts()) == 8
    finally:
        plt.close(figure)


def test_a_chart_that_cannot_be_written_is_a_friendly_error(tmp_path: Path, db_url: str) -> None:
    from typer.testing import CliRunner

    from marsad.cli import app

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match="cannot write the chart"):
        plot([], blocker / "chart.png", by="day", since=date(2026, 3, 1), until=date(2026, 3, 2))
    result = CliRunner().invoke(app, ["trends", "--plot", str(blocker / "chart.png")])
    assert result.exit_code == 1
    assert result.stderr.startswith("marsad: error: cannot write the chart") and "Traceback" not in result.stderr

# --- the stored story times ---------------------------------------------------------------------


def test_migration_0005_backfills_story_times_and_the_views_count_in_the_session_zone(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _alembic_config(engine)
    command.downgrade(config, "0004")
    sqlite = engine.dialect.name == "sqlite"
    stamp = (lambda v: v.strftime("%Y-%m-%d %H:%M:%S.%f")) if sqlite else (lambda v: v)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO feeds (id, url, name, active, error_count, created_at) "
            "VALUES (1, 'https://f.example/rss', 'Feed A', true, 0, :t)"), {"t": stamp(utc(2026, 1, 1))})
        connection.execute(text(
            "INSERT INTO articles (id, canonical_url, url, feed_id, published_at, discovered_at, "
            "extraction_status, fetch_attempts, places) VALUES "
            "(1, 'u1', 'u1', 1, :p1, :d1, 'ok', 0, :places), (2, 'u2', 'u2', NULL, NULL, :d2, 'ok', 0, NULL)"),
            {"p1": stamp(utc(2026, 3, 1, 22, 0)), "d1": stamp(utc(2026, 3, 2, 9, 0)),
             "d2": stamp(utc(2026, 3, 5, 20, 30)), "places": '["Mosul", "Raqqa"]'})
        connection.execute(text(
            "INSERT INTO article_tags (article_id, topic, score, evidence, tagger_version, tagged_at) VALUES "
            "(1, 'isis', 1, '[]', 'v', :t), (2, 'isis', 1, '[]', 'v', :t), (2, 'coalition', 1, '[]', 'v', :t)"),
            {"t": stamp(utc(2026, 3, 6))})
    command.upgrade(config, "head")

    with Session(engine) as session:
        assert {i: at for i, at in session.execute(select(Article.id, Article.story_at))} == {
            1: utc(2026, 3, 1, 22, 0), 2: utc(2026, 3, 5, 20, 30)}
        assert sorted(session.execute(select(ArticleTag.article_id, ArticleTag.topic, ArticleTag.story_at))) == [
            (1, "isis", utc(2026, 3, 1, 22, 0)), (2, "coalition", utc(2026, 3, 5, 20, 30)),
            (2, "isis", utc(2026, 3, 5, 20, 30))]
        rows = trends.trends(session, since=date(2026, 3, 1), until=date(2026, 3, 6), tz=BAGHDAD)
        assert {(r["period"], r["topic"]) for r in rows if r["count"]} == {
            (date(2026, 3, 2), "isis"), (date(2026, 3, 5), "isis"), (date(2026, 3, 5), "coalition")}

    # The views: days in the session's time zone (PostgreSQL's TimeZone; SQLite: the process's TZ).
    def view(name: str, zone: str) -> list[tuple]:
        if sqlite:
            monkeypatch.setenv("TZ", zone)
            time_module.tzset()
        with engine.connect() as connection:
            if not sqlite:
                connection.execute(text(f"SET TIME ZONE '{zone}'"))
            result = [tuple(str(v) for v in row) for row in connection.execute(text(f"SELECT * FROM {name} ORDER BY 1, 2, 3"))]
        return result

    try:
        assert view("daily_topic_counts", "UTC") == [
            ("2026-03-01", "isis", "1"), ("2026-03-05", "coalition", "1"), ("2026-03-05", "isis", "1")]
        assert view("daily_topic_counts", "Asia/Baghdad") == [
            ("2026-03-02", "isis", "1"), ("2026-03-05", "coalition", "1"), ("2026-03-05", "isis", "1")]
        assert view("daily_source_counts", "Asia/Baghdad")[0] == ("2026-03-02", "Feed A", "isis", "1")
        assert view("daily_place_counts", "Asia/Baghdad") == [
            ("2026-03-02", "Mosul", "isis", "1"), ("2026-03-02", "Raqqa", "isis", "1")]
        topics = view("article_topics", "Asia/Tehran")
        assert [(r[0], r[1], r[4], r[5]) for r in topics] == [
            ("1", "isis", "2026-03-02", "Feed A"), ("2", "coalition", "2026-03-06", "None"),
            ("2", "isis", "2026-03-06", "None")]
    finally:
        monkeypatch.delenv("TZ", raising=False)
        time_module.tzset()


def test_new_rows_get_their_story_time_and_tags_follow_a_later_date(engine: Engine) -> None:
    with Session(engine) as session:
        c = Corpus(session)
        undated = c.add(None, ("isis", "coalition"), discovered=utc(2026, 2, 1, 8, 0))
        dated = c.add(utc(2026, 2, 3, 8, 0))
        session.commit()
        assert (undated.story_at, dated.story_at) == (utc(2026, 2, 1, 8, 0), utc(2026, 2, 3, 8, 0))
        assert set(session.scalars(select(ArticleTag.story_at).where(ArticleTag.article_id == undated.id))) == {
            utc(2026, 2, 1, 8, 0)}
        undated_id = undated.id

    # The page gives the story a date: the ingest stores it, and the tags move with it.
    page_date = utc(2026, 1, 30, 21, 30)
    update = ArticleUpdate(undated_id, {"published_at": page_date, "date_source": "page",
                                        "story_at": page_date, "text": "A short text."}, page_date)
    store_articles(engine, get_settings(), [update])
    with Session(engine) as session:
        assert session.get(Article, undated_id).story_at == page_date
        assert set(session.scalars(select(ArticleTag.story_at).where(ArticleTag.article_id == undated_id))) == {
            page_date}
        rows = trends.trends(session, since=date(2026, 1, 30), until=date(2026, 2, 1), tz=BAGHDAD)
        assert counts(rows, topic="coalition") == {date(2026, 1, 30): 0, date(2026, 1, 31): 1, date(2026, 2, 1): 0}
