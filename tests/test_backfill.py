"""Backfill: sitemaps and URL lists through the ingest's page loop, against real loopback servers.

Only 127.0.0.x addresses are used: 127.0.0.1 is allowed by ``allow_loopback``, 127.0.0.2 stands
for an address the fetcher must refuse, 127.0.0.3 for a second allowed host.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from html import escape
from itertools import pairwise
from pathlib import Path

import pytest
from loopback import LoopbackServer, RecordedRequest
from sqlalchemy import Engine, func, select
from webdata import ARABIC_PARAGRAPHS, ENGLISH_PARAGRAPHS, Item, article_page, rss

from marsad import backfill
from marsad import ingest as stages
from marsad.config import Settings, get_settings, reset_settings
from marsad.db import session_scope
from marsad.errors import BlockedAddressError, InputError, SitemapError
from marsad.extract import ExtractorPool
from marsad.feeds import FeedSpec
from marsad.fetch import Fetcher, HostSpacing
from marsad.store import PendingArticle, add_feeds
from models import Article, ArticleTag, DateSource, ExtractionStatus

SITEMAP_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"


@pytest.fixture(autouse=True)
def _no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pause between requests unless a test asks for one: the spacing has tests of its own."""
    monkeypatch.setenv("MARSAD_BACKFILL_HOST_INTERVAL", "0")
    reset_settings()


class TimedServer(LoopbackServer):
    """A LoopbackServer that also notes when each request arrived (time.monotonic())."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(host)
        self.arrivals: list[tuple[float, str]] = []

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.arrivals.append((time.monotonic(), request.path))
        super()._record(request)

    def times_for(self, prefix: str) -> list[float]:
        with self._lock:
            return [at for at, path in self.arrivals if path.startswith(prefix)]


@pytest.fixture
def timed_server() -> Iterator[TimedServer]:
    with TimedServer("127.0.0.1") as server:
        yield server


# Sitemaps written for the tests ----------------------------------------------------------------


def news_sitemap(entries: list[tuple[str, str | None, str | None]]) -> bytes:
    """A Google News sitemap of (loc, news:publication_date, news:title)."""
    urls = []
    for loc, published, title in entries:
        news = ""
        if published or title:
            news = (
                "<news:news><news:publication><news:name>Frontier Wire</news:name>"
                "<news:language>en</news:language></news:publication>"
                + (f"<news:publication_date>{published}</news:publication_date>" if published else "")
                + (f"<news:title>{escape(title)}</news:title>" if title else "")
                + "</news:news>"
            )
        urls.append(f"<url><loc>{escape(loc)}</loc>{news}</url>")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<urlset xmlns="{SITEMAP_NS}" xmlns:news="{backfill.NEWS_NS}">'
        + "".join(urls)
        + "</urlset>"
    ).encode()


def urlset(entries: list[tuple[str, str | None]]) -> bytes:
    """A plain sitemap of (loc, lastmod)."""
    urls = "".join(
        f"<url><loc>{escape(loc)}</loc>" + (f"<lastmod>{lastmod}</lastmod>" if lastmod else "") + "</url>"
        for loc, lastmod in entries
    )
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="{SITEMAP_NS}">{urls}</urlset>'.encode()


def sitemap_index(children: list[tuple[str, str | None]]) -> bytes:
    sitemaps = "".join(
        f"<sitemap><loc>{escape(loc)}</loc>" + (f"<lastmod>{lastmod}</lastmod>" if lastmod else "") + "</sitemap>"
        for loc, lastmod in children
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<sitemapindex xmlns="{SITEMAP_NS}">{sitemaps}</sitemapindex>'
    ).encode()


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>http://127.0.0.1/&lol9;</loc></url></urlset>
"""

XXE = (
    b'<?xml version="1.0"?><!DOCTYPE u [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b"<urlset><url><loc>http://127.0.0.1/&x;</loc></url></urlset>"
)


def serve_pages(server: LoopbackServer, count: int, prefix: str = "/news") -> list[str]:
    """``count`` article pages; returns their URLs."""
    urls = []
    for index in range(count):
        path = f"{prefix}/story-{index}.html"
        server.add(path, article_page(f"Desert raid report {index}", ENGLISH_PARAGRAPHS))
        urls.append(server.url(path))
    return urls


def articles(engine: Engine) -> list[Article]:
    with session_scope(engine) as session:
        return list(session.scalars(select(Article).order_by(Article.id)))


def settings() -> Settings:
    return get_settings()


def run_pages(engine: Engine, pool: ExtractorPool, *, limit: int | None = None, batches: int | None = None) -> int:
    """The flow's page loop without Prefect: claim → fetch → extract → tag → store; pages stored."""
    spacing = HostSpacing(settings().backfill_host_interval)
    stored = done = 0
    while (batches is None or done < batches) and (
        pending := stages.claim_pages(engine, settings(), limit=limit, backfilled=True)
    ):
        fetched = stages.fetch_pages(settings(), pending, spacing)
        updates = stages.tag_articles(stages.extract_pages(pool, settings(), fetched))
        stored += stages.store_articles(engine, settings(), updates).stored
        done += 1
    return stored


@pytest.fixture(scope="module")
def pool() -> Iterator[ExtractorPool]:
    with ExtractorPool(workers=1, timeout=20) as extractor:
        yield extractor


# Parsing ---------------------------------------------------------------------------------------


def test_a_news_sitemap_gives_each_url_its_publication_date_and_title() -> None:
    body = news_sitemap([
        ("http://127.0.0.1/news/raid.html", "2026-10-05T09:30:00+03:00", "Four suspects held after desert raid"),
        ("http://127.0.0.1/news/talks.html", "2026-10-06", None),
        ("/news/relative.html", None, None),
        ("javascript:alert(1)", None, None),
        ("", None, None),
    ])
    # lastmod is the fallback: news:publication_date wins when both are given.
    body = body.replace(
        b"<loc>/news/relative.html</loc>", b"<loc>/news/relative.html</loc><lastmod>2026-10-07T23:10Z</lastmod>"
    ).replace(
        b"<loc>http://127.0.0.1/news/raid.html</loc>",
        b"<loc>http://127.0.0.1/news/raid.html</loc><lastmod>2026-11-01T00:00Z</lastmod>",
    )

    sitemap = backfill.parse_sitemap(body, "http://127.0.0.1/sitemap-news.xml")

    assert sitemap.kind is backfill.SitemapKind.URLSET
    raid, talks, relative = sitemap.entries
    assert raid.loc == "http://127.0.0.1/news/raid.html"
    assert raid.when == datetime(2026, 10, 5, 6, 30, tzinfo=UTC)
    assert raid.title == "Four suspects held after desert raid"
    assert talks.when == date(2026, 10, 6) and talks.title is None
    assert relative.loc == "http://127.0.0.1/news/relative.html"
    assert relative.when == datetime(2026, 10, 7, 23, 10, tzinfo=UTC)
    assert sitemap.skipped == {"bad_url": 1, "no_loc": 1}


def test_a_gzipped_sitemap_index_is_read_and_a_gzip_bomb_is_capped() -> None:
    index = sitemap_index([("http://127.0.0.1/a.xml", "2026-10-31"), ("http://127.0.0.1/b.xml.gz", None)])

    parsed = backfill.parse_sitemap(gzip.compress(index), "http://127.0.0.1/index.xml.gz", max_bytes=10_000)

    assert parsed.kind is backfill.SitemapKind.INDEX
    assert [(e.loc, e.when) for e in parsed.entries] == [
        ("http://127.0.0.1/a.xml", date(2026, 10, 31)),
        ("http://127.0.0.1/b.xml.gz", None),
    ]
    bomb = gzip.compress(urlset([]) + b" " * 5_000_000)  # about 5 KB on the wire
    with pytest.raises(SitemapError, match="larger than 100000 bytes once decompressed") as refused:
        backfill.parse_sitemap(bomb, "http://127.0.0.1/bomb.xml.gz", max_bytes=100_000)
    assert refused.value.reason == "too_large"
    with pytest.raises(SitemapError, match="truncated gzip"):
        backfill.parse_sitemap(gzip.compress(index)[:40], "http://127.0.0.1/cut.xml.gz", max_bytes=10_000)


@pytest.mark.parametrize(
    ("body", "reason", "message"),
    [
        (b'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>http://x/</loc>',
         "malformed", "is not well-formed XML"),
        (rss("Wire", [Item("A story", "http://127.0.0.1/a.html")]), "not_a_sitemap",
         "its root element is <rss>, not <urlset> or <sitemapindex>"),
        (b"  \n", "empty", "is empty"),
        (BILLION_LAUGHS, "entities_declared", "declares XML entities or an internal DTD; refused"),
        (XXE, "entities_declared", "declares XML entities"),
    ],
    ids=["malformed", "a feed", "empty", "billion laughs", "external entity"],
)
def test_a_sitemap_that_is_not_one_raises_a_clear_error(body: bytes, reason: str, message: str) -> None:
    with pytest.raises(SitemapError, match=message) as raised:
        backfill.parse_sitemap(body, "http://127.0.0.1/sitemap.xml", max_bytes=1_000_000)
    assert raised.value.reason == reason
    assert "http://127.0.0.1/sitemap.xml" in str(raised.value)


def test_a_url_list_skips_blanks_and_comments_and_names_the_line_of_a_bad_url(tmp_path: Path) -> None:
    good = tmp_path / "urls.txt"
    good.write_text(
        "\ufeff# October's coverage\nhttp://127.0.0.1/a.html\n\n   \n  http://127.0.0.1/b.html  \n# done\n",
        encoding="utf-8",
    )
    assert backfill.read_url_list(good) == ["http://127.0.0.1/a.html", "http://127.0.0.1/b.html"]

    bad = tmp_path / "bad.txt"
    bad.write_text("http://127.0.0.1/a.html\n\nftp://127.0.0.1/b.html\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.txt, line 3: not an http\(s\) URL: 'ftp://127\.0\.0\.1/b\.html'"):
        backfill.read_url_list(bad)
    with pytest.raises(InputError, match="cannot read"):
        backfill.read_url_list(tmp_path / "missing.txt")


# Discovery -------------------------------------------------------------------------------------


@pytest.mark.usefixtures("allow_loopback")
def test_a_news_sitemap_becomes_pending_articles_once(engine: Engine, http_server: LoopbackServer) -> None:
    http_server.add("/sitemap-news.xml", news_sitemap([
        (http_server.url("/news/raid.html"), "2026-10-05T09:30:00+03:00", "Four suspects held after desert raid"),
        (http_server.url("/news/talks.html?utm_source=sitemap"), "2026-10-06", "Border talks"),
        (http_server.url("/news/talks.html#top"), "2026-10-06", "Border talks"),
        (http_server.url("/news/undated.html"), None, None),
    ]), content_type="application/xml")
    source = http_server.url("/sitemap-news.xml")

    report = backfill.discover(engine, settings(), source, None, None)

    assert (report.sitemaps_read, report.urls_seen, report.new, report.already_known) == (1, 4, 3, 0)
    assert report.undated_kept == 1 and report.skipped == {"listed_twice": 1}
    assert "1 without a date kept (no date range given)" in report.as_log_line()
    raid, talks, undated = articles(engine)
    assert raid.canonical_url == http_server.url("/news/raid.html")
    assert raid.extraction_status == ExtractionStatus.PENDING and raid.feed_id is None
    assert raid.published_at == datetime(2026, 10, 5, 6, 30, tzinfo=UTC)
    assert raid.date_source == DateSource.FEED and raid.story_at == raid.published_at
    assert raid.title == "Four suspects held after desert raid"
    assert talks.canonical_url == http_server.url("/news/talks.html")
    assert talks.published_at == datetime(2026, 10, 6, tzinfo=UTC)  # the day's midnight in UTC
    assert undated.published_at is None and undated.date_source is None

    again = backfill.discover(engine, settings(), source, None, None)

    assert (again.new, again.already_known) == (0, 3)
    assert len(articles(engine)) == 3


@pytest.mark.usefixtures("allow_loopback")
def test_a_sitemap_index_of_a_plain_and_a_gzipped_sitemap(engine: Engine, http_server: LoopbackServer) -> None:
    http_server.add("/sitemap-1.xml", urlset([
        (http_server.url("/news/a.html"), "2026-10-02T08:00:00Z"),
        (http_server.url("/news/b.html"), "2026-10-03T08:00:00Z"),
    ]), content_type="application/xml", gzip=True)  # gzip as a content-coding, decoded by the Fetcher
    # A .xml.gz file as such: gzip bytes, no Content-Encoding.
    http_server.add("/sitemap-2.xml.gz", gzip.compress(urlset([
        (http_server.url("/news/c.html"), "2026-10-04T08:00:00Z"),
        (http_server.url("/news/a.html"), "2026-10-02T08:00:00Z"),
    ])), content_type="application/gzip")
    http_server.add("/sitemap-index.xml", sitemap_index([
        (http_server.url("/sitemap-1.xml"), "2026-10-31"),
        (http_server.url("/sitemap-2.xml.gz"), "2026-10-30"),
        (http_server.url("/sitemap-index.xml"), None),  # listing itself is not a loop
    ]), content_type="application/xml")

    report = backfill.discover(engine, settings(), http_server.url("/sitemap-index.xml"), None, None)

    assert (report.sitemaps_read, report.urls_seen, report.new) == (3, 4, 3)
    assert report.skipped == {"listed_twice": 1} and report.failures == []
    assert sorted(a.canonical_url for a in articles(engine)) == [
        http_server.url(f"/news/{name}.html") for name in "abc"
    ]
    assert len(http_server.requests_for("/sitemap-index.xml")) == 1


@pytest.mark.usefixtures("allow_loopback")
def test_a_file_of_urls_is_discovered_undated(engine: Engine, http_server: LoopbackServer, tmp_path: Path) -> None:
    urls = tmp_path / "october.txt"
    urls.write_text(f"# from the analyst\n{http_server.url('/news/a.html')}\n\n{http_server.url('/news/b.html')}\n")

    report = backfill.discover(engine, settings(), str(urls), None, None)

    assert (report.urls_seen, report.new, report.undated_kept, report.sitemaps_read) == (2, 2, 2, 0)
    assert http_server.requests == []  # discovery of a list fetches nothing
    ranged = backfill.discover(engine, settings(), str(urls), date(2026, 10, 1), date(2026, 10, 31))
    assert (ranged.new, ranged.undated_skipped) == (0, 2)
    assert "2 without a date skipped (a date range was given)" in ranged.as_log_line()
    with pytest.raises(InputError, match="neither an http"):
        backfill.discover(engine, settings(), str(tmp_path / "nowhere.txt"), None, None)


@pytest.mark.usefixtures("allow_loopback")
def test_the_date_range_is_read_in_marsad_timezone_near_midnight(
    engine: Engine, http_server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARSAD_TIMEZONE", "Asia/Baghdad")  # UTC+3 all year
    reset_settings()
    http_server.add("/sitemap.xml", news_sitemap([
        (http_server.url("/sep-30-late.html"), "2026-09-30T23:30:00+03:00", None),  # Sep 30 in Baghdad
        (http_server.url("/oct-1-early.html"), "2026-09-30T21:30:00Z", None),  # 00:30 Oct 1 in Baghdad
        (http_server.url("/oct-31-late.html"), "2026-10-31T20:30:00Z", None),  # 23:30 Oct 31 in Baghdad
        (http_server.url("/nov-1-early.html"), "2026-10-31T21:30:00Z", None),  # 00:30 Nov 1 in Baghdad
        (http_server.url("/oct-15-day.html"), "2026-10-15", None),  # a bare day is that day
        (http_server.url("/undated.html"), None, None),
    ]))

    report = backfill.discover(
        engine, settings(), http_server.url("/sitemap.xml"), date(2026, 10, 1), date(2026, 10, 31)
    )

    assert (report.urls_seen, report.new, report.out_of_range, report.undated_skipped) == (6, 3, 2, 1)
    stored = {a.canonical_url.rsplit("/", 1)[1]: a for a in articles(engine)}
    assert set(stored) == {"oct-1-early.html", "oct-31-late.html", "oct-15-day.html"}
    # A bare day is stored as its midnight in MARSAD_TIMEZONE, so it counts on that day.
    assert stored["oct-15-day.html"].published_at == datetime(2026, 10, 14, 21, 0, tzinfo=UTC)
    only_since = backfill.discover(engine, settings(), http_server.url("/sitemap.xml"), date(2026, 11, 1), None)
    assert (only_since.new, only_since.out_of_range) == (1, 4)
    with pytest.raises(InputError, match=r"starts \(2026-10-31\) after it ends \(2026-10-01\)"):
        backfill.discover(
            engine, settings(), http_server.url("/sitemap.xml"), date(2026, 10, 31), date(2026, 10, 1)
        )


@pytest.mark.usefixtures("allow_loopback")
def test_nothing_the_ingest_stored_is_stored_twice(engine: Engine, http_server: LoopbackServer) -> None:
    http_server.add("/news/cell.html", article_page("Four suspects held after desert raid", ENGLISH_PARAGRAPHS))
    http_server.add("/feed.xml", rss("Frontier Wire", [
        Item("Four suspects held after desert raid", http_server.url("/news/cell.html"), "fw-1", "Summary."),
    ]), content_type="application/rss+xml")
    with session_scope(engine) as session:
        add_feeds(session, [FeedSpec(url=http_server.url("/feed.xml"))])
    run_id = stages.open_run(engine)
    stages.record_feeds(engine, settings(), run_id, stages.parse_feeds(stages.poll_feeds(engine, settings())))
    (from_feed,) = articles(engine)
    http_server.add("/sitemap.xml", news_sitemap([
        (http_server.url("/news/cell.html?utm_source=sitemap&utm_medium=xml"), "2026-11-09T09:00:00Z",
         "Other title"),
        (http_server.url("/news/border.html"), "2026-11-09T10:00:00Z", "Border talks"),
    ]))

    report = backfill.discover(engine, settings(), http_server.url("/sitemap.xml"), None, None)

    assert (report.new, report.already_known) == (1, 1)
    kept, added = articles(engine)
    # The ingest's row is left as the feed made it.
    assert (kept.id, kept.feed_id, kept.title, kept.guid) == (
        from_feed.id, from_feed.feed_id, "Four suspects held after desert raid", "fw-1"
    )
    assert added.canonical_url == http_server.url("/news/border.html") and added.feed_id is None


@pytest.mark.usefixtures("allow_loopback")
def test_a_sitemap_on_a_refused_address_is_not_fetched(engine: Engine) -> None:
    with LoopbackServer("127.0.0.2") as refused:  # loopback, and not in MARSAD_ALLOW_HOSTS
        refused.add("/sitemap.xml", urlset([(refused.url("/a.html"), None)]))
        source = refused.url("/sitemap.xml")

        with pytest.raises(BlockedAddressError) as raised:
            backfill.discover(engine, settings(), source, None, None)

        assert refused.requests == []
    message = str(raised.value)
    assert message.startswith(f"cannot read the sitemap {source}: refusing 127.0.0.2: loopback address")
    assert "MARSAD_ALLOW_HOSTS" in message
    assert articles(engine) == []


@pytest.mark.usefixtures("allow_loopback")
def test_a_bad_child_sitemap_is_reported_and_the_others_are_read(
    engine: Engine, http_server: LoopbackServer
) -> None:
    with LoopbackServer("127.0.0.2") as refused:
        http_server.add("/good.xml", urlset([(http_server.url("/news/a.html"), "2026-10-02")]))
        http_server.add("/laughs.xml", BILLION_LAUGHS)
        http_server.add("/index.xml", sitemap_index([
            (http_server.url("/good.xml"), None),
            (http_server.url("/laughs.xml"), None),
            (http_server.url("/missing.xml"), None),
            (refused_url := refused.url("/sitemap.xml"), None),
        ]))

        report = backfill.discover(engine, settings(), http_server.url("/index.xml"), None, None)

        assert refused.requests == []
    assert (report.sitemaps_read, report.new) == (2, 1)
    reasons = dict(report.failures)
    assert "declares XML entities" in reasons[http_server.url("/laughs.xml")]
    assert "HTTP 404" in reasons[http_server.url("/missing.xml")]
    assert "refusing 127.0.0.2" in reasons[refused_url]
    assert "3 sitemaps failed" in report.as_log_line()


@pytest.mark.usefixtures("allow_loopback")
def test_a_malformed_or_hostile_root_sitemap_stops_discovery_with_a_clear_error(
    engine: Engine, http_server: LoopbackServer
) -> None:
    http_server.add("/broken.xml", b"<urlset><url><loc>http://127.0.0.1/a.html</loc></url>")
    http_server.add("/laughs.xml", BILLION_LAUGHS)

    with pytest.raises(SitemapError, match=r"the sitemap http://127\.0\.0\.1:\d+/broken\.xml is not well-formed"):
        backfill.discover(engine, settings(), http_server.url("/broken.xml"), None, None)
    with pytest.raises(SitemapError, match="declares XML entities or an internal DTD; refused"):
        backfill.discover(engine, settings(), http_server.url("/laughs.xml"), None, None)
    assert articles(engine) == []


@pytest.mark.usefixtures("allow_loopback")
def test_indexes_are_followed_three_deep_newest_first_within_the_limit(
    engine: Engine, http_server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # index-0 → index-1 → index-2 → index-3 (depth 3, read) → index-4 (too deep)
    for level in range(4):
        http_server.add(f"/index-{level}.xml", sitemap_index([
            (http_server.url(f"/index-{level + 1}.xml"), None),
            (http_server.url(f"/pages-{level}.xml"), None),
        ]))
        http_server.add(f"/pages-{level}.xml", urlset([(http_server.url(f"/news/{level}.html"), None)]))

    deep = backfill.discover(engine, settings(), http_server.url("/index-0.xml"), None, None)

    assert deep.new == 3  # pages-0, pages-1 and pages-2; pages-3 would be depth 4
    assert sorted(deep.failures) == [
        (http_server.url("/index-4.xml"), "not read: sitemap indexes nested deeper than 3"),
        (http_server.url("/pages-3.xml"), "not read: sitemap indexes nested deeper than 3"),
    ]
    assert http_server.requests_for("/index-4.xml") == []

    monkeypatch.setattr(backfill, "MAX_CHILD_SITEMAPS", 2)
    months = {"2026-08": "2026-08-31", "2026-09": "2026-09-30", "2026-10": "2026-10-31", "2026-11": "2026-11-20"}
    for month, lastmod in months.items():
        http_server.add(f"/{month}.xml", urlset([(http_server.url(f"/{month}/story.html"), lastmod)]))
    http_server.add("/monthly.xml", sitemap_index([(http_server.url(f"/{m}.xml"), d) for m, d in months.items()]))

    limited = backfill.discover(engine, settings(), http_server.url("/monthly.xml"), date(2026, 9, 1), None)

    # August's sitemap was last changed before the range: it cannot list a story in it.
    assert limited.sitemaps_out_of_range == 1
    assert limited.sitemaps_read == 3  # the index, then the two most recent months
    assert http_server.requests_for("/2026-09.xml") == []
    assert limited.failures == [
        (http_server.url("/monthly.xml"), "1 sitemaps not read: at most 2 are read per backfill")
    ]


# Politeness ------------------------------------------------------------------------------------


def test_the_fetcher_spaces_requests_to_one_host_and_only_when_asked(timed_server: TimedServer) -> None:
    for index in range(4):
        timed_server.add(f"/spaced/{index}.html", "page")
        timed_server.add(f"/free/{index}.html", "page")

    async def fetch_all(prefix: str, spacing: HostSpacing | None) -> None:
        async with Fetcher(allow_hosts=["127.0.0.1"], per_host=4, host_spacing=spacing) as fetcher:
            urls = [timed_server.url(f"{prefix}/{i}.html") for i in range(4)]
            results = await asyncio.gather(*(fetcher.fetch(url) for url in urls))
        assert all(result.ok for result in results)

    asyncio.run(fetch_all("/free", None))
    asyncio.run(fetch_all("/spaced", HostSpacing(0.4)))

    free = timed_server.times_for("/free/")
    assert max(free) - min(free) < 0.3  # the default is unchanged: no pause
    spaced = sorted(timed_server.times_for("/spaced/"))
    gaps = [later - earlier for earlier, later in pairwise(spaced)]
    # Measured where the server receives them: a slow first connection can shave off a little.
    assert min(gaps) >= 0.3, gaps


def test_the_spacing_is_per_host_and_holds_across_batches(
    timed_server: TimedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARSAD_ALLOW_HOSTS", "127.0.0.1,127.0.0.3")
    monkeypatch.setenv("MARSAD_BACKFILL_HOST_INTERVAL", "0.4")
    reset_settings()
    with TimedServer("127.0.0.3") as other:
        pending = []
        for index, server in enumerate([timed_server, other, timed_server, other]):
            server.add(f"/news/{index}.html", "page")
            pending.append(_pending(index, server.url(f"/news/{index}.html")))
        spacing = HostSpacing(settings().backfill_host_interval)

        first = stages.fetch_pages(settings(), pending[:2], spacing)
        second = stages.fetch_pages(settings(), pending[2:], spacing)

        other_times = other.times_for("/news/")
    assert all(item.result.ok for item in first + second)
    mine = timed_server.times_for("/news/")
    # Each host waited for its own previous request, across the two batches (two Fetchers)...
    assert mine[1] - mine[0] >= 0.3 and other_times[1] - other_times[0] >= 0.3
    # ...and not for the other host's.
    assert abs(other_times[0] - mine[0]) < 0.3


def _pending(index: int, url: str) -> PendingArticle:
    return PendingArticle(
        id=index, url=url, canonical_url=url, title=None, summary=None, author=None, published_at=None,
        date_source=None, discovered_at=datetime.now(UTC), fetch_attempts=0, feed_language=None, feed_name=None,
    )


def test_the_setting_refuses_a_negative_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().backfill_host_interval == 0  # this module's autouse fixture
    monkeypatch.delenv("MARSAD_BACKFILL_HOST_INTERVAL")
    assert Settings().backfill_host_interval == 1.0
    monkeypatch.setenv("MARSAD_BACKFILL_HOST_INTERVAL", "-1")
    with pytest.raises(ValueError, match="backfill_host_interval"):
        Settings()


# The page loop and the flow --------------------------------------------------------------------


@pytest.mark.usefixtures("allow_loopback", "prefect_harness")
def test_an_interrupted_backfill_is_resumed_by_running_it_again(
    engine: Engine, http_server: LoopbackServer, pool: ExtractorPool
) -> None:
    from flows.backfill import backfill as backfill_flow

    urls = serve_pages(http_server, 5)
    http_server.add("/sitemap.xml", urlset([(url, "2026-10-10T12:00:00Z") for url in urls]))
    source = http_server.url("/sitemap.xml")
    # The first run: discovery, then one batch of two pages, then it stops (a crash, Ctrl-C).
    backfill.discover(engine, settings(), source, date(2026, 10, 1), date(2026, 10, 31))
    assert run_pages(engine, pool, limit=2, batches=1) == 2
    statuses = [a.extraction_status for a in articles(engine)]
    assert statuses.count(ExtractionStatus.OK) == 2 and statuses.count(ExtractionStatus.PENDING) == 3

    summary = backfill_flow(source=source, since=date(2026, 10, 1), until=date(2026, 10, 31))

    assert (summary.discovery.new, summary.discovery.already_known) == (0, 5)
    assert summary.pages_stored == 3  # exactly the rest
    assert all(a.extraction_status == ExtractionStatus.OK for a in articles(engine))
    assert [len(http_server.requests_for(f"/news/story-{i}.html")) for i in range(5)] == [1] * 5


@pytest.mark.usefixtures("allow_loopback", "prefect_harness")
def test_the_backfill_flow_end_to_end(
    engine: Engine, timed_server: TimedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.backfill import backfill as backfill_flow

    monkeypatch.setenv("MARSAD_BACKFILL_HOST_INTERVAL", "0.3")
    monkeypatch.setenv("MARSAD_PAGE_BATCH", "2")  # two batches: the spacing holds between them
    reset_settings()
    server = timed_server
    server.add("/news/raid.html", article_page("Four suspects held after desert raid", ENGLISH_PARAGRAPHS))
    server.add("/news/border.html", article_page("اتفاق أمني بين العراق والأردن", ARABIC_PARAGRAPHS, lang="ar"))
    server.add("/news/cell.html", article_page("Cell dismantled near Mayadin", ENGLISH_PARAGRAPHS[1:]))
    server.add("/sitemap-news.xml", news_sitemap([
        (server.url("/news/raid.html"), "2026-10-20T09:00:00Z", "Four suspects held after desert raid"),
        (server.url("/news/border.html"), "2026-10-21T09:00:00+03:00", None),
        (server.url("/news/cell.html"), "2026-10-22", None),
        (server.url("/news/old.html"), "2026-09-01T09:00:00Z", "Out of range"),
    ]), content_type="application/xml")

    summary = backfill_flow(
        source=server.url("/sitemap-news.xml"), since=date(2026, 10, 1), until=date(2026, 10, 31)
    )

    assert (summary.discovery.new, summary.discovery.out_of_range, summary.pages_stored) == (3, 1, 3)
    assert summary.failures == {}
    line = summary.as_log_line()
    assert line.startswith(f"backfill of {server.url('/sitemap-news.xml')} 2026-10-01..2026-10-31: ")
    assert "1 sitemaps read, 4 URLs seen, 3 new, 0 already known, 1 out of range; 3 pages stored" in line
    stored = {a.canonical_url.rsplit("/", 1)[1]: a for a in articles(engine)}
    raid, border = stored["raid.html"], stored["border.html"]
    assert raid.extraction_status == ExtractionStatus.OK and ENGLISH_PARAGRAPHS[0] in raid.text
    assert raid.published_at == datetime(2026, 10, 20, 9, 0, tzinfo=UTC)  # the sitemap's, kept
    assert border.language == "ar" and "اتفاق أمني" in (border.title or "")  # the page's title
    with session_scope(engine) as session:
        topics = set(session.execute(select(ArticleTag.article_id, ArticleTag.topic)).tuples())
        assert session.scalar(select(func.count()).select_from(Article)) == 3
    assert (raid.id, "isis") in topics and (border.id, "regional_cooperation") in topics
    # Every request to the site, sitemap and pages, one pause apart.
    arrivals = sorted(server.times_for("/"))
    assert len(arrivals) == 4
    gaps = [later - earlier for earlier, later in pairwise(arrivals)]
    assert min(gaps) >= 0.22, gaps  # 0.3 s, less what a slow first connection shaves off


@pytest.mark.usefixtures("allow_loopback")
def test_the_ingest_leaves_backfilled_pages_to_the_backfill(engine: Engine, http_server: LoopbackServer, tmp_path: Path) -> None:
    """Only a backfill fetches what it discovered, so its per-host pause holds even while a
    scheduled ingest runs; and a backfill does not take the feeds' pages either."""
    http_server.add("/feed.xml", rss("Wire", [Item("From the feed", http_server.url("/feed-story.html"), "g1")]),
                    content_type="application/rss+xml")
    with session_scope(engine) as session:
        add_feeds(session, [FeedSpec(http_server.url("/feed.xml"))])
    run_id = stages.open_run(engine)
    stages.record_feeds(engine, settings(), run_id, stages.parse_feeds(stages.poll_feeds(engine, settings())))
    urls = tmp_path / "urls.txt"
    urls.write_text(http_server.url("/archive-story.html") + "\n", encoding="utf-8")
    backfill.discover(engine, settings(), str(urls), None, None)

    assert [p.url for p in stages.claim_pages(engine, settings())] == [http_server.url("/feed-story.html")]
    assert [p.url for p in stages.claim_pages(engine, settings(), backfilled=True)] == [
        http_server.url("/archive-story.html")
    ]
