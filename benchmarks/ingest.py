"""Ingest throughput, stage by stage, on real news pages served from loopback.

    python benchmarks/ingest.py /work/shared/corpus/extraction-dev [--articles 1000] [--feeds 10]
                                [--database-url postgresql+psycopg://postgres@127.0.0.1/test]

The corpus pages (read in place, never copied) are served by a local HTTP server under distinct
URLs, listed in ``--feeds`` RSS feeds, and ingested into a fresh database by the same stage
functions the Prefect flow calls (without Prefect, whose per-task cost is measured separately in
../shared/PREFECT-NOTES.md). Prints seconds and articles per second for each stage, then a
second poll to show what an unchanged feed costs.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from loopback import LoopbackServer  # noqa: E402  (the tests' real HTTP server)

from marsad import ingest as stages  # noqa: E402
from marsad.config import get_settings, reset_settings  # noqa: E402
from marsad.db import ensure_schema, make_engine, session_scope  # noqa: E402
from marsad.extract import ExtractorPool  # noqa: E402
from marsad.feeds import FeedSpec  # noqa: E402
from marsad.store import add_feeds  # noqa: E402

T = TypeVar("T")


def timed(label: str, count: int, work: Callable[[], T], totals: dict[str, float]) -> T:
    started = time.perf_counter()
    result = work()
    elapsed = time.perf_counter() - started
    totals[label] = totals.get(label, 0.0) + elapsed
    return result


def rss(base: str, feed_index: int, article_ids: range) -> bytes:
    items = "".join(
        f"<item><title>Story {i}</title><link>{base}/a/{i}.html?utm_source=rss</link>"
        f"<guid>f{feed_index}-{i}</guid><description>Summary of story {i}.</description>"
        "<pubDate>Mon, 09 Nov 2026 09:15:00 +0000</pubDate></item>"
        for i in article_ids
    )
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>Feed {feed_index}</title>'
        f"{items}</channel></rss>"
    ).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--articles", type=int, default=1000)
    parser.add_argument("--feeds", type=int, default=10)
    parser.add_argument("--database-url")
    args = parser.parse_args()

    pages = [gzip.decompress(p.read_bytes()) for p in sorted((args.corpus / "html").glob("*.html.gz"))]
    if not pages:
        sys.exit(f"no html/*.html.gz pages under {args.corpus}")

    with tempfile.TemporaryDirectory() as scratch, LoopbackServer() as server:
        os.environ["MARSAD_DATABASE_URL"] = args.database_url or f"sqlite:///{scratch}/bench.db"
        os.environ["MARSAD_ALLOW_HOSTS"] = "127.0.0.1"
        os.environ.setdefault("MARSAD_FETCH_PER_HOST", "16")  # one loopback host stands for many sites
        reset_settings()
        settings = get_settings()
        engine = make_engine(settings.database_url)
        ensure_schema(engine)

        for i in range(args.articles):
            server.add(f"/a/{i}.html", pages[i % len(pages)])
        per_feed = -(-args.articles // args.feeds)
        for f in range(args.feeds):
            ids = range(f * per_feed, min(args.articles, (f + 1) * per_feed))
            server.add(f"/feed/{f}.xml", rss(server.base_url, f, ids), content_type="application/rss+xml",
                       etag=f'"feed-{f}"')
        with session_scope(engine) as session:
            add_feeds(session, [FeedSpec(server.url(f"/feed/{f}.xml")) for f in range(args.feeds)])

        totals: dict[str, float] = {}
        with ExtractorPool(settings.extract_workers) as pool:
            pool.extract_many([(None, pages[0])])  # start the workers outside the measurement
            run_id = stages.open_run(engine)
            polls = timed("poll feeds", args.feeds, lambda: stages.poll_feeds(engine, settings), totals)
            outcomes = timed("parse feeds", args.feeds, lambda: stages.parse_feeds(polls), totals)
            record = timed("record items", args.articles, lambda: stages.record_feeds(engine, settings, run_id, outcomes), totals)
            stored = 0
            while pending := timed("claim pages", 0, lambda: stages.claim_pages(engine, settings), totals):
                fetched = timed("fetch pages", len(pending), lambda: stages.fetch_pages(settings, pending), totals)
                extracted = timed("extract", len(pending), lambda: stages.extract_pages(pool, settings, fetched), totals)
                updates = timed("tag", len(pending), lambda: stages.tag_articles(extracted), totals)
                stored += timed("store", len(pending), lambda: stages.store_articles(engine, settings, updates), totals).stored

        print(f"database: {engine.url.render_as_string()}  cores: {os.cpu_count()}  "
              f"feeds: {args.feeds}  new articles: {record.articles_new}  stored: {stored}")
        print(f"{'stage':<14}{'seconds':>10}{'articles/s':>14}")
        for label, seconds in totals.items():
            rate = f"{stored / seconds:,.0f}" if seconds and label not in ("poll feeds", "parse feeds") else "-"
            print(f"{label:<14}{seconds:>10.3f}{rate:>14}")
        total = sum(totals.values())
        print(f"{'total':<14}{total:>10.3f}{stored / total:>14,.0f}")

        with session_scope(engine) as session:  # make every feed due again
            from sqlalchemy import update

            from models import Feed

            session.execute(update(Feed).values(next_poll_at=None))
        again_totals: dict[str, float] = {}
        polls = timed("poll", args.feeds, lambda: stages.poll_feeds(engine, settings), again_totals)
        again = timed("parse", args.feeds, lambda: stages.parse_feeds(polls), again_totals)
        timed("record", args.feeds, lambda: stages.record_feeds(engine, settings, run_id, again), again_totals)
        print(f"second poll of {args.feeds} unchanged feeds "
              f"({sum(o.status == 'not_modified' for o in again)} answered 304): "
              + ", ".join(f"{label} {seconds:.3f} s" for label, seconds in again_totals.items()))


if __name__ == "__main__":
    main()
