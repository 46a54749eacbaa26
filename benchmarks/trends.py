"""Trends benchmark: counts over a million tagged articles on SQLite and PostgreSQL.

    python benchmarks/trends.py [--articles 1000000] [--sqlite PATH] [--postgres URL] [--explain]

Generates N articles over two years (60 feeds, five languages, places, 0-3 topics each, 8%
undated), bulk-loaded (executemany on SQLite, COPY on PostgreSQL), then prints per backend the
median of several runs of:

1. weekly trends of one topic over the two years          marsad.trends.trends(by="week")
2. daily trends of all topics over 90 days                marsad.trends.trends(by="day")
3. a search for a rare term                               marsad.search.search (n/a without it)
4. per topic, today's and the last 7 days' counts         marsad.trends.topic_counts

and for 1, 2 and 4 a hand-written SQL query giving the same answer (checked), with the ratio.
Time zone: Asia/Baghdad. Without --sqlite the SQLite file is temporary; without --postgres a scratch
database is created on MARSAD_TEST_POSTGRES_URL's server (default 127.0.0.1:5432) and dropped after.
An existing --sqlite file or --postgres database that already holds articles is reused as it is.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from marsad import trends
from marsad.db import make_engine, upgrade
from marsad.tagging import TOPICS

TZ = ZoneInfo("Asia/Baghdad")
END = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)  # "now" for the generated corpus
START = END - timedelta(days=730)
RARE_TERM = "zubaydiyah"  # appears in 25 articles
RUNS = 7
LANGUAGES = ("en", "ar", "fa", "tr", "fr")
PLACES = (
    "Mosul", "Raqqa", "Deir ez-Zor", "Baghdad", "Kirkuk", "Anbar", "Damascus", "Idlib", "Hasakah",
    "Amman", "Beirut", "Ankara", "Tehran", "Erbil", "Tikrit", "Fallujah", "Ramadi", "Palmyra",
    "Al-Hol", "Sinjar", "Diyala", "Homs", "Aleppo", "Qamishli", "Baiji", "Samarra",
)
WORDS = ["forces", "security", "operation", "attack", "killed", "militants", "statement", "ministry", "border", "province", "officials", "said", "group", "cell", "arrested", "raid", "strike", "coalition", "cooperation", "meeting", "agreement", "desert", "village", "convoy", "checkpoint", "camp", "displaced", "families", "talks", "intelligence", "patrol"]


# --- the corpus ---------------------------------------------------------------------------------


def fmt(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")  # as SQLAlchemy stores UTC on SQLite


def generate(n: int, seed: int = 7) -> Iterator[tuple[dict[str, Any], list[str]]]:
    """Articles with their topics. Volume grows over the two years, with a few news spikes."""
    rng = random.Random(seed)
    span = (END - START).total_seconds()
    rare = set(rng.sample(range(n), 25))
    spikes = [START + timedelta(days=d) for d in (100, 333, 520, 700)]
    for i in range(n):
        # sqrt makes later days busier (a growing feed list); 3% cluster round a spike day
        if rng.random() < 0.03:
            when = rng.choice(spikes) + timedelta(seconds=rng.uniform(0, 86400))
        else:
            when = START + timedelta(seconds=span * rng.random() ** 0.7)
        discovered = when + timedelta(minutes=rng.uniform(1, 240))
        undated = rng.random() < 0.08
        r = rng.random()
        k = 0 if r < 0.40 else 1 if r < 0.75 else 2 if r < 0.93 else 3
        topics = rng.sample(TOPICS, k=k, counts=(5, 3, 2)) if k else []
        topics = list(dict.fromkeys(topics))
        words = rng.choices(WORDS, k=40)
        if i in rare:
            words[rng.randrange(len(words))] = RARE_TERM
        url = f"https://news{i % 997}.example/{i}"
        yield (
            {
                "id": i + 1,
                "canonical_url": url,
                "url": url,
                "guid": url,
                "feed_id": 1 + i % 60,
                "title": " ".join(rng.choices(WORDS, k=8)).capitalize(),
                "text": " ".join(words),
                "published_at": None if undated else when,
                "date_source": None if undated else "feed",
                "discovered_at": discovered,
                "fetched_at": discovered,
                "language": LANGUAGES[min(4, int(rng.expovariate(1.2)))],
                "site_name": None,
                "extraction_status": "ok",
                "fetch_attempts": 1,
                "places": rng.sample(PLACES, k=rng.choice((0, 1, 1, 2, 3))),
                "actors": [],
                "story_at": discovered if undated else when,
            },
            topics,
        )


ARTICLE_COLUMNS = (
    "id", "canonical_url", "url", "guid", "feed_id", "title", "text", "published_at",
    "date_source", "discovered_at", "fetched_at", "language", "site_name", "extraction_status",
    "fetch_attempts", "places", "actors", "story_at",
)
TAG_COLUMNS = ("article_id", "topic", "score", "evidence", "tagger_version", "tagged_at", "story_at")


def _tag_rows(article: dict[str, Any], topics: list[str]) -> list[tuple[Any, ...]]:
    return [
        (article["id"], t, 0.8, "[]", "bench", article["discovered_at"], article["story_at"])
        for t in topics
    ]


def _feeds(connection: Any) -> None:
    connection.execute(
        text(
            "INSERT INTO feeds (id, url, name, language, active, error_count, created_at) "
            "VALUES (:id, :url, :name, 'en', true, 0, :created)"
        ),
        [
            {"id": f, "url": f"https://feed{f}.example/rss", "name": f"Feed {f:02d}",
             "created": fmt(START) if connection.dialect.name == "sqlite" else START}
            for f in range(1, 61)
        ],
    )


def load_sqlite(engine: Engine, n: int) -> None:
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        with engine.begin() as connection:
            _feeds(connection)
        insert_article = (
            f"INSERT INTO articles ({', '.join(ARTICLE_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in ARTICLE_COLUMNS)})"
        )
        insert_tag = (
            f"INSERT INTO article_tags ({', '.join(TAG_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in TAG_COLUMNS)})"
        )
        articles: list[tuple[Any, ...]] = []
        tags: list[tuple[Any, ...]] = []

        def flush() -> None:
            cursor.executemany(insert_article, articles)
            cursor.executemany(insert_tag, tags)
            articles.clear()
            tags.clear()

        for article, topics in generate(n):
            row = dict(article)
            for key in ("published_at", "discovered_at", "fetched_at", "story_at"):
                row[key] = fmt(row[key]) if row[key] else None
            row["places"] = json.dumps(row["places"])
            row["actors"] = json.dumps(row["actors"])
            articles.append(tuple(row[c] for c in ARTICLE_COLUMNS))
            tags.extend(
                (t[0], t[1], t[2], t[3], t[4], fmt(t[5]), fmt(t[6])) for t in _tag_rows(article, topics)
            )
            if len(articles) >= 20_000:
                flush()
        flush()
        raw.commit()
        cursor.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()


def _copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        value = json.dumps(value)
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def load_postgres(engine: Engine, n: int) -> None:
    with engine.begin() as connection:
        _feeds(connection)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        batch = 50_000
        generator = generate(n)
        while True:
            articles, tags = io.StringIO(), io.StringIO()
            count = 0
            for article, topics in generator:
                articles.write("\t".join(_copy_text(article[c]) for c in ARTICLE_COLUMNS) + "\n")
                for tag in _tag_rows(article, topics):
                    tags.write("\t".join(_copy_text(v) for v in tag) + "\n")
                count += 1
                if count >= batch:
                    break
            if not count:
                break
            with cursor.copy(f"COPY articles ({', '.join(ARTICLE_COLUMNS)}) FROM STDIN") as copy:
                copy.write(articles.getvalue())
            with cursor.copy(f"COPY article_tags ({', '.join(TAG_COLUMNS)}) FROM STDIN") as copy:
                copy.write(tags.getvalue())
        cursor.execute("SELECT setval(pg_get_serial_sequence('articles', 'id'), (SELECT max(id) FROM articles))")
        raw.commit()
    finally:
        raw.close()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))


# --- the measurements ---------------------------------------------------------------------------


def median_ms(work: Callable[[], Any], runs: int = RUNS) -> tuple[float, Any]:
    result = work()  # warm the caches and the statement cache once
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def hand_queries(dialect: str) -> dict[str, str]:
    """What an analyst would write by hand for the same answers (Asia/Baghdad has no DST now:
    a fixed +03:00 on SQLite)."""
    if dialect == "postgresql":
        local = "(story_at AT TIME ZONE 'Asia/Baghdad')"
        week, day = f"date_trunc('week', {local})::date", f"{local}::date"
    else:
        local = "story_at, '+3 hours'"
        week, day = f"date({local}, '-6 days', 'weekday 1')", f"date({local})"
    return {
        "weekly": f"SELECT {week} AS period, count(*) FROM article_tags WHERE topic = 'isis' "
        "AND story_at >= :lo AND story_at < :hi GROUP BY 1 ORDER BY 1",
        "daily": f"SELECT {day} AS period, topic, count(*) FROM article_tags "
        "WHERE topic IN ('isis', 'coalition', 'regional_cooperation') "
        "AND story_at >= :lo AND story_at < :hi GROUP BY 1, 2 ORDER BY 1, 2",
        "status": "SELECT topic, sum(CASE WHEN story_at >= :today THEN 1 ELSE 0 END), count(*) "
        "FROM article_tags WHERE topic IN ('isis', 'coalition', 'regional_cooperation') "
        "AND story_at >= :lo AND story_at < :hi GROUP BY topic",
    }


def _bind(dialect: str, value: datetime) -> Any:
    return fmt(value) if dialect == "sqlite" else value


def measure(engine: Engine, explain: bool) -> list[tuple[str, float, float | None, str]]:
    dialect = engine.dialect.name
    hand = hand_queries(dialect)
    today = END.astimezone(TZ).date()
    since_2y, since_90 = START.astimezone(TZ).date(), today - timedelta(days=89)
    mid = trends.local_midnight
    out = []
    with Session(engine) as session:
        # 1. weekly, one topic, two years
        ms, rows = median_ms(lambda: trends.trends(
            session, topics=["isis"], by="week", since=since_2y, until=today, tz=TZ))
        params = {"lo": _bind(dialect, mid(since_2y, TZ)), "hi": _bind(dialect, mid(today + timedelta(days=1), TZ))}
        hand_ms, hand_rows = median_ms(lambda: session.execute(text(hand["weekly"]), params).all())
        _same({(r["period"], "isis"): r["count"] for r in rows if r["count"]},
              {(_day(p), "isis"): c for p, c in hand_rows}, "weekly")
        out.append(("weekly trends, 1 topic, 2 years", ms, hand_ms, f"{sum(r['count'] for r in rows):,} tags"))

        # 2. daily, all topics, 90 days
        ms, rows = median_ms(lambda: trends.trends(session, by="day", since=since_90, until=today, tz=TZ))
        params = {"lo": _bind(dialect, mid(since_90, TZ)), "hi": _bind(dialect, mid(today + timedelta(days=1), TZ))}
        hand_ms, hand_rows = median_ms(lambda: session.execute(text(hand["daily"]), params).all())
        _same({(r["period"], r["topic"]): r["count"] for r in rows if r["count"]},
              {(_day(p), t): c for p, t, c in hand_rows}, "daily")
        out.append(("daily trends, 3 topics, 90 days", ms, hand_ms, f"{sum(r['count'] for r in rows):,} tags"))

        # 3. search for a rare term
        try:
            from marsad.search import search  # the search helper's module, when present
        except ImportError:
            out.append(("search for a rare term", float("nan"), None, "n/a (no marsad.search)"))
        else:
            ms, hits = median_ms(lambda: search(session, RARE_TERM, limit=20))
            out.append(("search for a rare term", ms, None, f"{len(hits)} hits"))

        # 4. status counts: today and the last 7 days per topic
        ms, counts = median_ms(lambda: trends.topic_counts(session, END, tz=TZ))
        params = {
            "today": _bind(dialect, mid(today, TZ)),
            "lo": _bind(dialect, mid(today - timedelta(days=6), TZ)),
            "hi": _bind(dialect, mid(today + timedelta(days=1), TZ)),
        }
        hand_ms, hand_rows = median_ms(lambda: session.execute(text(hand["status"]), params).all())
        _same({c["topic"]: (c["today"], c["last_7_days"]) for c in counts if c["last_7_days"]},
              {t: (int(d), int(w)) for t, d, w in hand_rows}, "status")
        out.append(("status counts, today and 7 days", ms, hand_ms,
                    ", ".join(f"{c['topic']} {c['today']}/{c['last_7_days']}" for c in counts)))

        if explain:
            _explain(session, dialect, since_2y, today)
    return out


def _day(value: Any) -> date:
    return value if isinstance(value, date) and not isinstance(value, datetime) else date.fromisoformat(str(value)[:10])


def _same(ours: dict[Any, Any], theirs: dict[Any, Any], label: str) -> None:
    if ours != theirs:
        diff = {k: (ours.get(k), theirs.get(k)) for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k)}
        raise SystemExit(f"{label}: marsad.trends and the hand-written query disagree: {sorted(diff.items())[:5]}")


def _explain(session: Session, dialect: str, since: date, until: date) -> None:
    """Print the plan of the weekly trends statement as Marsad sends it."""
    statements: list[tuple[str, Any]] = []
    from sqlalchemy import event

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        statements.append((statement, parameters))

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", capture)
    try:
        trends.trends(session, topics=["isis"], by="week", since=since, until=until, tz=TZ)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    statement, parameters = statements[-1]
    raw = session.connection().connection.driver_connection
    prefix = "EXPLAIN (ANALYZE, BUFFERS) " if dialect == "postgresql" else "EXPLAIN QUERY PLAN "
    cursor = raw.cursor()
    cursor.execute(prefix + statement, parameters)
    print(f"\n{dialect} plan of weekly trends:")
    for row in cursor.fetchall()[:40]:
        print("   ", row[0] if dialect == "postgresql" else row)


# --- main ---------------------------------------------------------------------------------------


def has_articles(engine: Engine) -> bool:
    with engine.connect() as connection:
        return bool(connection.execute(text("SELECT count(*) FROM articles")).scalar())


def run(label: str, engine: Engine, n: int, loader: Callable[[Engine, int], None], explain: bool) -> None:
    upgrade(engine)
    if has_articles(engine):
        print(f"{label}: reusing the articles already stored")
    else:
        started = time.perf_counter()
        loader(engine, n)
        print(f"{label}: generated and loaded {n:,} articles in {time.perf_counter() - started:.0f} s")
    with engine.connect() as connection:
        tags = connection.execute(text("SELECT count(*) FROM article_tags")).scalar()
        articles = connection.execute(text("SELECT count(*) FROM articles")).scalar()
    print(f"{label}: {articles:,} articles, {tags:,} tags; median of {RUNS} runs, time zone {TZ.key}")
    print(f"  {'':34} {'marsad':>10} {'by hand':>10} {'ratio':>6}")
    for name, ms, hand_ms, note in measure(engine, explain):
        marsad = "n/a" if math.isnan(ms) else f"{ms:.1f} ms"
        by_hand = f"{hand_ms:.1f} ms" if hand_ms is not None else ""
        ratio = f"{ms / hand_ms:.2f}" if hand_ms else ""
        print(f"  {name:34} {marsad:>10} {by_hand:>10} {ratio:>6}   {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--articles", type=int, default=1_000_000)
    parser.add_argument("--sqlite", help="SQLite file to use (kept); default: a temporary file")
    parser.add_argument("--postgres", help="PostgreSQL URL to use (kept); default: a scratch database")
    parser.add_argument("--backend", choices=("both", "sqlite", "postgresql"), default="both")
    parser.add_argument("--explain", action="store_true", help="print the weekly query's plan")
    args = parser.parse_args()
    os.environ["MARSAD_TIMEZONE"] = TZ.key

    if args.backend in ("both", "sqlite"):
        with tempfile.TemporaryDirectory() as scratch:
            path = args.sqlite or f"{scratch}/trends.db"
            engine = make_engine(f"sqlite:///{path}")
            run("SQLite", engine, args.articles, load_sqlite, args.explain)
            engine.dispose()

    if args.backend in ("both", "postgresql"):
        if args.postgres:
            engine = make_engine(args.postgres)
            run("PostgreSQL", engine, args.articles, load_postgres, args.explain)
            engine.dispose()
            return
        admin_url = os.environ.get("MARSAD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
        admin = make_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
        name = f"marsad_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            engine = make_engine(admin.url.set(database=name).render_as_string(hide_password=False))
            run("PostgreSQL", engine, args.articles, load_postgres, args.explain)
            engine.dispose()
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
