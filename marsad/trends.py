"""Trends: articles per topic per day, ISO week or month in the analysts' time zone, and spikes.

An article counts on the day its story ran: when it was published, or when it was first seen if it
carries no date (``story_at``, stored on each tag row with an index on ``(topic, story_at,
article_id)``). Days are the analysts' days (``MARSAD_TIMEZONE``): each period's bounds are
computed here with ``zoneinfo`` (so daylight-saving changes, half-hour offsets and year ends need
nothing from the database) and sent as UTC instants; the database only counts the index entries
between two bounds, one range per period and topic. That is exact on SQLite, which has no time
zones, and faster on both backends than converting every row to local time and grouping.

Pure functions taking a Session: no Prefect, no CLI. ``marsad trends`` and ``marsad status``
format what they return.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import String, and_, bindparam, case, distinct, func, literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from marsad.config import get_settings
from marsad.errors import InputError
from marsad.tagging import TOPICS
from models import Article, ArticleTag, Feed
from models.base import utcnow
from models.types import UTCDateTime

Granularity = Literal["day", "week", "month"]
GRANULARITIES: tuple[str, ...] = ("day", "week", "month")
BREAKDOWNS: tuple[str, ...] = ("source", "source_type", "language", "place")
# Periods of history a spike is measured against, by granularity: four weeks of days, a quarter
# of weeks, a year of months.
DEFAULT_WINDOW = {"day": 28, "week": 13, "month": 12}
# Same colours as the digest's trend strip.
TOPIC_COLOURS = {"isis": "#b91c1c", "coalition": "#1d4ed8", "regional_cooperation": "#047857"}
TOPIC_LABELS = {"isis": "ISIS", "coalition": "Coalition", "regional_cooperation": "Regional cooperation"}


# --- periods ------------------------------------------------------------------------------------


def period_start(day: date, by: str) -> date:
    """The first day of the period holding ``day``: itself, the Monday of its ISO week, or the
    first of its month."""
    if by == "day":
        return day
    if by == "week":
        return day - timedelta(days=day.weekday())
    if by == "month":
        return day.replace(day=1)
    raise InputError(f"unknown period {by!r}: use one of {', '.join(GRANULARITIES)}")


def next_period(start: date, by: str) -> date:
    if by == "day":
        return start + timedelta(days=1)
    if by == "week":
        return start + timedelta(days=7)
    if by == "month":
        return date(start.year + start.month // 12, start.month % 12 + 1, 1)
    raise InputError(f"unknown period {by!r}: use one of {', '.join(GRANULARITIES)}")


def periods(since: date, until: date, by: str) -> list[date]:
    """First days of the periods that overlap ``[since, until]``, in order."""
    out, start = [], period_start(since, by)
    while start <= until:
        out.append(start)
        start = next_period(start, by)
    return out


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of ``day`` in ``tz``, in UTC.

    Where a daylight-saving change skips midnight (clocks go from 00:00 to 01:00), zoneinfo reads
    the missing 00:00 with the offset before the change, which is the same instant as 01:00 after
    it: still the day's first instant.
    """
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def _bounds(since: date, until: date, by: str, tz: ZoneInfo) -> list[tuple[date, datetime, datetime]]:
    """Each period's first day with the UTC instants it covers, clipped to ``[since, until]``."""
    out = []
    for start in periods(since, until, by):
        lo = max(start, since)
        hi = min(next_period(start, by), until + timedelta(days=1))
        out.append((start, local_midnight(lo, tz), local_midnight(hi, tz)))
    return out


# --- counts -------------------------------------------------------------------------------------


def _check(topics: Sequence[str] | None, by: str, breakdown: str | None) -> tuple[str, ...]:
    chosen = tuple(TOPICS) if not topics else tuple(dict.fromkeys(topics))
    unknown = [t for t in chosen if t not in TOPICS]
    if unknown:
        raise InputError(f"unknown topic {unknown[0]!r}: use one of {', '.join(TOPICS)}")
    if by not in GRANULARITIES:
        raise InputError(f"unknown period {by!r}: use one of {', '.join(GRANULARITIES)}")
    if breakdown is not None and breakdown not in BREAKDOWNS:
        raise InputError(f"unknown breakdown {breakdown!r}: use one of {', '.join(BREAKDOWNS)}")
    # Keep the taxonomy's order: output and legends list topics the same way everywhere.
    return tuple(t for t in TOPICS if t in chosen)


def _first_day(session: Session, topics: Sequence[str], tz: ZoneInfo) -> date | None:
    # One index probe per topic: min() over an IN list would scan.
    firsts = [
        session.scalar(select(func.min(ArticleTag.story_at)).where(ArticleTag.topic == topic))
        for topic in topics
    ]
    known = [f for f in firsts if f is not None]
    return min(known).astimezone(tz).date() if known else None


def trends(
    session: Session,
    *,
    topics: Sequence[str] | None = None,
    by: str = "day",
    since: date | None = None,
    until: date | None = None,
    breakdown: str | None = None,
    tz: ZoneInfo | None = None,
) -> list[dict[str, Any]]:
    """Articles per topic per period, ``[{"period": date, "topic": str, "count": int}]``.

    ``by`` is ``day``, ``week`` (ISO weeks; ``period`` is the Monday) or ``month`` (``period`` is
    the first). ``since`` and ``until`` are inclusive days in ``tz`` (default
    ``MARSAD_TIMEZONE``); they default to the day of the topics' earliest article and today. Only
    articles inside ``[since, until]`` count, so the first and last periods may be partial.
    Every period in the range is listed, with 0 when nothing ran; rows are ordered by period,
    then topic (the taxonomy's order).

    ``breakdown`` adds a key to each row and counts per topic and key: ``source`` (the feed's
    name, else the page's site name, else the feed's URL), ``source_type`` (the feed's outlet
    type, None when unknown), ``language`` or ``place`` (an article
    counts once for each place it names). Zero rows are listed for every (topic, key) pair that
    has an article in the range; keys are ordered by name, unknown (None) last.
    """
    chosen = _check(topics, by, breakdown)
    tz = tz or get_settings().tz
    if until is None:
        until = utcnow().astimezone(tz).date()
    if since is None:
        since = _first_day(session, chosen, tz) or until
    if since > until:
        raise InputError(f"--since {since} is after --until {until}")
    bounds = _bounds(since, until, by, tz)
    if breakdown is None:
        counts = _count(session, chosen, bounds)
        return [
            {"period": start, "topic": topic, "count": counts.get((start, topic), 0)}
            for start, _, _ in bounds
            for topic in chosen
        ]
    keyed = _count_by(session, chosen, bounds, breakdown)
    pairs = sorted({(topic, key) for (_, topic, key) in keyed}, key=lambda p: (
        chosen.index(p[0]), p[1] is None, p[1] or ""))
    return [
        {"period": start, "topic": topic, breakdown: key, "count": keyed.get((start, topic, key), 0)}
        for start, _, _ in bounds
        for topic, key in pairs
    ]


def _bounds_table(session: Session, bounds: Sequence[tuple[date, datetime, datetime]]) -> Any:
    """The periods as a table ``(i, lo, hi)`` built by the database from one parameter, so the
    statement's SQL is the same for any range and SQLAlchemy compiles it once."""
    if session.get_bind().dialect.name == "postgresql":
        array = ARRAY(UTCDateTime())
        los = bindparam("los", [lo for _, lo, _ in bounds], type_=array)
        his = bindparam("his", [hi for _, _, hi in bounds], type_=array)
        table = func.unnest(los, his).table_valued("lo", "hi", with_ordinality="i").render_derived(name="bounds")
        # WITH ORDINALITY counts from 1
        return table, table.c.i - 1, table.c.lo, table.c.hi
    # SQLite keeps UTC as text in SQLAlchemy's format; that text orders as time does.
    data = json.dumps([[_sqlite_text(lo), _sqlite_text(hi)] for _, lo, hi in bounds])
    table = func.json_each(bindparam("bounds", data, type_=String)).table_valued("key", "value").alias("bounds")
    return (
        table,
        table.c.key,
        func.json_extract(table.c.value, "$[0]"),
        func.json_extract(table.c.value, "$[1]"),
    )


def _sqlite_text(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _count(
    session: Session, topics: Sequence[str], bounds: Sequence[tuple[date, datetime, datetime]]
) -> dict[tuple[date, str], int]:
    """One index range count per period and topic (no join, no per-row time zone arithmetic)."""
    out: dict[tuple[date, str], int] = {}
    table, i, lo, hi = _bounds_table(session, bounds)
    columns = [
        select(func.count())
        .where(ArticleTag.topic == topic, ArticleTag.story_at >= lo, ArticleTag.story_at < hi)
        .scalar_subquery()
        .label(f"n{n}")
        for n, topic in enumerate(topics)
    ]
    for n, *counts in session.execute(select(i, *columns).select_from(table)):
        for topic, count in zip(topics, counts, strict=True):
            out[(bounds[n][0], topic)] = int(count)
    return out


def source_expression() -> Any:
    """An article's source, as the views name it: feed name, else site name, else feed URL."""
    return func.coalesce(
        func.nullif(Feed.name, ""), func.nullif(Article.site_name, ""), Feed.url
    )


def _count_by(
    session: Session,
    topics: Sequence[str],
    bounds: Sequence[tuple[date, datetime, datetime]],
    breakdown: str,
) -> dict[tuple[date, str, str | None], int]:
    table, i, lo, hi = _bounds_table(session, bounds)
    query = (
        select(i, ArticleTag.topic)
        .select_from(table)
        .join(
            ArticleTag,
            and_(ArticleTag.topic.in_(topics), ArticleTag.story_at >= lo, ArticleTag.story_at < hi),
        )
        .join(Article, Article.id == ArticleTag.article_id)
    )
    counted: Any = func.count()
    if breakdown == "source":
        key: Any = source_expression()
        query = query.outerjoin(Feed, Feed.id == Article.feed_id)
    elif breakdown == "source_type":
        key = Feed.source_type  # NULL: a feed without one, or a backfilled article
        query = query.outerjoin(Feed, Feed.id == Article.feed_id)
    elif breakdown == "language":
        key = Article.language
    else:
        query, key = _join_places(session, query)
        counted = func.count(distinct(ArticleTag.article_id))  # a place named twice: once
    query = query.add_columns(key.label("key"), counted).group_by(i, ArticleTag.topic, key)
    return {
        (bounds[n][0], topic, name): int(count)
        for n, topic, name, count in session.execute(query)
    }


def _join_places(session: Session, query: Any) -> tuple[Any, Any]:
    """One row per place an article names (articles.places is a JSON array of names)."""
    if session.get_bind().dialect.name == "postgresql":
        array = case(
            (func.jsonb_typeof(Article.places) == "array", Article.places),
            else_=literal("[]").cast(Article.places.type),
        )
        places = func.jsonb_array_elements_text(array).table_valued("value").lateral("place")
        return query.join(places, literal(True)), places.c.value
    places = func.json_each(Article.places).table_valued("value", "type").alias("place")
    return query.join(places, places.c.type == "text"), places.c.value


def topic_counts(
    session: Session,
    now: datetime,
    *,
    topics: Sequence[str] | None = None,
    tz: ZoneInfo | None = None,
) -> list[dict[str, Any]]:
    """Per topic: articles of today and of the last 7 days (today and the 6 before it), as days
    in ``tz``: ``[{"topic", "today", "last_7_days"}]``, in the taxonomy's order."""
    chosen = _check(topics, "day", None)
    tz = tz or get_settings().tz
    today = now.astimezone(tz).date()
    today_start = local_midnight(today, tz)
    week_start = local_midnight(today - timedelta(days=6), tz)
    end = local_midnight(today + timedelta(days=1), tz)
    rows = session.execute(
        _topic_counts_statement(),
        {"topics": list(chosen), "today": today_start, "week": week_start, "end": end},
    ).all()
    counts = {topic: (int(day), int(week)) for topic, day, week in rows}
    return [
        {"topic": t, "today": counts.get(t, (0, 0))[0], "last_7_days": counts.get(t, (0, 0))[1]}
        for t in chosen
    ]


@lru_cache(maxsize=1)
def _topic_counts_statement() -> Any:
    # Built once: `marsad status` calls this often, and building costs more than the query.
    return (
        select(
            ArticleTag.topic,
            func.count().filter(ArticleTag.story_at >= bindparam("today", type_=UTCDateTime())),
            func.count(),
        )
        .where(
            ArticleTag.topic.in_(bindparam("topics", expanding=True)),
            ArticleTag.story_at >= bindparam("week", type_=UTCDateTime()),
            ArticleTag.story_at < bindparam("end", type_=UTCDateTime()),
        )
        .group_by(ArticleTag.topic)
    )


# --- spikes -------------------------------------------------------------------------------------


def spikes(
    rows: Iterable[dict[str, Any]],
    *,
    window: int = 28,
    k: float = 3.0,
    min_count: int = 5,
    min_history: int | None = None,
) -> list[dict[str, Any]]:
    """Periods whose count is unusually high against the same series' recent past.

    Each series (a topic, or a topic and breakdown key) is read in period order. A period is a
    spike when its count is at least ``max(min_count, mean + k * sd)`` of the ``window`` periods
    before it, and above that mean. ``sd`` is never taken below ``sqrt(mean)``, the spread of a
    count that merely fluctuates at random (Poisson), so a flat series with one slightly higher
    day does not alert; ``min_count`` keeps tiny numbers quiet. A period needs ``min_history``
    earlier periods (default half the window) since the series' first article to be judged.

    Returns the flagged rows with ``baseline`` (the mean), ``sd``, ``threshold`` and ``z`` (how
    many sd above the baseline; None when the baseline is an unbroken zero).
    """
    if window < 2:
        raise InputError("the spike window must cover at least 2 periods")
    need = max(2, window // 2) if min_history is None else min_history
    series: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        key = tuple((name, value) for name, value in row.items() if name not in ("period", "count"))
        series[key].append(row)
    flagged = []
    for points in series.values():
        points.sort(key=lambda r: r["period"])
        # A series starts with its first article: the empty periods before a feed, topic or
        # deployment existed are no baseline (every first day would look like news).
        first = next((i for i, p in enumerate(points) if p["count"]), len(points))
        for i, row in enumerate(points):
            history = [p["count"] for p in points[max(first, i - window) : i]]
            if len(history) < need:
                continue
            mean = statistics.fmean(history)
            sd = max(statistics.pstdev(history), math.sqrt(mean))
            threshold = max(float(min_count), mean + k * sd)
            if row["count"] >= threshold and row["count"] > mean:
                flagged.append(
                    row
                    | {
                        "baseline": round(mean, 2),
                        "sd": round(sd, 2),
                        "threshold": round(threshold, 2),
                        "z": round((row["count"] - mean) / sd, 2) if sd > 0 else None,
                    }
                )
    flagged.sort(key=lambda r: (r["period"], TOPICS.index(r["topic"]) if r["topic"] in TOPICS else 99))
    return flagged


def find_spikes(
    session: Session,
    *,
    topics: Sequence[str] | None = None,
    by: str = "day",
    since: date | None = None,
    until: date | None = None,
    breakdown: str | None = None,
    window: int | None = None,
    k: float = 3.0,
    min_count: int = 5,
    tz: ZoneInfo | None = None,
) -> list[dict[str, Any]]:
    """Spikes in ``[since, until]``, each judged against the ``window`` periods before it (read
    from the database even when they lie before ``since``). Arguments as :func:`trends`."""
    _check(topics, by, breakdown)
    tz = tz or get_settings().tz
    window = window or DEFAULT_WINDOW[by]
    if until is None:
        until = utcnow().astimezone(tz).date()
    if since is None:
        since = _first_day(session, _check(topics, by, None), tz) or until
    first = period_start(since, by)
    history_start = first
    for _ in range(window):
        history_start = period_start(history_start - timedelta(days=1), by)
    rows = trends(
        session, topics=topics, by=by, since=history_start, until=until, breakdown=breakdown, tz=tz
    )
    return [s for s in spikes(rows, window=window, k=k, min_count=min_count) if s["period"] >= first]


# --- chart --------------------------------------------------------------------------------------


def _guess_granularity(days: Sequence[date]) -> str:
    if len(days) > 1 and all(d.day == 1 for d in days):
        return "month"
    if len(days) > 1 and all(d.weekday() == 0 for d in days) and min(
        (b - a).days for a, b in pairwise(days)
    ) >= 7:
        return "week"
    return "day"


def plot(
    rows: Sequence[dict[str, Any]],
    path: str | Path,
    *,
    by: str | None = None,
    spikes: Sequence[dict[str, Any]] = (),
    title: str | None = None,
    max_lines: int = 8,
    tz: ZoneInfo | None = None,
    since: date | None = None,
    until: date | None = None,
) -> Path:
    """A PNG line chart of :func:`trends` rows: one line per topic (per topic and key for a
    breakdown, the ``max_lines`` largest, and the legend says how many were left out), spikes
    ringed, dates readable at any range, the legend beside the plot where it hides no data. ``by``
    (guessed from the periods when not given) and ``tz`` (default ``MARSAD_TIMEZONE``) name the
    axes; ``since``/``until`` fix the x-axis when the rows alone cannot (one period, or none)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    figure = draw(rows, by=by, spikes=spikes, title=title, max_lines=max_lines, tz=tz, since=since, until=until)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png")
    except OSError as exc:
        raise InputError(f"cannot write the chart to {path}: {exc.strerror or exc}") from exc
    finally:
        plt.close(figure)
    return path


_MARKERS = {"isis": "o", "coalition": "s", "regional_cooperation": "^"}


def draw(
    rows: Sequence[dict[str, Any]],
    *,
    by: str | None = None,
    spikes: Sequence[dict[str, Any]] = (),
    title: str | None = None,
    max_lines: int = 8,
    tz: ZoneInfo | None = None,
    since: date | None = None,
    until: date | None = None,
) -> Any:
    """The matplotlib ``Figure`` that :func:`plot` saves (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    days = sorted({r["period"] for r in rows})
    by = by or _guess_granularity(days)
    breakdown = next((k for k in BREAKDOWNS if rows and k in rows[0]), None)

    series: dict[tuple[str, Any], dict[date, int]] = defaultdict(dict)
    for r in rows:
        series[(r["topic"], r.get(breakdown) if breakdown else None)][r["period"]] = r["count"]
    chosen = sorted(series, key=lambda s: -sum(series[s].values()))[:max_lines]
    chosen.sort(key=lambda s: (TOPICS.index(s[0]) if s[0] in TOPICS else 99, -sum(series[s].values())))

    fig, ax = plt.subplots(figsize=(10, 4.8), dpi=120, layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    peak = 0
    for n, name in enumerate(chosen):
        topic, key = name
        points = sorted(series[name].items())
        peak = max([peak, *(c for _, c in points)])
        label = TOPIC_LABELS.get(topic, topic) + (f" · {key or 'unknown'}" if breakdown else "")
        colour = TOPIC_COLOURS.get(topic) if not breakdown else colours[n % len(colours)]
        # Distinct markers keep a topic visible where its line runs under another's.
        ax.plot(
            [p for p, _ in points], [c for _, c in points], label=label, color=colour,
            linewidth=1.6, marker=_MARKERS.get(topic, "o") if len(points) <= 40 else None,
            markersize=4 if len(points) > 1 else 7, markerfacecolor="none" if len(chosen) > 1 else colour,
        )
        marked = [s for s in spikes if s["topic"] == topic and (not breakdown or s.get(breakdown) == key)]
        if marked:
            ax.scatter(
                [s["period"] for s in marked], [s["count"] for s in marked], s=90,
                facecolors="none", edgecolors=colour or "black", linewidths=1.8, zorder=3,
            )
    if spikes:
        ax.scatter([], [], s=90, facecolors="none", edgecolors="black", label="spike")

    first, last = (days[0], days[-1]) if days else (since, until)
    if first is not None and last is not None:
        # One period alone would get an axis spanning years; none would get 1970.
        pad = timedelta(days={"day": 1, "week": 7}.get(by, 31)) if first == last else timedelta(0)
        ax.set_xlim(first - pad, last + pad)
        shown_days = (last - first + 2 * pad).days
        # A few periods must be ticked per period, never in hours.
        locator = (
            {"day": mdates.DayLocator, "week": lambda: mdates.WeekdayLocator(byweekday=mdates.MO)}.get(
                by, mdates.MonthLocator
            )()
            if shown_days <= {"day": 12, "week": 84}.get(by, 366)
            else mdates.AutoDateLocator(minticks=3, maxticks=10)
        )
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    else:
        ax.set_xticks([])
    # Counts are whole articles: an all-zero range must not get a 0-0.05 axis of fractions.
    ax.set_ylim(0, max(1, peak * 1.12))
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(f"articles per {by}")
    zone = (tz or get_settings().tz).key
    ax.set_xlabel(f"{by} ({zone})" if by == "day" else f"{by} starting ({zone})")
    ax.grid(True, alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    left_out = len(series) - len(chosen)
    if first is not None and last is not None:
        span = f"{first:%d %b %Y}" if first == last else f"{first:%d %b %Y} – {last:%d %b %Y}"
        grouping = f"topic and {breakdown}" if breakdown else "topic"
        heading = f"Marsad: articles per {by} by {grouping}, {span}"
        if peak == 0:
            heading = f"Marsad: no articles, {span}"
        ax.set_title(title or heading)
    else:
        ax.set_title(title or "Marsad: no articles in this range")
    if chosen:
        fig.legend(
            loc="outside right upper", frameon=False,
            title=f"the {len(chosen)} largest of {len(series)}" if left_out else None,
        )
    return fig
