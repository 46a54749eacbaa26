"""Hostile article pages, end to end: one feed whose items link to every kind of bad page.

Each article must be stored once, keep its feed summary when its page gives nothing better, and say
why on ``articles.extraction_status`` and ``extraction_error``. Internal addresses (127.0.0.2 in any
spelling, directly or through a redirect) must receive no request.
"""

from __future__ import annotations

import gzip
import multiprocessing
import resource
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select

from loopback import LoopbackServer
from marsad import ingest as stages
from marsad.db import session_scope
from models import Article
from test_feed_faults import (  # noqa: F401 - outside is a fixture
    RSS_GROWTH_LIMIT_KIB,
    TruncatingServer,
    add,
    closed_port,
    gzip_of_zeros,
    outside,
    peak_rss_kib,
    run_ingest,
    set_tight_limits,
)
from webdata import ARABIC_PARAGRAPHS, ENGLISH_PARAGRAPHS, Item, article_page, rss

pytestmark = pytest.mark.usefixtures("prefect_harness", "allow_loopback")

MAX_BYTES = 8 * 1024 * 1024  # fetch cap; the extractor's own cap stays at its 5 MB default
SUMMARY = "The feed's own summary of the story."


@pytest.fixture(autouse=True)
def _tight_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    set_tight_limits(monkeypatch, MAX_BYTES)


def nested_tags(count: int = 1_000_000) -> bytes:
    return b"<html><body>" + b"<div>" * count + b"deep text" + b"</body></html>"


def serve_hostile_pages(s: LoopbackServer, outside: LoopbackServer, truncating: TruncatingServer) -> dict[str, str]:
    urls: dict[str, str] = {}

    def page(name: str, body: bytes | str, **options: object) -> None:
        s.add(f"/p/{name}.html", body, **options)  # type: ignore[arg-type]
        urls[name] = s.url(f"/p/{name}.html")

    page("good", article_page("Four suspects held", ENGLISH_PARAGRAPHS))
    urls["host_down"] = f"http://127.0.0.1:{closed_port()}/story.html"
    page("slow_headers", "late", delay=10)
    page("drip", b"<p>" + b"x" * 400, drip=0.05)
    page("http_500", "oops", status=500)
    page("http_404", "missing", status=404)
    page("http_410", "gone", status=410)
    page("http_429", "slow down", status=429, headers={"Retry-After": "7200"})
    page("unsolicited_304", "", status=304)
    s.redirect("/p/loop-a.html", "/p/loop-b.html")
    s.redirect("/p/loop-b.html", "/p/loop-a.html")
    urls["redirect_loop"] = s.url("/p/loop-a.html")
    s.redirect("/p/to-script.html", "javascript:alert(1)")
    urls["redirect_to_javascript"] = s.url("/p/to-script.html")
    page("gzip_bomb", gzip_of_zeros(50 * 1024 * 1024), headers={"Content-Encoding": "gzip"})
    fifty_mb = article_page("Huge", ENGLISH_PARAGRAPHS * (50 * 1024 * 1024 // len("".join(ENGLISH_PARAGRAPHS)) + 1))
    page("fifty_mb", fifty_mb)
    page("fifty_mb_gzip", gzip.compress(fifty_mb, compresslevel=6), headers={"Content-Encoding": "gzip"})
    page("over_extractor_cap", article_page("Big", ENGLISH_PARAGRAPHS * 8000))  # ~6 MB
    urls["truncated_transfer"] = truncating.url("/story.html")
    page("empty", b"")
    page("binary", bytes(range(256)) * 64, content_type="application/octet-stream")
    page("compressed_unlabelled", gzip.compress(article_page("Zipped", ENGLISH_PARAGRAPHS)))
    page("million_nested_tags", nested_tags())
    arabic = article_page("اشتباكات قرب المعبر", ARABIC_PARAGRAPHS, lang="ar")
    page("meta_says_utf8_bytes_cp1256", arabic.decode().encode("cp1256"), content_type="text/html")
    page("header_says_cp1256_bytes_utf8", arabic.replace(b'<meta charset="utf-8">', b""),
         content_type="text/html; charset=windows-1256")
    # Only the HTTP header names the legacy charset the bytes are in.
    page("header_says_cp1256_bytes_cp1256",
         arabic.replace(b'<meta charset="utf-8">', b"").decode().encode("cp1256"),
         content_type="text/html; charset=windows-1256")
    page("control_chars", article_page("Control", ENGLISH_PARAGRAPHS).replace(b"Security", b"Sec\x00uri\x1bty\x07", 1))
    outside.add("/secret.html", article_page("Internal", ENGLISH_PARAGRAPHS))
    port = outside.port
    urls["ssrf_dotted"] = f"http://127.0.0.2:{port}/secret.html"
    urls["ssrf_decimal"] = f"http://2130706434:{port}/secret.html"
    urls["ssrf_hex"] = f"http://0x7f000002:{port}/secret.html"
    urls["ssrf_ipv6_mapped"] = f"http://[::ffff:127.0.0.2]:{port}/secret.html"
    s.redirect("/p/ssrf-redirect.html", f"http://[::ffff:127.0.0.2]:{port}/secret.html")
    urls["ssrf_redirect"] = s.url("/p/ssrf-redirect.html")
    return urls


# case → (extraction_status, text expected in extraction_error)
EXPECTED = {
    "good": ("ok", None),
    "host_down": ("fetch_failed", "cannot connect"),
    "slow_headers": ("fetch_failed", "no data from the server"),
    "drip": ("fetch_failed", "deadline"),
    "http_500": ("fetch_failed", "HTTP 500"),
    "http_404": ("gone", "HTTP 404"),
    "http_410": ("gone", "HTTP 410"),
    "http_429": ("fetch_failed", "HTTP 429"),
    "unsolicited_304": ("fetch_failed", "HTTP 304"),
    "redirect_loop": ("fetch_failed", "more than 3 redirects"),
    "redirect_to_javascript": ("blocked", "only http and https"),
    "gzip_bomb": ("too_large", f"larger than {MAX_BYTES}"),  # never fetched again
    "fifty_mb": ("too_large", f"larger than {MAX_BYTES}"),  # never fetched again
    "fifty_mb_gzip": ("too_large", f"larger than {MAX_BYTES}"),  # never fetched again
    "over_extractor_cap": ("too_large", "> 5242880"),
    "truncated_transfer": ("fetch_failed", "without sending complete message body"),
    "empty": ("empty", "no content"),
    "binary": ("failed", "not HTML"),
    "compressed_unlabelled": ("failed", "gzip-compressed bytes"),
    "million_nested_tags": ("empty", "no article text"),
    "meta_says_utf8_bytes_cp1256": ("ok", None),
    "header_says_cp1256_bytes_utf8": ("ok", None),
    "header_says_cp1256_bytes_cp1256": ("ok", None),
    "control_chars": ("ok", None),
    "ssrf_dotted": ("blocked", "127.0.0.2"),
    "ssrf_decimal": ("blocked", "127.0.0.2"),
    "ssrf_hex": ("blocked", "127.0.0.2"),
    "ssrf_ipv6_mapped": ("blocked", "127.0.0.2"),
    "ssrf_redirect": ("blocked", "127.0.0.2"),
}


def test_hostile_pages_are_recorded_and_every_article_kept_once(
    engine: Engine, http_server: LoopbackServer, outside: LoopbackServer
) -> None:
    with TruncatingServer(b"<html><body><p>cut") as truncating:
        urls = serve_hostile_pages(http_server, outside, truncating)
        items = [Item(f"Story {case}", url, f"g-{case}", SUMMARY) for case, url in urls.items()]
        http_server.add("/feed.xml", rss("Wire", items), content_type="application/rss+xml")
        add(engine, http_server.url("/feed.xml"))

        rss_before = peak_rss_kib()
        summary = run_ingest()
        rss_growth = peak_rss_kib() - rss_before

    assert rss_growth < RSS_GROWTH_LIMIT_KIB, f"peak RSS grew by {rss_growth // 1024} MB"
    assert summary.status == "completed"
    assert summary.articles_new == summary.articles_stored == len(urls)
    with session_scope(engine) as session:
        stored = list(session.scalars(select(Article)))
    by_case = {a.guid.removeprefix("g-"): a for a in stored}
    assert sorted(by_case) == sorted(urls)  # each once

    got = {case: (str(a.extraction_status), a.extraction_error) for case, a in by_case.items()}
    for case, (status, text) in EXPECTED.items():
        assert got[case][0] == status, (case, got[case])
        if text is None:
            assert got[case][1] is None, (case, got[case])
        else:
            assert text in (got[case][1] or ""), (case, got[case])
        article = by_case[case]
        assert "\x00" not in (article.text or "") + (article.extraction_error or "")
        if status != "ok":  # the feed's summary is kept
            assert article.text == SUMMARY or len(article.text) > len(SUMMARY), case

    now = stages.utcnow()
    assert by_case["http_429"].next_fetch_at >= now + timedelta(seconds=7000)
    assert by_case["http_404"].next_fetch_at is None and by_case["ssrf_hex"].next_fetch_at is None
    assert by_case["gzip_bomb"].next_fetch_at is None and by_case["fifty_mb"].next_fetch_at is None
    assert ARABIC_PARAGRAPHS[0] in by_case["meta_says_utf8_bytes_cp1256"].text
    assert ARABIC_PARAGRAPHS[0] in by_case["header_says_cp1256_bytes_utf8"].text
    assert ARABIC_PARAGRAPHS[0] in by_case["header_says_cp1256_bytes_cp1256"].text
    assert not any(c in by_case["control_chars"].text for c in "\x00\x07\x1b")
    assert outside.requests == []  # nothing let in


def _extract_measured(html: bytes) -> tuple[str, int]:
    """In a fresh process: extract one page; return its status and the peak RSS growth in KiB."""
    from marsad.extract import extract_page

    extract_page(b"<html><body><p>warm up</p></body></html>")  # load trafilatura first
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    page = extract_page(html, "https://example.org/x")
    return page.status, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before


@pytest.mark.parametrize(
    ("make", "status"),
    [
        (nested_tags, "empty"),
        (lambda: article_page("Big", ENGLISH_PARAGRAPHS * 6500), "ok"),  # ~5 MB, just under the cap
    ],
    ids=["million_nested_tags", "five_mb_page"],
)
def test_extraction_memory_stays_bounded(make, status: str) -> None:  # noqa: ANN001
    """The extractor worker's own peak RSS, measured in a separate process like the pool's."""
    html = make()
    assert len(html) <= 5 * 1024 * 1024
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as executor:
        got, growth_kib = executor.submit(_extract_measured, html).result(timeout=120)
    assert got == status
    assert growth_kib < 400 * 1024, f"extraction grew the worker by {growth_kib // 1024} MB"
