"""The bundled sample web (marsad.demo): served on loopback, parsed, and extracted cleanly."""

from __future__ import annotations

import calendar
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import Message
from html.parser import HTMLParser
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import feedparser
import pytest

from marsad.demo.server import SITE_DIR, SampleWeb
from marsad.extract import extract_page

# Items whose link is meant to 404 (the pipeline keeps the feed summary) or to carry tracking.
MISSING_PATH = "/news/2026/03/erbil-isis-financier-arrest.html"
TRACKING_QUERY = "utm_source=rss&utm_medium=feed"
EXPECTED_ITEMS = {"levant-monitor.xml": 4, "al-jisr.xml": 3, "euphrates-post.xml": 3}

# Page chrome that a good extractor drops (site header, share bar, related box, newsletter,
# cookie banner, "Show More", back-to-top, footer), in both languages.
CHROME = [
    "Show More",
    "Related Articles",
    "Back to top",
    "Share on X",
    "Facebook",
    "WhatsApp",
    "newsletter",
    "Newsletter",
    "cookies",
    "Cookie",
    "All rights reserved",
    "All Rights Reserved",
    "©",
    "Read more",
    "Sign up",
    "Accept all",
    "عرض المزيد",
    "مقالات ذات صلة",
    "العودة إلى الأعلى",
    "النشرة البريدية",
    "اشترك في نشرتنا",
    "ملفات تعريف الارتباط",
    "شارك على",
    "فيسبوك",
    "واتساب",
    "جميع الحقوق محفوظة",
]

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only


def fetch(
    url: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
) -> tuple[int, Message, bytes]:
    assert urlsplit(url).hostname == "127.0.0.1", url
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with _OPENER.open(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:  # 304 and 404 arrive as HTTPError
        with error:
            return error.code, error.headers, error.read()


def norm(text: str) -> str:
    return " ".join(text.split())


class _PageParts(HTMLParser):
    """Body paragraphs (inside itemprop=articleBody, outside asides) and the chrome's text."""

    VOID = frozenset(
        [
            "area",
            "base",
            "br",
            "col",
            "embed",
            "hr",
            "img",
            "input",
            "link",
            "meta",
            "source",
            "track",
            "wbr",
        ]
    )
    CHROME_TAGS = frozenset({"nav", "footer", "button", "aside", "form"})
    CHROME_HINT = re.compile(r"cookie|share|newsletter|go-to-top|back-to-top|scroll-to-top")

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._stack: list[tuple[str, bool, bool]] = []  # (tag, in body, in chrome)
        self._paragraph: list[str] | None = None
        self.paragraphs: list[str] = []
        self.chrome_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.VOID:
            return
        a = {k: v or "" for k, v in attrs}
        in_body, in_chrome = self._stack[-1][1:] if self._stack else (False, False)
        in_body = in_body or a.get("itemprop") == "articleBody"
        in_chrome = (
            in_chrome
            or tag in self.CHROME_TAGS
            or bool(self.CHROME_HINT.search(a.get("class", "") + " " + a.get("id", "")))
        )
        self._stack.append((tag, in_body, in_chrome))
        if tag == "p" and in_body and not in_chrome:
            self._paragraph = []

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        while self._stack:
            if self._stack.pop()[0] == tag:
                break
        if tag == "p" and self._paragraph is not None:
            self.paragraphs.append(norm("".join(self._paragraph)))
            self._paragraph = None

    def handle_data(self, data: str) -> None:
        if self._paragraph is not None:
            self._paragraph.append(data)
        if self._stack and self._stack[-1][2] and len(data.split()) >= 2:
            self.chrome_text.append(norm(data))


def page_parts(html: str) -> _PageParts:
    parser = _PageParts()
    parser.feed(html)
    parser.close()
    return parser


@pytest.fixture(scope="module")
def web() -> Iterator[SampleWeb]:
    with SampleWeb() as sample_web:
        yield sample_web


@pytest.fixture(scope="module")
def feeds(web: SampleWeb) -> dict[str, feedparser.FeedParserDict]:
    parsed = {}
    for feed in web.feeds():
        status, _, body = fetch(feed["url"])
        assert status == 200
        parsed[feed["url"].rsplit("/", 1)[-1]] = feedparser.parse(body)
    return parsed


def item_links(feeds: dict[str, feedparser.FeedParserDict]) -> list[str]:
    return [entry.link for parsed in feeds.values() for entry in parsed.entries]


def article_urls(feeds: dict[str, feedparser.FeedParserDict]) -> list[str]:
    return [link for link in item_links(feeds) if urlsplit(link).path != MISSING_PATH]


# --- feeds --------------------------------------------------------------------------------------


def test_feed_list_has_three_outlets_with_base_substituted(web: SampleWeb) -> None:
    entries = web.feeds()
    names = [e["name"] for e in entries]
    assert names == ["Levant Monitor", "Al-Jisr (الجسر)", "The Euphrates Post"]
    assert [e["language"] for e in entries] == ["en", "ar", "en"]
    assert all(e["url"].startswith(web.base_url + "/feeds/") for e in entries)
    assert web.base_url.startswith("http://127.0.0.1:")


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("levant-monitor.xml", "application/rss+xml"),
        ("al-jisr.xml", "application/atom+xml"),
        ("euphrates-post.xml", "application/rss+xml"),
    ],
)
def test_feed_is_served_and_parses(web: SampleWeb, name: str, content_type: str) -> None:
    status, headers, body = fetch(f"{web.base_url}/feeds/{name}")
    assert status == 200
    assert headers.get_content_type() == content_type
    assert headers.get_content_charset() == "utf-8"
    assert b"{{BASE}}" not in body

    parsed = feedparser.parse(body)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert len(parsed.entries) == EXPECTED_ITEMS[name]
    for entry in parsed.entries:
        assert entry.link.startswith(web.base_url + "/")
        assert entry.get("id") and entry.title and entry.summary and entry.author
        published = datetime.fromtimestamp(calendar.timegm(entry.published_parsed), UTC)
        assert web.now - timedelta(days=4) < published <= web.now  # recent news, never ahead


def test_arabic_feed_and_pages(web: SampleWeb, feeds: dict[str, feedparser.FeedParserDict]) -> None:
    arabic = feeds["al-jisr.xml"]
    assert arabic.version == "atom10"
    assert arabic.feed.language == "ar"
    for entry in arabic.entries:
        assert re.search("[\u0600-\u06ff]", entry.title)
        status, _, body = fetch(entry.link)
        assert status == 200
        html = body.decode("utf-8")
        assert '<html lang="ar" dir="rtl">' in html
        assert norm(entry.title) in norm(extract_page(body, entry.link).title or "")


def test_special_items(web: SampleWeb, feeds: dict[str, feedparser.FeedParserDict]) -> None:
    links = item_links(feeds)
    tracked = [link for link in links if TRACKING_QUERY in link]
    assert len(tracked) == 1
    missing = [link for link in links if urlsplit(link).path == MISSING_PATH]
    assert len(missing) == 1
    # The pipeline keeps the summary of the item whose page 404s, so it must carry the story.
    entry = next(e for e in feeds["euphrates-post.xml"].entries if e.link == missing[0])
    assert len(entry.summary.split()) >= 40


# --- pages --------------------------------------------------------------------------------------


def test_every_item_page_is_served_except_the_missing_one(
    web: SampleWeb, feeds: dict[str, feedparser.FeedParserDict]
) -> None:
    for link in item_links(feeds):
        status, headers, body = fetch(link)
        if urlsplit(link).path == MISSING_PATH:
            assert status == 404
            continue
        assert status == 200, link
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        html = body.decode("utf-8")
        assert "{{BASE}}" not in html
        canonical = re.search(r'<link rel="canonical" href="([^"]+)">', html)
        assert canonical and canonical.group(1) == link.split("?")[0]
        for needle in ('property="og:site_name"', 'name="author"', "<time "):
            assert needle in html, (link, needle)
        iso = r"\d{4}-\d\d-\d\dT\d\d:\d\d:00\+03:00"
        assert re.search(f'property="article:published_time" content="{iso}"', html), link
        assert re.search(f'<time [^>]*datetime="{iso}"', html), link


def test_unknown_paths_and_traversal_are_404(web: SampleWeb) -> None:
    for path in (
        "/nope.html",
        "/feeds/",
        "/feeds",
        "/../server.py",
        "/%2e%2e/feeds.yaml",
        "/articles/../../server.py",
        "/.hidden",
    ):
        status, _, _ = fetch(web.base_url + path)
        assert status == 404, path


def test_no_placeholder_left_anywhere(web: SampleWeb) -> None:
    files = [p for p in SITE_DIR.rglob("*") if p.is_file()]
    assert len(files) >= 12
    for path in files:
        status, _, body = fetch(f"{web.base_url}/{path.relative_to(SITE_DIR).as_posix()}")
        assert status == 200
        assert b"{{BASE}}" not in body and b"{{" not in body, path


# --- conditional requests -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/feeds/levant-monitor.xml", "/articles/amman-joint-centre.html"])
def test_conditional_requests_get_304(web: SampleWeb, path: str) -> None:
    url = web.base_url + path
    status, headers, body = fetch(url)
    assert status == 200 and body
    etag, last_modified = headers["ETag"], headers["Last-Modified"]
    assert etag.startswith('"') and last_modified.endswith("GMT")

    status, headers, body = fetch(url, {"If-None-Match": etag})
    assert (status, body) == (304, b"")
    assert headers["ETag"] == etag

    status, _, body = fetch(url, {"If-None-Match": f'"other", W/{etag}'})
    assert (status, body) == (304, b"")

    status, _, body = fetch(url, {"If-Modified-Since": last_modified})
    assert (status, body) == (304, b"")

    status, _, body = fetch(url, {"If-None-Match": '"stale"'})
    assert status == 200 and body

    status, _, body = fetch(url, {"If-Modified-Since": "Thu, 01 Jan 2015 00:00:00 GMT"})
    assert status == 200 and body


def test_head_sends_headers_only(web: SampleWeb) -> None:
    status, headers, body = fetch(web.base_url + "/feeds/al-jisr.xml", method="HEAD")
    assert status == 200 and body == b""
    assert int(headers["Content-Length"]) > 0


def test_etag_is_stable_within_a_server(web: SampleWeb) -> None:
    url = web.base_url + "/feeds/euphrates-post.xml"
    assert fetch(url)[1]["ETag"] == fetch(url)[1]["ETag"]


# --- extraction ---------------------------------------------------------------------------------


def test_extraction_keeps_the_body_and_drops_the_chrome(
    feeds: dict[str, feedparser.FeedParserDict],
) -> None:
    urls = article_urls(feeds)
    assert len(urls) == 9
    for url in urls:
        _, _, body = fetch(url)
        html = body.decode("utf-8")
        parts = page_parts(html)
        assert len(parts.paragraphs) >= 6, url
        words = sum(len(p.split()) for p in parts.paragraphs)
        assert words >= 190, (url, words)  # Arabic counts fewer, longer words

        page = extract_page(body, url)
        assert page.status == "ok", (url, page.error)
        text = norm(page.text)
        for paragraph in parts.paragraphs:
            assert paragraph in text, (url, paragraph[:60])
        for chrome in CHROME + parts.chrome_text:
            assert chrome not in text, (url, chrome)


def test_extraction_reads_the_page_metadata(feeds: dict[str, feedparser.FeedParserDict]) -> None:
    for parsed in feeds.values():
        for entry in parsed.entries:
            if urlsplit(entry.link).path == MISSING_PATH:
                continue
            _, _, body = fetch(entry.link)
            html = body.decode("utf-8")
            published = re.search(r'<time [^>]*datetime="([^"]+)"', html).group(1)
            page = extract_page(body, entry.link)
            assert page.title == entry.title
            assert page.author == entry.author
            assert page.site_name in {"Levant Monitor", "الجسر", "The Euphrates Post"}
            assert page.published_at is not None, entry.link
            assert page.published_at.date().isoformat() == published[:10], entry.link
            assert page.language == ("ar" if "/ar/" in entry.link else "en")


# --- dates --------------------------------------------------------------------------------------


def _feed_dates(web: SampleWeb) -> dict[str, datetime]:
    out = {}
    for feed in web.feeds():
        for entry in feedparser.parse(fetch(feed["url"])[2]).entries:
            out[entry.link] = datetime.fromtimestamp(calendar.timegm(entry.published_parsed), UTC)
    return out


@pytest.mark.parametrize("clock", ["00:05", "09:30", "23:50"])
def test_the_sample_news_is_dated_from_the_day_the_server_starts(clock: str) -> None:
    """Whatever the hour, the demo's news ran on the days before and on the day the server
    started (in the analysts' zone), never later than its start, so a digest built right after
    the demo's ingest has a trends strip of its own day."""
    zone = ZoneInfo("Asia/Baghdad")
    hour, minute = map(int, clock.split(":"))
    now = datetime(2026, 11, 20, hour, minute, tzinfo=zone).astimezone(UTC)
    with SampleWeb(now=now, tz=zone) as web:
        dates = _feed_dates(web)
        days = sorted({d.astimezone(zone).date() for d in dates.values()})
        assert max(dates.values()) <= now
        assert days[-1] == now.astimezone(zone).date() and days[0] >= days[-1] - timedelta(days=3)
        # Most items ran on the day itself; the page and the feed agree on each date.
        assert sum(d.astimezone(zone).date() == days[-1] for d in dates.values()) >= 5
        for link, published in dates.items():
            if urlsplit(link).path == MISSING_PATH:
                continue
            page = extract_page(fetch(link)[2], link)
            assert page.published_at == published, link
            html = fetch(link)[2].decode("utf-8")
            if "/ar/" in link:  # the visible Arabic date names the same day
                local = published.astimezone(ZoneInfo("Asia/Baghdad"))
                assert re.search(rf"<time [^>]*>[^<]* {local.day} [^<]* {local.year} - {local:%H:%M}</time>", html), link


def test_news_from_days_before_keeps_its_time_of_day() -> None:
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    with SampleWeb(now=now, tz=ZoneInfo("UTC")) as web:
        earlier = [d for d in _feed_dates(web).values() if d.date() < now.date()]
    assert earlier and all(d.minute in (5, 20) for d in earlier)  # 13:05 and 14:20, as written
    assert sorted(d.strftime("%H:%M") for d in earlier) == ["13:05", "14:20"]
