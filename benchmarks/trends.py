"""Trends benchmark: counts over a million tagged articles on SQLite and PostgreSQL.

    python benchmarks/trends.py [--articles 1000000] [--sqlite PATH] [--postgres URL] [--explain]

Generates N articles over two years (60 feeds, five languages, places, 0-3 topics each, 8%
undated, the last day's pages partly not fetched yet), bulk-loaded (executemany on SQLite, COPY on
PostgreSQL), with what a running Marsad also stores: an ingest run every 30 minutes (with failure
counts), the last 90 days' fetch events (one per feed per run, failures among them), three
recipients' daily digests and a few alerts, a failing feed, a feed switched off after failing and a
feed gone silent. Then prints per backend the median of several runs (Marsad's call and the
hand-written query in turns, so that both meet the same load) of:

1. weekly trends of one topic over the two years          marsad.trends.trends(by="week")
2. daily trends of all topics over 90 days                marsad.trends.trends(by="day")
3. a search for a rare term                               marsad.search.search
4. a search for a rare Arabic word, written with prefixes marsad.search.search
5. per topic, today's and the last 7 days' counts         marsad.trends.topic_counts
6. all of `marsad status`                                  marsad.status.collect

each beside a hand-written SQL query (or, for 6, the statements) giving the same answer (checked),
with the ratio: FTS5 MATCH / PostgreSQL @@ for the searches.
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
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, insert, text, update
from sqlalchemy.orm import Session

from marsad import search as fulltext
from marsad import status, trends
from marsad.config import get_settings, reset_settings
from marsad.db import make_engine, upgrade
from _scratch import scratch_postgres
from marsad.tagging import TOPICS
from models import Digest, Feed, FetchEvent, IngestRun

TZ = ZoneInfo("Asia/Baghdad")
END = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)  # "now" for the generated corpus
START = END - timedelta(days=730)
RARE_TERM = "zubaydiyah"  # appears in 25 articles
# الزبيدية with the prefixes Arabic attaches, in 25 other articles; searched for as زبيدية.
RARE_ARABIC = ("الزبيدية", "والزبيدية", "بالزبيدية", "للزبيدية", "زبيدية")
RARE_ARABIC_QUERY = "زبيدية"
SILENT_FEED, SWITCHED_OFF_FEED, FAILING_FEED = 60, 59, 58
SILENT_SINCE = END - timedelta(days=10)  # the silent feed's last article
SWITCHED_OFF_AT = END - timedelta(days=20)  # the switched-off feed's last (failed) poll
RECIPIENTS = ("analyst@newsroom.test", "desk@newsroom.test", "research@newsroom.test")
RUNS = 15
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
    # Drawn apart, so the rest of the corpus stays what it was before the Arabic word was added.
    picks = [i for i in random.Random(seed + 1).sample(range(n), min(n, 50)) if i not in rare]
    rare_arabic = {i: RARE_ARABIC[k % len(RARE_ARABIC)] for k, i in enumerate(picks[:25])}
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
        if i in rare_arabic:
            words[len(words) // 2] = rare_arabic[i]
        url = f"https://news{i % 997}.example/{i}"
        # The silent feed stopped publishing, and the switched-off one polls no more: their
        # later articles come from the other feeds.
        feed = 1 + i % 60
        if (feed == SILENT_FEED and discovered > SILENT_SINCE) or (
            feed == SWITCHED_OFF_FEED and discovered > SWITCHED_OFF_AT
        ):
            feed = 1 + i % 57
        # The last day's pages: one in ten not fetched yet.
        pending = discovered > END - timedelta(days=1) and i % 10 == 0
        yield (
            {
                "id": i + 1,
                "canonical_url": url,
                "url": url,
                "guid": url,
                "feed_id": feed,
                "title": " ".join(rng.choices(WORDS, k=8)).capitalize(),
                "text": " ".join(words),
                "published_at": None if undated else when,
                "date_source": None if undated else "feed",
                "discovered_at": discovered,
                "fetched_at": None if pending else discovered,
                "language": LANGUAGES[min(4, int(rng.expovariate(1.2)))],
                "site_name": None,
                "extraction_status": "pending" if pending else "ok",
                "fetch_attempts": 0 if pending else 1,
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
    finally:
        raw.close()
    load_operations(engine)
    with engine.begin() as connection:
        connection.execute(text("ANALYZE"))


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
    load_operations(engine)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))


def load_operations(engine: Engine) -> None:
    """What a running Marsad stores besides articles, which `marsad status` reads: the feeds' poll
    state, an ingest run every 30 minutes, the last 90 days' fetch events and the digests."""
    rng = random.Random(11)
    polled = END - timedelta(minutes=10)
    runs: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    started, run_id = START, 0
    while started < END - timedelta(minutes=30):
        run_id += 1
        feeds = [f for f in range(1, 61) if f != SWITCHED_OFF_FEED or started < SWITCHED_OFF_AT]
        failed = {f for f in feeds if rng.random() < 0.01}
        if started > END - timedelta(hours=2):
            failed.add(FAILING_FEED)
        new = rng.randint(0, 60)
        failures = {f"feed:http_{rng.choice((502, 503, 404))}": 1 for _ in failed} | (
            {"page:timeout": rng.randint(1, 3)} if rng.random() < 0.2 else {})
        runs.append({
            "id": run_id, "started_at": started, "finished_at": started + timedelta(seconds=rng.uniform(60, 400)),
            "status": "failed" if rng.random() < 0.002 else "completed", "feeds_polled": len(feeds),
            "feeds_ok": len(feeds) - len(failed), "feeds_unchanged": 0, "feeds_failed": len(failed),
            "articles_new": new, "articles_stored": new, "failures": failures,
            "stage_seconds": {"poll": round(rng.uniform(5, 30), 1), "fetch": round(rng.uniform(20, 200), 1)},
        })
        if started > END - timedelta(days=90):
            for f in feeds:
                bad = f in failed
                events.append({
                    "run_id": run_id, "feed_id": f, "started_at": started + timedelta(seconds=f),
                    "status": "failed" if bad else rng.choice(("ok", "not_modified", "not_modified")),
                    "reason": "http_503" if bad else None, "http_status": 503 if bad else 200,
                    "bytes": 0 if bad else rng.randint(2_000, 90_000), "items_seen": 0 if bad else 20,
                    "items_new": 0 if bad else rng.randint(0, 3), "duration_ms": rng.randint(80, 3000),
                    "error": "HTTP 503" if bad else None, "item_failures": None,
                })
        started += timedelta(minutes=30)
    digests: list[dict[str, Any]] = []
    day = START.astimezone(TZ).date()
    while day <= END.astimezone(TZ).date():
        for recipient in RECIPIENTS:
            for kind in ("daily", *(["spike:isis"] if rng.random() < 0.02 else [])):
                last = day == END.astimezone(TZ).date()
                failed = last and recipient == RECIPIENTS[1]
                period_end = datetime.combine(day, datetime.min.time(), tzinfo=TZ) + timedelta(hours=7)
                digests.append({
                    "recipient": recipient, "digest_date": day, "kind": kind,
                    "period_start": period_end - timedelta(days=1), "period_end": period_end,
                    "topics": list(TOPICS), "message_id": f"<{kind}.{day:%Y%m%d}.{recipient}>",
                    "subject": f"Marsad digest {day}", "status": "failed" if failed else "sent",
                    "story_count": rng.randint(5, 40), "article_count": rng.randint(10, 120),
                    "transport": "smtp", "attempts": 1, "unknown_attempts": 0,
                    "last_error": "550 mailbox unavailable" if failed else None,
                    "created_at": period_end, "attempted_at": period_end, "sent_at": None if failed else period_end,
                })
        day += timedelta(days=1)
    with engine.begin() as connection:
        connection.execute(
            update(Feed).values(last_status="ok", last_fetched_at=polled, last_success_at=polled))
        connection.execute(
            update(Feed).where(Feed.id == FAILING_FEED).values(
                error_count=3, last_status="failed", last_error="HTTP 503",
                last_success_at=END - timedelta(minutes=100)))
        connection.execute(
            update(Feed).where(Feed.id == SWITCHED_OFF_FEED).values(
                active=False, error_count=20, last_status="failed", last_fetched_at=SWITCHED_OFF_AT,
                last_success_at=SWITCHED_OFF_AT - timedelta(days=10),
                last_error="set inactive after 20 failed polls in a row (`marsad feeds enable` to retry); "
                "last error: HTTP 410"))
        for table, rows in ((IngestRun, runs), (FetchEvent, events), (Digest, digests)):
            for first in range(0, len(rows), 20_000):
                connection.execute(insert(table), rows[first : first + 20_000])
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT setval(pg_get_serial_sequence('ingest_runs', 'id'), :n)"),
                               {"n": run_id})


# --- the measurements ---------------------------------------------------------------------------


def paired_ms(
    ours: Callable[[], Any], theirs: Callable[[], Any], runs: int = RUNS
) -> tuple[tuple[float, Any], tuple[float, Any]]:
    """Medians of Marsad's call and the hand-written query, run in turns: on a shared machine
    both see the same load, so their ratio holds even when the times move."""
    results = [ours(), theirs()]  # warm the caches and the statement cache once
    times: list[list[float]] = [[], []]
    for _ in range(runs):
        for side, work in enumerate((ours, theirs)):
            started = time.perf_counter()
            results[side] = work()
            times[side].append((time.perf_counter() - started) * 1000)
    return (statistics.median(times[0]), results[0]), (statistics.median(times[1]), results[1])


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
        params = {"lo": _bind(dialect, mid(since_2y, TZ)), "hi": _bind(dialect, mid(today + timedelta(days=1), TZ))}
        (ms, rows), (hand_ms, hand_rows) = paired_ms(
            lambda: trends.trends(session, topics=["isis"], by="week", since=since_2y, until=today, tz=TZ),
            lambda: session.execute(text(hand["weekly"]), params).all())
        _same({(r["period"], "isis"): r["count"] for r in rows if r["count"]},
              {(_day(p), "isis"): c for p, c in hand_rows}, "weekly")
        out.append(("weekly trends, 1 topic, 2 years", ms, hand_ms, f"{sum(r['count'] for r in rows):,} tags"))

        # 2. daily, all topics, 90 days
        params = {"lo": _bind(dialect, mid(since_90, TZ)), "hi": _bind(dialect, mid(today + timedelta(days=1), TZ))}
        (ms, rows), (hand_ms, hand_rows) = paired_ms(
            lambda: trends.trends(session, by="day", since=since_90, until=today, tz=TZ),
            lambda: session.execute(text(hand["daily"]), params).all())
        _same({(r["period"], r["topic"]): r["count"] for r in rows if r["count"]},
              {(_day(p), t): c for p, t, c in hand_rows}, "daily")
        out.append(("daily trends, 3 topics, 90 days", ms, hand_ms, f"{sum(r['count'] for r in rows):,} tags"))

        # 3 and 4. searches: a rare English term, a rare Arabic word (its forms with prefixes)
        for label, query in (("search for a rare term", RARE_TERM),
                             ("search, Arabic word with prefixes", RARE_ARABIC_QUERY)):
            statement, params = hand_search(dialect, query)
            (ms, hits), (hand_ms, hand_rows) = paired_ms(
                lambda: fulltext.search(session, query, limit=20),
                lambda: session.execute(text(statement), params).all())
            _same({"hits": [(h.id, ",".join(h.topics)) for h in hits]},
                  {"hits": [(i, topics or "") for i, topics, _snippet in hand_rows]}, label)
            out.append((label, ms, hand_ms, f"{len(hits)} hits"))

        # 5. status counts: today and the last 7 days per topic
        params = {
            "today": _bind(dialect, mid(today, TZ)),
            "lo": _bind(dialect, mid(today - timedelta(days=6), TZ)),
            "hi": _bind(dialect, mid(today + timedelta(days=1), TZ)),
        }
        (ms, counts), (hand_ms, hand_rows) = paired_ms(
            lambda: trends.topic_counts(session, END, tz=TZ),
            lambda: session.execute(text(hand["status"]), params).all())
        _same({c["topic"]: (c["today"], c["last_7_days"]) for c in counts if c["last_7_days"]},
              {t: (int(d), int(w)) for t, d, w in hand_rows}, "status")
        out.append(("status counts, today and 7 days", ms, hand_ms,
                    ", ".join(f"{c['topic']} {c['today']}/{c['last_7_days']}" for c in counts)))

        # 6. the whole of `marsad status`, as the command calls it
        settings = get_settings()
        (ms, state), (hand_ms, theirs) = paired_ms(
            lambda: status.collect(session, settings, END),
            lambda: hand_status(session, dialect, settings.silent_days))
        ours = {
            "feeds": (state.feeds_active, state.feeds_inactive),
            "failing": [p.url for p in state.health.failing],
            "silent": [p.url for p in state.health.silent],
            "switched_off": [p.url for p in state.health.switched_off],
            "runs": [r.id for r in state.runs],
            "digests": sorted((d.recipient, d.day, d.status) for d in state.digests),
            "waiting": state.pages_waiting,
            "topics": {c["topic"]: (c["today"], c["last_7_days"]) for c in state.topics if c["last_7_days"]},
        }
        _same(ours, theirs, "marsad status")
        out.append(("marsad status (status.collect)", ms, hand_ms,
                    f"{state.feeds_ok} ok, {len(state.health.failing)} failing, {len(state.health.silent)} "
                    f"silent, {len(state.health.switched_off)} switched off; {state.pages_waiting:,} waiting"))

        if explain:
            _explain(session, dialect, since_2y, today)
    return out


def hand_search(dialect: str, query: str) -> tuple[str, dict[str, Any]]:
    """A search written by hand: the page of hits with their topics and snippets in one query,
    ranked as marsad.search ranks (title weighted, then newest). The analyst writes the Arabic
    word's prefixed forms out (`"زبيديه" OR "الزبيديه" OR ...`), folded."""
    forms = fulltext.arabic_forms(fulltext.fold_arabic(query))
    if dialect == "postgresql":
        config = "marsad_search_config(a.language)"
        chosen = f"CASE WHEN {config} = 'english'::regconfig THEN q.e ELSE q.s END"
        return (
            "WITH q AS (SELECT websearch_to_tsquery('english', :q) AS e, "
            "websearch_to_tsquery('simple', :q) AS s) "
            "SELECT a.id, (SELECT string_agg(topic, ',' ORDER BY topic) FROM article_tags t "
            "WHERE t.article_id = a.id), "
            f"ts_headline({config}, marsad_fold_arabic(left(coalesce(nullif(a.text, ''), a.title, ''), "
            f"100000)), {chosen}, 'MaxWords=30, MinWords=12, ShortWord=2, MaxFragments=0') "
            "FROM articles a, q "
            f"WHERE (a.search_vector @@ q.e AND {config} = 'english'::regconfig) "
            f"OR (a.search_vector @@ q.s AND {config} <> 'english'::regconfig) "
            f"ORDER BY ts_rank_cd('{{0.1, 0.2, 0.2, 1.0}}', a.search_vector, {chosen}) DESC, "
            "a.story_at DESC, a.id DESC LIMIT 20",
            {"q": " or ".join(f'"{form}"' for form in forms)},
        )
    return (
        "SELECT a.id, (SELECT group_concat(topic, ',') FROM "
        "(SELECT topic FROM article_tags t WHERE t.article_id = a.id ORDER BY topic)), "
        "snippet(articles_fts, CASE WHEN a.text IS NULL OR a.text = '' THEN 0 ELSE 1 END, "
        "'[', ']', '', 30) "
        "FROM articles_fts JOIN articles a ON a.id = articles_fts.rowid "
        "WHERE articles_fts MATCH :q "
        "ORDER BY bm25(articles_fts, 5.0, 1.0), a.story_at DESC, a.id DESC LIMIT 20",
        {"q": " OR ".join(f'"{form}"' for form in forms)},
    )


def hand_status(session: Session, dialect: str, silent_days: int) -> dict[str, Any]:
    """What `marsad status` shows, by hand: the feed counts, the failing, silent and switched-off
    feeds (each feed's newest article by an index seek: LATERAL on PostgreSQL, a correlated
    subquery on SQLite), the last runs, each recipient's last digests, the pages waiting and the
    topic counts."""
    run = lambda sql, **params: session.execute(text(sql), params).all()  # noqa: E731
    today = END.astimezone(TZ).date()
    mid = trends.local_midnight
    if dialect == "postgresql":
        silent_sql = (
            "SELECT f.url FROM feeds f "
            "CROSS JOIN LATERAL (SELECT max(discovered_at) AS newest FROM articles a WHERE a.feed_id = f.id) n "
            "WHERE f.active AND f.error_count = 0 AND n.newest < :cutoff "
            "AND (SELECT count(*) FROM (SELECT 1 FROM articles a WHERE a.feed_id = f.id "
            "AND a.discovered_at > n.newest - interval '28 days' AND a.discovered_at <= n.newest "
            "LIMIT 14) w) >= 14 ORDER BY f.id"
        )
    else:
        silent_sql = (
            "SELECT url FROM (SELECT f.id, f.url, (SELECT max(discovered_at) FROM articles a "
            "WHERE a.feed_id = f.id) AS newest FROM feeds f WHERE f.active AND f.error_count = 0) n "
            "WHERE newest < :cutoff AND (SELECT count(*) FROM (SELECT 1 FROM articles a "
            "WHERE a.feed_id = n.id AND a.discovered_at > strftime('%Y-%m-%d %H:%M:%f000', newest, '-28 days') "
            "AND a.discovered_at <= newest LIMIT 14)) >= 14 ORDER BY id"
        )
    active = dict(run("SELECT active, count(*) FROM feeds GROUP BY active"))
    return {
        "feeds": (active.get(True, 0), active.get(False, 0)),
        "failing": [u for u, in run("SELECT url FROM feeds WHERE active AND error_count > 0 ORDER BY id")],
        "silent": [u for u, in run(silent_sql, cutoff=_bind(dialect, END - timedelta(days=silent_days)))],
        "switched_off": [u for u, in run(
            "SELECT url FROM feeds WHERE NOT active AND (last_status = 'failed' OR last_error IS NOT NULL) "
            "ORDER BY id")],
        "runs": [r[0] for r in run(
            "SELECT id, started_at, finished_at, status, feeds_polled, feeds_failed, articles_new, "
            "articles_stored, failures, error FROM ingest_runs ORDER BY id DESC LIMIT 5")],
        "digests": sorted((r, str(d)[:10], s) for r, d, s, _n, _e in run(
            "SELECT d.recipient, d.digest_date, d.status, d.story_count, d.last_error FROM digests d "
            "JOIN (SELECT recipient, max(digest_date) AS day FROM digests GROUP BY recipient) m "
            "ON d.recipient = m.recipient AND d.digest_date = m.day ORDER BY d.recipient")),
        "waiting": run("SELECT count(*) FROM articles WHERE extraction_status IN ('pending', 'fetch_failed')")[0][0],
        "topics": {t: (int(d), int(w)) for t, d, w in run(
            hand_queries(dialect)["status"],
            today=_bind(dialect, mid(today, TZ)), lo=_bind(dialect, mid(today - timedelta(days=6), TZ)),
            hi=_bind(dialect, mid(today + timedelta(days=1), TZ)))},
    }


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
    print(f"  {'':36} {'marsad':>10} {'by hand':>10} {'ratio':>6}")
    for name, ms, hand_ms, note in measure(engine, explain):
        marsad = "n/a" if math.isnan(ms) else f"{ms:.1f} ms"
        by_hand = f"{hand_ms:.1f} ms" if hand_ms is not None else ""
        ratio = f"{ms / hand_ms:.2f}" if hand_ms else ""
        print(f"  {name:36} {marsad:>10} {by_hand:>10} {ratio:>6}   {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--articles", type=int, default=1_000_000)
    parser.add_argument("--sqlite", help="SQLite file to use (kept); default: a temporary file")
    parser.add_argument("--postgres", help="PostgreSQL URL to use (kept); default: a scratch database")
    parser.add_argument("--backend", choices=("both", "sqlite", "postgresql"), default="both")
    parser.add_argument("--explain", action="store_true", help="print the weekly query's plan")
    args = parser.parse_args()
    os.environ["MARSAD_TIMEZONE"] = TZ.key
    reset_settings()

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
        with scratch_postgres("marsad_bench") as engine:
            run("PostgreSQL", engine, args.articles, load_postgres, args.explain)


if __name__ == "__main__":
    main()
