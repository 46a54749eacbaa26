"""Property-based tests: the entry points that read untrusted bytes and text never crash.

Each entry point either answers or raises its own typed error with a message; no other exception
escapes, and what it returns keeps its promises (no control characters stored, offsets inside the
text, addresses without line breaks).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from marsad.digest import check_address
from marsad.errors import FeedParseError, InputError
from marsad.extract import STATUSES, extract_page
from marsad.feeds import ParsedFeed, canonical_url, parse_feed
from marsad.search import parse_query
from marsad.tagging import get_tagger

CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text that looks like what feeds and pages carry, hostile parts included.
fragments = st.sampled_from([
    "<", ">", "&", "&amp;", "&#0;", "&#xD800;", "&#x110000;", "]]>", "<![CDATA[", "<!--", "-->",
    "<!DOCTYPE x [", "<!ENTITY a 'b'>", "&a;", '"', "'", "\x00", "\r\n", "\u202e", "\ufeff",
    "داعش", "الدولة الإسلامية", "ISIS", "Islamic State", "coalition", "CENTCOM", "Syria", "سوريا",
    "http://127.0.0.2/", "javascript:alert(1)", "file:///etc/passwd", " ", "\t", "é", "😀",
])
messy_text = st.lists(st.one_of(fragments, st.text(max_size=20)), max_size=40).map("".join)


def _rss(title: str, link: str, description: str, date: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Feed</title>'
        f"<item><title>{title}</title><link>{link}</link><description>{description}</description>"
        f"<pubDate>{date}</pubDate><guid>{link}</guid></item></channel></rss>"
    ).encode("utf-8", "surrogatepass")


@FAST
@given(st.binary(max_size=4000))
@example(b"")
@example(b"\x1f\x8b\x08\x00" + b"\x00" * 50)
@example(b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><rss>&a;</rss>')
def test_parse_feed_on_arbitrary_bytes(body: bytes) -> None:
    _parse_and_check(body)


@FAST
@given(messy_text, messy_text, messy_text, messy_text)
def test_parse_feed_on_feed_shaped_input(title: str, link: str, description: str, date: str) -> None:
    _parse_and_check(_rss(title, link, description, date))


def _parse_and_check(body: bytes) -> None:
    try:
        parsed = parse_feed(body, "https://feeds.example/rss", "application/rss+xml")
    except FeedParseError as exc:
        assert str(exc) and exc.reason
        return
    assert isinstance(parsed, ParsedFeed)
    for item in parsed.items:
        for value in (item.title, item.summary, item.guid, item.author):
            assert value is None or not CONTROL.search(value)
        assert item.link.startswith(("http://", "https://"))


@SLOW
@given(st.one_of(st.binary(max_size=3000), messy_text.map(lambda t: f"<html><body><p>{t}</p></body></html>")))
@example(b"\x1f\x8b\x08\x00garbage")
@example("<div>" * 2000)
def test_extract_page_answers_whatever_it_is_given(page: bytes | str) -> None:
    extracted = extract_page(page, "https://news.example/story")
    assert extracted.status in STATUSES
    for value in (extracted.text, extracted.title, extracted.author):
        assert value is None or not CONTROL.search(value)
    if extracted.status == "ok":
        assert extracted.text and extracted.text.strip()


@FAST
@given(st.one_of(st.none(), messy_text), st.one_of(st.none(), messy_text), st.sampled_from([None, "en", "ar", "xx"]))
def test_tagger_evidence_always_points_into_the_text(title: str | None, text: str | None, language: str | None) -> None:
    result = get_tagger().tag(title, text, language)
    fields = {"title": title or "", "text": text or ""}
    for tag in result.topics:
        assert 0 < tag.score <= 1
        for evidence in tag.evidence:
            field = fields[evidence.field]
            assert 0 <= evidence.start < evidence.end <= len(field)
            assert field[evidence.start : evidence.end].strip()
    assert result == get_tagger().tag(title, text, language)  # deterministic


@FAST
@given(messy_text)
def test_search_queries_parse_or_are_refused_clearly(query: str) -> None:
    try:
        parsed = parse_query(query)
    except InputError as exc:
        assert str(exc)
        return
    assert parsed.clauses


@FAST
@given(messy_text)
@example("analyst@newsroom.test\r\nBcc: spy@elsewhere.test")
def test_addresses_never_carry_a_line_break(value: str) -> None:
    try:
        address = check_address(value)
    except InputError:
        return
    assert "\r" not in address and "\n" not in address and "," not in address
    assert address.count("@") == 1


@FAST
@given(messy_text)
@example("https://news.example/a?utm_source=x#frag")
def test_canonical_urls_are_http_or_refused(value: str) -> None:
    try:
        url = canonical_url(value)
    except InputError:
        return
    assert url.startswith(("http://", "https://")) and "#" not in url
    assert not CONTROL.search(url) and " " not in url


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
