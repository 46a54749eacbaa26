"""Hostile feeds, end to end: one real ingest run over many bad feeds and a good one.

Every bad feed must end with the run completed, its failure on ``feeds.last_error`` and its
``fetch_events`` row (or, when the feed is kept with a warning, on the event's ``error``), while every
good item is stored exactly once. Servers are real and on loopback; the allowlist is 127.0.0.1 only, so
a server on 127.0.0.2 stands for an internal host and proves a refusal by receiving no request.
"""

from __future__ import annotations

import resource
import socket
import threading
import zlib
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select, update

from loopback import LoopbackServer
from marsad import ingest as stages
from marsad.config import reset_settings
from marsad.db import session_scope
from marsad.errors import BlockedAddressError
from marsad.feeds import FeedSpec
from marsad.fetch import check_url, non_public_reason
from marsad.store import add_feeds
from models import Article, Feed, FetchEvent, IngestRun
from webdata import ENGLISH_PARAGRAPHS, Item, article_page, rss

pytestmark = pytest.mark.usefixtures("prefect_harness", "allow_loopback")

MAX_BYTES = 2 * 1024 * 1024
# ru_maxrss is in KiB on Linux. The gzip bomb alone would inflate to 50 MB if uncapped.
RSS_GROWTH_LIMIT_KIB = 300 * 1024


def set_tight_limits(monkeypatch: pytest.MonkeyPatch, max_bytes: int) -> None:
    """Small limits keep the slow cases fast; feeds fall due at once for a rerun."""
    for name, value in {
        "MARSAD_POLL_MIN_MINUTES": "0.01",
        "MARSAD_FETCH_READ_TIMEOUT": "1",
        "MARSAD_FETCH_CONNECT_TIMEOUT": "2",
        "MARSAD_FETCH_DEADLINE": "3",
        "MARSAD_FETCH_MAX_BYTES": str(max_bytes),
        "MARSAD_FETCH_MAX_REDIRECTS": "3",
    }.items():
        monkeypatch.setenv(name, value)
    reset_settings()


@pytest.fixture(autouse=True)
def _tight_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    set_tight_limits(monkeypatch, MAX_BYTES)


# --- helpers shared with test_page_faults --------------------------------------------------------


def run_ingest() -> stages.RunSummary:
    from flows.ingest import ingest

    return ingest()


def add(engine: Engine, *urls: str) -> None:
    with session_scope(engine) as session:
        add_feeds(session, [FeedSpec(url=url) for url in urls])


def peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def gzip_of_zeros(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = bytes(1024 * 1024)
    return b"".join(compressor.compress(block) for _ in range(size // len(block))) + compressor.flush()


class TruncatingServer:
    """Answers every request with a Content-Length it does not honour, then hangs up."""

    def __init__(self, head: bytes) -> None:
        self._head = head
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen()
        self._socket.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}{path}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:
                continue
            with connection:
                connection.recv(65536)
                connection.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                    b"Content-Length: 500000\r\n\r\n" + self._head
                )

    def __enter__(self) -> TruncatingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()


@pytest.fixture
def outside() -> Iterator[LoopbackServer]:
    """127.0.0.2: reachable, but outside the allowlist, like an internal service."""
    with LoopbackServer("127.0.0.2") as server:
        yield server


# --- the feeds ------------------------------------------------------------------------------------

ARABIC_TITLE = "اشتباكات قرب معبر البوكمال الحدودي"
ARABIC_SUMMARY = "قالت مصادر محلية إن اشتباكات اندلعت ليلا قرب المعبر الحدودي مع العراق."


def good_items(server: LoopbackServer) -> list[Item]:
    return [
        Item("Four suspects held", server.url("/news/held.html"), "good-1", "Four held."),
        Item("Convoy stopped", server.url("/news/convoy.html"), "good-2", "Convoy stopped."),
    ]


def billion_laughs() -> bytes:
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    )
    return (
        f'<?xml version="1.0"?><!DOCTYPE rss [{entities}]>'
        '<rss version="2.0"><channel><title>&lol9;</title></channel></rss>'
    ).encode()


def quadratic_blowup() -> bytes:
    # No nesting, so no entity-depth limit catches it: one 100 KB entity used 10,000 times.
    return (
        f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "{"a" * 100_000}">]>'
        '<rss version="2.0"><channel><title>' + "&a;" * 10_000 + "</title></channel></rss>"
    ).encode()


def with_prolog(prolog: str, body: bytes) -> bytes:
    return body.replace(b'<rss version="2.0">', prolog.encode() + b'<rss version="2.0">', 1)


def serve_hostile_feeds(server: LoopbackServer, outside: LoopbackServer, truncating: TruncatingServer) -> dict[str, str]:
    """Serve every case; returns case name → feed URL."""
    s = server
    urls: dict[str, str] = {}

    def feed(name: str, body: bytes | str, **options: object) -> None:
        options.setdefault("content_type", "application/rss+xml")
        s.add(f"/{name}.xml", body, **options)  # type: ignore[arg-type]
        urls[name] = s.url(f"/{name}.xml")

    # Pages of the kept items: the good ones are real articles, the rest are 404 (summary kept).
    s.add("/news/held.html", article_page("Four suspects held", ENGLISH_PARAGRAPHS))
    s.add("/news/convoy.html", article_page("Convoy stopped", ENGLISH_PARAGRAPHS[::-1]))
    plain = rss("Wire", [Item("Plain", s.url("/p/plain"), "plain-1", "Plain.")])

    feed("good", rss("Good", good_items(s)), etag='"good-v1"')
    # Network and HTTP failures.
    urls["host_down"] = f"http://127.0.0.1:{closed_port()}/feed.xml"
    feed("slow_headers", plain, delay=10)
    feed("drip", plain + b" " * 400, drip=0.05)
    feed("http_500", "oops", status=500, content_type="text/plain")
    feed("http_404", "missing", status=404, content_type="text/plain")
    feed("http_410", "gone", status=410, content_type="text/plain")
    feed("http_429", "slow down", status=429, content_type="text/plain", headers={"Retry-After": "3600"})
    feed("not_modified", rss("Same", [Item("Old news", s.url("/p/old"), "nm-1")]), etag='"nm-v1"')
    s.redirect("/loop-a.xml", "/loop-b.xml")
    s.redirect("/loop-b.xml", "/loop-a.xml")
    urls["redirect_loop"] = s.url("/loop-a.xml")
    s.redirect("/to-file.xml", "file:///etc/passwd")
    urls["redirect_to_file"] = s.url("/to-file.xml")
    feed("gzip_bomb", gzip_of_zeros(50 * 1024 * 1024), headers={"Content-Encoding": "gzip"})
    feed("oversized", plain + b" " * (MAX_BYTES + 1))
    urls["truncated_transfer"] = truncating.url("/feed.xml")
    # Not feeds.
    feed("html_page", article_page("Home", ["Welcome to our site."]), content_type="text/html")
    feed("empty", b"")
    feed("binary", bytes(range(256)) * 64, content_type="application/octet-stream")
    # Entities: refused before any parser expands or fetches them.
    feed("billion_laughs", billion_laughs())
    feed("quadratic", quadratic_blowup())
    feed("external_entity", with_prolog(
        f'<!DOCTYPE rss [<!ENTITY ext SYSTEM "{s.url("/secret.txt")}">'
        '<!ENTITY pw SYSTEM "file:///etc/passwd">]>',
        plain.replace(b"<title>Wire</title>", b"<title>&ext;&pw;</title>"),
    ))
    feed("external_parameter_entity", with_prolog(
        f'<!DOCTYPE rss [<!ENTITY % dtd SYSTEM "{s.url("/evil.dtd")}"> %dtd;]>', plain
    ))
    # Kept, with a warning on the fetch event.
    feed("external_dtd", with_prolog(
        f'<!DOCTYPE rss SYSTEM "{s.url("/evil.dtd")}">',
        rss("Dtd", [Item("Dtd item", s.url("/p/dtd"), "dtd-1")]),
    ))
    malformed = rss("Broken", [
        Item("Before the break", s.url("/p/before"), "mal-1"),
        Item("Also before", s.url("/p/also"), "mal-2"),
    ]).replace(b"</channel></rss>", b"<item><title>Unclosed <b>tag</title><link>")
    feed("malformed", malformed)
    cut = rss("Cut", [Item("Whole item", s.url("/p/whole"), "cut-1"), Item("Cut item", s.url("/p/cut"), "cut-2")])
    feed("truncated_xml", cut[: cut.index(b"<title>Cut item") + 9])
    arabic = rss("العربية", [Item(ARABIC_TITLE, s.url("/p/ar1"), "ar-1", ARABIC_SUMMARY)], language="ar")
    feed("prolog_says_utf8_bytes_cp1256", arabic.decode().encode("cp1256"))
    feed("header_says_cp1256_bytes_utf8", arabic.replace(b"/p/ar1", b"/p/ar2").replace(b"ar-1", b"ar-2"),
         content_type="application/rss+xml; charset=windows-1256")
    feed("control_chars", rss("Ctl", [Item("Title with ESC", s.url("/p/ctl"), "ctl-1", "Summary BEL")])
         .replace(b"ESC", b"\x1b[31mESC").replace(b"BEL", b"\x07BEL\x00NUL").replace(b"<title>Ctl", b"<title>C\x00tl"))
    feed("duplicates", rss("Dup", [
        Item("First", s.url("/p/dup-a"), "same-guid"),
        Item("Same GUID, other link", s.url("/p/dup-b"), "same-guid"),
        Item("No GUID", s.url("/p/noguid"), None),
        Item("No GUID again", s.url("/p/noguid?utm_source=rss"), None),
    ]))
    feed("dates", rss("Dates", [
        Item("Missing date", s.url("/p/d-missing"), "d-1", pub_date=None),
        Item("Garbage date", s.url("/p/d-garbage"), "d-2", pub_date="the day after yesterday"),
        Item("Impossible date", s.url("/p/d-impossible"), "d-3", pub_date="Mon, 99 Foo 2026 99:99:99 +9999"),
        Item("Future date", s.url("/p/d-future"), "d-4", pub_date="Fri, 01 Jan 2100 00:00:00 +0000"),
    ]))
    feed("bad_links", rss("Links", [
        Item("Script", "javascript:alert(document.cookie)", "bl-1"),
        Item("Local file", "file:///etc/passwd", "bl-2"),
        Item("Fine", s.url("/p/fine"), "bl-3"),
    ]))
    # SSRF: the same internal server in every spelling, and through a redirect.
    outside.add("/feed.xml", plain)
    port = outside.port
    urls["ssrf_dotted"] = f"http://127.0.0.2:{port}/feed.xml"
    urls["ssrf_decimal"] = f"http://2130706434:{port}/feed.xml"
    urls["ssrf_hex"] = f"http://0x7f000002:{port}/feed.xml"
    urls["ssrf_ipv6_mapped"] = f"http://[::ffff:127.0.0.2]:{port}/feed.xml"
    s.redirect("/ssrf-redirect.xml", f"http://0x7f000002:{port}/feed.xml")
    urls["ssrf_redirect"] = s.url("/ssrf-redirect.xml")
    return urls


# case → (fetch event status, fetch event reason, text expected in the recorded error)
FAILED = {
    "host_down": ("connect_error", "cannot connect"),
    "slow_headers": ("timeout", "no data from the server"),
    "drip": ("deadline", "deadline"),
    "http_500": ("http_500", "HTTP 500"),
    "http_404": ("http_404", "HTTP 404"),
    "http_410": ("http_410", "HTTP 410"),
    "http_429": ("http_429", "HTTP 429"),
    "redirect_loop": ("too_many_redirects", "more than 3 redirects"),
    "redirect_to_file": ("bad_scheme", "only http and https"),
    "gzip_bomb": ("too_large", f"larger than {MAX_BYTES}"),
    "oversized": ("too_large", f"larger than {MAX_BYTES}"),
    "truncated_transfer": ("protocol_error", "without sending complete message body"),
    "html_page": ("not_a_feed", "not an RSS or Atom feed"),
    "empty": ("empty", "empty"),
    "binary": ("not_a_feed", "not an RSS or Atom feed"),
    "billion_laughs": ("entities_declared", "declares XML entities"),
    "quadratic": ("entities_declared", "declares XML entities"),
    "external_entity": ("entities_declared", "declares XML entities"),
    "external_parameter_entity": ("entities_declared", "declares XML entities"),
    "ssrf_dotted": ("blocked_address", "127.0.0.2"),
    "ssrf_decimal": ("blocked_address", "127.0.0.2"),
    "ssrf_hex": ("blocked_address", "127.0.0.2"),
    "ssrf_ipv6_mapped": ("blocked_address", "127.0.0.2"),
    "ssrf_redirect": ("blocked_address", "127.0.0.2"),
}
# case → text expected in the fetch event's error (None: no warning at all)
KEPT = {
    "good": None,
    "external_dtd": None,
    "malformed": "mismatched tag",
    "truncated_xml": "no element found",
    "prolog_says_utf8_bytes_cp1256": "not UTF-8; read as cp1256",
    "header_says_cp1256_bytes_utf8": "declared windows-1256 but the bytes are UTF-8",
    "control_chars": "not well-formed",
    "duplicates": None,
    "dates": None,
    "bad_links": None,
}
# Every kept item, by canonical path: each must be stored once.
KEPT_PATHS = {
    "/news/held.html", "/news/convoy.html", "/p/dtd", "/p/before", "/p/also", "/p/whole",
    "/p/ar1", "/p/ar2", "/p/ctl", "/p/dup-a", "/p/noguid", "/p/d-missing", "/p/d-garbage",
    "/p/d-impossible", "/p/d-future", "/p/fine",
}


def test_hostile_feeds_are_recorded_and_good_items_kept_once(
    engine: Engine, http_server: LoopbackServer, outside: LoopbackServer
) -> None:
    with TruncatingServer(b"<rss version='2.0'><channel><title>cut") as truncating:
        urls = serve_hostile_feeds(http_server, outside, truncating)
        add(engine, *urls.values())
        with session_scope(engine) as session:  # as if an earlier run had seen this version
            session.execute(update(Feed).where(Feed.url == urls["not_modified"]).values(etag='"nm-v1"'))

        rss_before = peak_rss_kib()
        summary = run_ingest()
        rss_growth = peak_rss_kib() - rss_before

    assert rss_growth < RSS_GROWTH_LIMIT_KIB, f"peak RSS grew by {rss_growth // 1024} MB"
    assert summary.status == "completed"
    assert (summary.feeds_polled, summary.feeds_failed) == (len(urls), len(FAILED))
    assert summary.feeds_ok == len(KEPT) and summary.feeds_unchanged == 1  # the 304

    with session_scope(engine) as session:
        feeds = {f.url: f for f in session.scalars(select(Feed))}
        events = {e.feed_id: e for e in session.scalars(select(FetchEvent))}
        stored = list(session.scalars(select(Article)))
        run = session.scalars(select(IngestRun)).one()
    assert run.status == "completed"
    by_case = {case: (feeds[url], events[feeds[url].id]) for case, url in urls.items()}

    failed = {case: (event.status, event.reason) for case, (feed, event) in by_case.items() if case in FAILED}
    assert failed == {case: ("failed", reason) for case, (reason, _) in FAILED.items()}
    for case, (_reason, text) in FAILED.items():
        feed, event = by_case[case]
        assert feed.last_status == "failed" and feed.error_count == 1, case
        assert text in (feed.last_error or ""), (case, feed.last_error)
        assert event.error == feed.last_error, case
        assert event.items_new == 0, case
    for case, text in KEPT.items():
        feed, event = by_case[case]
        assert (feed.last_status, event.status, event.reason) == ("ok", "ok", None), case
        assert feed.last_error is None and feed.error_count == 0, case
        if text is None:
            assert event.error is None, (case, event.error)
        else:
            assert text in (event.error or ""), (case, event.error)
    nm_feed, nm_event = by_case["not_modified"]
    assert (nm_event.status, nm_event.http_status, nm_feed.last_error) == ("not_modified", 304, None)

    # Backoff, and Retry-After honoured.
    now = stages.utcnow()
    assert by_case["http_429"][0].next_poll_at >= now + timedelta(seconds=3500)
    assert all(by_case[case][0].next_poll_at > now + timedelta(minutes=10) for case in FAILED)

    # Nothing let in: no request reached the internal server, the external DTD or the entities.
    assert outside.requests == []
    assert http_server.requests_for("/evil.dtd") == [] and http_server.requests_for("/secret.txt") == []
    assert len(http_server.requests_for("/ssrf-redirect.xml")) == 1

    # Nothing lost: every good item once, nothing else.
    paths = sorted(a.canonical_url.removeprefix(http_server.base_url) for a in stored)
    assert paths == sorted(KEPT_PATHS)
    articles = {a.canonical_url.removeprefix(http_server.base_url): a for a in stored}
    assert articles["/news/held.html"].extraction_status == "ok"
    assert ENGLISH_PARAGRAPHS[0] in articles["/news/held.html"].text
    assert articles["/p/dup-a"].title == "First"
    for path in ("/p/ar1", "/p/ar2"):  # the wrong declarations were corrected, not trusted
        assert articles[path].title == ARABIC_TITLE and articles[path].text == ARABIC_SUMMARY
    ctl = articles["/p/ctl"]
    assert not any(c in (ctl.title or "") + (ctl.text or "") for c in "\x00\x07\x1b")
    assert "ESC" in ctl.title
    assert not any("\x00" in (f.name or "") + (f.last_error or "") for f in feeds.values())

    # Dates: garbage, impossible and future dates are counted, never stored as the story's date.
    dates_event = by_case["dates"][1]
    assert dates_event.item_failures == {"bad_date": 3}
    for path in ("/p/d-missing", "/p/d-garbage", "/p/d-impossible", "/p/d-future"):
        article = articles[path]
        assert article.date_source == "fetched" and article.published_at <= now, path
    assert by_case["bad_links"][1].item_failures == {"bad_link": 2}
    assert by_case["bad_links"][1].items_seen == 3
    # The second "same-guid" item and the tracking-parameter copy of the GUID-less one are dropped.
    assert by_case["duplicates"][1].items_new == 2

    # A rerun, with the duplicates feed grown by one item, adds exactly that item.
    http_server.add("/duplicates.xml", rss("Dup", [
        Item("First", http_server.url("/p/dup-a"), "same-guid"),
        Item("No GUID", http_server.url("/p/noguid#again"), None),
        Item("New one", http_server.url("/p/dup-new"), "new-guid"),
    ]), content_type="application/rss+xml")
    again = run_ingest()
    assert again.articles_new == 1 and again.feeds_failed == 0
    with session_scope(engine) as session:
        total = len(session.scalars(select(Article)).all())
    assert total == len(KEPT_PATHS) + 1


# --- address policy for addresses the tests must never connect to ---------------------------------


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("10.0.0.1", "private"),
        ("167772161", "private"),  # 10.0.0.1 in decimal
        ("0x0a000001", "private"),
        ("012.0.0.1", "private"),  # octal
        ("[::ffff:10.0.0.1]", "private"),
        ("[::ffff:a00:1]", "private"),
        ("192.168.0.10", "private"),
        ("3232235530", "private"),  # 192.168.0.10
        ("169.254.169.254", "cloud metadata"),
        ("2852039166", "cloud metadata"),  # 169.254.169.254 in decimal
        ("0xa9fea9fe", "cloud metadata"),
        ("[::ffff:a9fe:a9fe]", "cloud metadata"),
        ("[fd00:ec2::254]", "private"),  # AWS's IPv6 metadata address
        ("169.254.10.20", "link-local"),
        ("2852006420", "link-local"),
        ("[fe80::1]", "link-local"),
        ("[::ffff:169.254.10.20]", "link-local"),
        ("127.0.0.2", "loopback"),
        ("2130706434", "loopback"),
        ("0x7f000002", "loopback"),
        ("[::ffff:127.0.0.2]", "loopback"),
    ],
)
def test_internal_addresses_are_refused_by_policy_without_connecting(host: str, kind: str) -> None:
    """check_url runs before any socket exists; with 127.0.0.1 allowed, all of these stay refused."""
    with pytest.raises(BlockedAddressError) as caught:
        check_url(f"http://{host}/feed.xml", allow_hosts=["127.0.0.1"])
    assert kind in str(caught.value)


def test_every_metadata_and_link_local_form_is_non_public() -> None:
    import ipaddress

    for address in ("169.254.169.254", "fd00:ec2::254", "fe80::a9fe:a9fe", "::ffff:169.254.169.254",
                    "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::"):
        assert non_public_reason(ipaddress.ip_address(address)) is not None, address
