"""Ingest throughput: the whole `marsad ingest` command against plain trafilatura on the same pages.

    pip install -e '.[bench]'
    python benchmarks/ingest.py [CORPUS] [--articles 2000] [--feeds 40] [--sizes 2000,20000]
                                [--database-url postgresql+psycopg://postgres@127.0.0.1/test]

CORPUS defaults to ../shared/corpus/extraction-dev (read in place, never copied). Each of the
``--articles`` articles is one of its pages with a unique paragraph added inside the article body,
so no two are duplicates; they are served by a loopback HTTP server behind ``--feeds`` RSS feeds.
One run measures:

(a) the yardstick: ``trafilatura.extract(html)`` over the same pages, one after another, in this
    process;
(b) ``marsad ingest`` on a fresh database, the whole command's wall time, with a running Prefect
    server configured (``PREFECT_API_URL``, as scheduled runs have) and with none (the command
    starts Prefect's temporary server); the ratio (a)/(b);
(c) a second ``marsad ingest`` with nothing new (every feed answers 304), with the running server;
(d) the peak memory of the command's process tree (PSS: shared pages counted once);
(e) where the time goes: start-up, then the run's own per-stage seconds (``ingest_runs.stage_seconds``),
    the rest being Prefect's bookkeeping and shutdown;
and the cost per new article with ``--sizes`` articles already stored (inserted through the same
tag-and-store path, from texts mixed out of the corpus's sentences).

With ``--database-url`` (PostgreSQL), each measurement gets a fresh database created next to the
given one and dropped at the end.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psutil
from sqlalchemy import create_engine, make_url, select, text, update

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from loopback import LoopbackServer  # noqa: E402  (the tests' real HTTP server)

from marsad import ingest as stages  # noqa: E402
from marsad.config import get_settings, reset_settings  # noqa: E402
from marsad.db import ensure_schema, make_engine, session_scope  # noqa: E402
from marsad.extract import ExtractedPage, extract_page  # noqa: E402
from marsad.feeds import MAX_ITEMS_PER_FEED, FeedSpec  # noqa: E402
from marsad.fetch import FetchResult, FetchStatus  # noqa: E402
from marsad.serve import prefect_server  # noqa: E402
from marsad.store import add_feeds  # noqa: E402
from models import Article, Feed, IngestRun  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "extraction-dev"


# Pages ---------------------------------------------------------------------------------------


def corpus_pages(corpus: Path) -> list[tuple[bytes, list[int]]]:
    """(html, offsets) of every UTF-8 page whose article body could be found: the offsets are just
    after each occurrence of the body's first words (in the body, but also in meta tags and
    JSON-LD), so text inserted there is part of the extracted article."""
    truth = json.loads((corpus / "ground-truth.json").read_text())
    pages: list[tuple[bytes, list[int]]] = []
    for page_id, entry in sorted(truth.items()):
        html = gzip.decompress((corpus / "html" / f"{page_id}.html.gz").read_bytes())
        try:
            decoded = html.decode("utf-8")
        except UnicodeDecodeError:
            continue  # byte offsets would not match character offsets
        words = re.findall(r"\w+", entry["articleBody"].strip().split("\n")[0])[:4]
        if len(words) < 4:
            continue
        ends = [m.end() for m in re.finditer(r"\W+".join(map(re.escape, words)), decoded)]
        if ends:
            pages.append((html, [len(decoded[:end].encode("utf-8")) for end in ends]))
    # Keep the pages whose marked copy really extracts with its mark (checked once, unmeasured).
    return [page for index, page in enumerate(pages)
            if "benchmark copy" in extract_page(article_html([page], index)).text]


def article_html(pages: list[tuple[bytes, list[int]]], index: int) -> bytes:
    html, offsets = pages[index % len(pages)]
    unique = f" (benchmark copy {index}, reference {index * 7919 % 100003})".encode("ascii")
    parts, start = [], 0
    for offset in offsets:
        parts += [html[start:offset], unique]
        start = offset
    return b"".join([*parts, html[start:]])


def rss(base: str, feed: int, ids: range) -> bytes:
    items = "".join(
        f"<item><title>Story {i}</title><link>{base}/a/{i}.html?utm_source=rss</link>"
        f"<guid>f{feed}-{i}</guid><description>Summary of story {i}.</description>"
        "<pubDate>Mon, 09 Nov 2026 09:15:00 +0000</pubDate></item>"
        for i in ids
    )
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>Feed {feed}</title>'
        f"{items}</channel></rss>"
    ).encode()


def serve_news(server: LoopbackServer, pages: list[tuple[bytes, int]], articles: int, feeds: int) -> list[str]:
    for i in range(articles):
        # No charset in the header: the corpus pages come in several encodings and declare them.
        server.add(f"/a/{i}.html", article_html(pages, i), content_type="text/html")
    per_feed = -(-articles // feeds)
    urls = []
    for f in range(feeds):
        ids = range(f * per_feed, min(articles, (f + 1) * per_feed))
        server.add(f"/feed/{f}.xml", rss(server.base_url, f, ids),
                   content_type="application/rss+xml", etag=f'"feed-{f}"')
        urls.append(server.url(f"/feed/{f}.xml"))
    return urls


# Databases -----------------------------------------------------------------------------------


class Databases:
    """Fresh databases by name: SQLite files in a scratch folder, or PostgreSQL databases."""

    def __init__(self, scratch: Path, template_url: str | None) -> None:
        self.scratch = scratch
        self.template = make_url(template_url) if template_url else None
        self.created: list[str] = []

    def fresh(self, name: str) -> str:
        if self.template is None:
            return f"sqlite:///{self.scratch / name}.db"
        database = f"marsad_bench_{name}_{os.getpid()}"
        self._admin(f'DROP DATABASE IF EXISTS "{database}"', f'CREATE DATABASE "{database}"')
        self.created.append(database)
        return self.template.set(database=database).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        if self.template is not None:
            self._admin(*(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in self.created))

    def _admin(self, *statements: str) -> None:
        engine = create_engine(self.template, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            for statement in statements:
                connection.execute(text(statement))
        engine.dispose()


def make_feeds_due(url: str) -> None:
    engine = make_engine(url)
    with session_scope(engine) as session:
        session.execute(update(Feed).values(next_poll_at=None))
    engine.dispose()


def prefill(url: str, server: LoopbackServer, count: int, corpus: Path, name: str) -> float:
    """Store ``count`` distinct articles through the ingest's own record → tag → store stages (no
    page fetch: their texts are mixed from the corpus's sentences); returns the seconds taken."""
    truth = json.loads((corpus / "ground-truth.json").read_text())
    sentences = [s.strip() for entry in truth.values() for s in re.split(r"(?<=[.!?])\s+", entry["articleBody"]) if len(s) > 40]
    rng = random.Random(count)
    archive_urls = []
    for part, first in enumerate(range(0, count, MAX_ITEMS_PER_FEED)):
        items = "".join(
            f"<item><title>Stored story {i}</title><link>{server.base_url}/stored/{name}/{i}.html</link>"
            f"<guid>{name}-{i}</guid><pubDate>Mon, 0{1 + i % 9} Nov 2026 08:00:00 +0000</pubDate></item>"
            for i in range(first, min(count, first + MAX_ITEMS_PER_FEED))
        )
        path = f"/archive/{name}/{part}.xml"
        server.add(path, f'<?xml version="1.0"?><rss version="2.0"><channel><title>Archive</title>{items}</channel></rss>',
                   content_type="application/rss+xml")
        archive_urls.append(server.url(path))
    started = time.perf_counter()
    os.environ["MARSAD_DATABASE_URL"] = url
    os.environ["MARSAD_ALLOW_HOSTS"] = "127.0.0.1"
    reset_settings()
    settings = get_settings()
    engine = make_engine(url)
    ensure_schema(engine)
    with session_scope(engine) as session:
        add_feeds(session, [FeedSpec(url) for url in archive_urls])
    run_id = stages.open_run(engine)
    outcomes = stages.parse_feeds(stages.poll_feeds(engine, settings, archive_urls))
    stages.record_feeds(engine, settings, run_id, outcomes)
    now = datetime.now(timezone.utc)
    stored = 0
    while pending := stages.claim_pages(engine, settings, 1000):
        updates = []
        for article in pending:
            body = "\n\n".join(rng.sample(sentences, 12))
            page = ExtractedPage(title=None, text=body, author=None, published_at=None, site_name=None,
                                 language="en", status="ok", method="benchmark")
            result = FetchResult(url=article.url, final_url=article.url, status=FetchStatus.OK, http_status=200)
            updates.append(stages.build_update(article, result, page, now, settings))
        stored += stages.store_articles(engine, settings, stages.tag_articles(updates)).stored
    if stored != count:
        sys.exit(f"the database was to be filled with {count} articles, but {stored} were stored")
    with session_scope(engine) as session:  # the archive feeds are not part of the measured runs
        session.execute(update(Feed).where(Feed.url.in_(archive_urls)).values(active=False))
    engine.dispose()
    return time.perf_counter() - started


# Measuring the command -----------------------------------------------------------------------


@dataclass
class CommandRun:
    label: str
    wall: float
    startup: float  # from launch to the run's first database write
    peak_pss_mb: float
    stages: dict[str, float]
    articles_new: int
    articles_stored: int
    cpu: dict[str, float]  # CPU seconds by process role
    memory: dict[str, float]  # peak PSS MB by process role


class TreeSampler:
    """Samples ``pid`` and its descendants every 0.2 s: the peak of their summed PSS (shared pages
    counted once) and each process's CPU seconds, by role."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_bytes = 0
        self.peak_by_role: dict[str, int] = {}  # each role's own peak (not at the same instant)
        self.cpu: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _role(self, process: psutil.Process) -> str:
        if process.pid == self.pid:
            return "marsad ingest (main process)"
        command = " ".join(process.cmdline())
        if "prefect" in command and "server" in command:
            return "Prefect temporary server"
        return "extraction workers"  # and their idle fork server

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                processes = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            by_role: dict[str, int] = {}
            for process in processes:
                try:
                    with process.oneshot():
                        pss = process.memory_full_info().pss
                        times = process.cpu_times()
                        role = self.cpu[process.pid][0] if process.pid in self.cpu else self._role(process)
                    self.cpu[process.pid] = (role, times.user + times.system)
                    total += pss
                    by_role[role] = by_role.get(role, 0) + pss
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    pass
            self.peak_bytes = max(self.peak_bytes, total)
            for role, pss in by_role.items():
                self.peak_by_role[role] = max(self.peak_by_role.get(role, 0), pss)
            self._stop.wait(0.2)

    def cpu_by_role(self) -> dict[str, float]:
        roles: dict[str, float] = {}
        for role, seconds in self.cpu.values():
            roles[role] = roles.get(role, 0.0) + seconds
        return roles

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def marsad_ingest(label: str, database_url: str, env: dict[str, str], log: Path) -> CommandRun:
    launched = datetime.now(timezone.utc)
    own_cpu = time.process_time()  # the loopback web server (and the sampler) live in this process
    started = time.perf_counter()
    with open(log, "ab") as output:
        process = subprocess.Popen(["marsad", "ingest"], env={**env, "MARSAD_DATABASE_URL": database_url},
                                   stdout=output, stderr=subprocess.STDOUT)
        with TreeSampler(process.pid) as sampler:
            code = process.wait()
    wall = time.perf_counter() - started
    server_cpu = time.process_time() - own_cpu
    if code != 0:
        sys.exit(f"`marsad ingest` ({label}) exited {code}; see {log}")
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        run = session.scalars(select(IngestRun).order_by(IngestRun.id.desc())).first()
        assert run is not None
        result = CommandRun(label, wall, (run.started_at - launched).total_seconds(),
                            sampler.peak_bytes / 2**20, dict(run.stage_seconds or {}),
                            run.articles_new, run.articles_stored,
                            sampler.cpu_by_role() | {"loopback web server (benchmark)": server_cpu},
                            {role: pss / 2**20 for role, pss in sampler.peak_by_role.items()})
    engine.dispose()
    return result


def distinct_texts(database_url: str) -> tuple[int, int]:
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        hashes = session.scalars(select(Article.content_hash).where(Article.extraction_status == "ok")).all()
    engine.dispose()
    return len(set(hashes)), len(hashes)


# Report --------------------------------------------------------------------------------------


def print_run(run: CommandRun, yardstick: float | None = None) -> None:
    ratio = f"   ratio (a)/(b) {yardstick / run.wall:.2f}" if yardstick else ""
    print(f"{run.label:<44}{run.wall:>8.2f} s  {run.articles_stored:>6} stored  "
          f"peak {run.peak_pss_mb:>5.0f} MB{ratio}")


def print_breakdown(run: CommandRun) -> None:
    print(f"  where the time of '{run.label}' goes (s):")
    parts = {"start-up (imports, Prefect, flow run)": run.startup, **run.stages}
    parts["rest (Prefect bookkeeping, shutdown)"] = run.wall - sum(parts.values())
    for name, seconds in parts.items():
        print(f"    {name:<40}{seconds:>8.2f}  {100 * seconds / run.wall:>5.1f} %")
    print("    CPU seconds: " + ", ".join(f"{role} {seconds:.1f}" for role, seconds in sorted(run.cpu.items())))
    print("    peak MB: " + ", ".join(f"{role} {mb:.0f}" for role, mb in sorted(run.memory.items())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", type=Path, nargs="?", default=DEFAULT_CORPUS)
    parser.add_argument("--articles", type=int, default=2000)
    parser.add_argument("--feeds", type=int, default=40)
    parser.add_argument("--sizes", default="2000,20000", help="articles already stored, comma-separated ('' skips)")
    parser.add_argument("--database-url", help="a PostgreSQL URL; fresh databases are created beside it")
    parser.add_argument("--no-yardstick", action="store_true", help="skip (a), e.g. while tuning")
    args = parser.parse_args()

    pages = corpus_pages(args.corpus)
    if not pages:
        sys.exit(f"no usable pages under {args.corpus} (html/*.html.gz and ground-truth.json)")
    print(f"machine: {os.cpu_count()} cores; corpus: {len(pages)} pages; "
          f"{args.articles} articles behind {args.feeds} feeds")

    yardstick = None
    if not args.no_yardstick:
        import trafilatura

        started = time.perf_counter()
        for i in range(args.articles):
            trafilatura.extract(article_html(pages, i))
        yardstick = time.perf_counter() - started
        print(f"{'(a) trafilatura.extract, one process':<44}{yardstick:>8.2f} s  "
              f"{args.articles / yardstick:>6.1f} pages/s")

    with tempfile.TemporaryDirectory() as scratch_name, LoopbackServer() as server:
        scratch = Path(scratch_name)
        databases = Databases(scratch, args.database_url)
        serve_news(server, pages, args.articles, args.feeds)
        log = scratch / "runs.log"
        env = {
            **os.environ,
            "MARSAD_ALLOW_HOSTS": "127.0.0.1",
            "MARSAD_FETCH_PER_HOST": "16",  # one loopback host stands in for forty sites
            "MARSAD_OUTBOX_DIR": str(scratch / "outbox"),
            "PREFECT_HOME": str(scratch / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        env.pop("PREFECT_API_URL", None)
        # As on a user's machine, Python caches compiled modules (this sandbox sets it off).
        env.pop("PYTHONDONTWRITEBYTECODE", None)

        def fresh_with_feeds(name: str, stored: int = 0) -> str:
            url = databases.fresh(name)
            if stored:
                seconds = prefill(url, server, stored, args.corpus, name)
                print(f"  ({stored} articles stored first, in {seconds:.1f} s)")
            engine = make_engine(url)
            ensure_schema(engine)
            with session_scope(engine) as session:
                add_feeds(session, [FeedSpec(server.url(f"/feed/{f}.xml")) for f in range(args.feeds)])
            engine.dispose()
            return url

        try:
            with prefect_server(scratch / "server-home", scratch / "server.log") as api_url:
                served = {**env, "PREFECT_API_URL": api_url}
                url = fresh_with_feeds("fresh")
                first = marsad_ingest("(b) marsad ingest, running Prefect server", url, served, log)
                print_run(first, yardstick)
                unique, ok = distinct_texts(url)
                print(f"  {ok} articles extracted, {unique} distinct texts")
                make_feeds_due(url)
                again = marsad_ingest("(c) nothing new, running server", url, served, log)
                print_run(again)
                sized = []
                for size in [int(s) for s in args.sizes.split(",") if s.strip()]:
                    sized.append(marsad_ingest(f"    with {size} articles already stored",
                                               fresh_with_feeds(f"size{size}", size), served, log))
            # A user's Prefect database is created once; the measured run starts the server on it.
            subprocess.run([sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
                           env=env, check=True, capture_output=True)
            url = fresh_with_feeds("temporary")
            temporary = marsad_ingest("(b) marsad ingest, temporary Prefect server", url, env, log)
            print_run(temporary, yardstick)
        finally:
            databases.drop_all()

        print()
        print_breakdown(first)
        print_breakdown(temporary)
        print_breakdown(again)
        if sized:
            print()
            print("cost per new article against the database's size (running server):")
            for run, size in zip([first, *sized], [0, *[int(s) for s in args.sizes.split(",") if s.strip()]]):
                per_article = (run.wall - run.startup) / max(run.articles_stored, 1)
                store = run.stages.get("store", 0.0) / max(run.articles_stored, 1)
                print(f"  {size:>6} stored before: {1000 * per_article:6.1f} ms per article "
                      f"(store stage {1000 * store:5.2f} ms)")


if __name__ == "__main__":
    main()
