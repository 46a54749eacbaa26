from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from marsad.errors import FeedParseError, InputError
from marsad.feeds import canonical_url, html_to_text, load_feed_list, parse_feed

FEED_URL = "http://127.0.0.1:8000/feeds/news.xml"

RSS = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel>
  <title>Frontier Wire</title>
  <language>en</language>
  <item>
    <title>Border guards report a convoy stopped near Al-Qaim</title>
    <link>/news/convoy-stopped?utm_source=rss&amp;utm_medium=feed#comments</link>
    <guid isPermaLink="false">fw-1001</guid>
    <description>&lt;p&gt;Guards stopped a convoy.&lt;/p&gt;&lt;p&gt;Two trucks were searched.&lt;/p&gt;</description>
    <dc:creator>Staff reporter</dc:creator>
    <pubDate>Tue, 10 Nov 2026 10:00:00 +0200</pubDate>
  </item>
  <item>
    <title>Item with a garbage date</title>
    <link>https://frontier.example/news/garbage-date</link>
    <pubDate>sometime last week</pubDate>
  </item>
  <item><title>Script link</title><link>javascript:alert(1)</link></item>
  <item><title>File link</title><link>file:///etc/passwd</link></item>
  <item><title>No link at all</title><description>orphan</description></item>
</channel>
</rss>
"""

ATOM_AR = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="ar">
  <title>نشرة الحدود</title>
  <entry>
    <id>tag:hudud.example,2026:77</id>
    <title>اجتماع أمني في عمّان</title>
    <link href="https://hudud.example/ar/77"/>
    <updated>2026-11-09T08:30:00Z</updated>
    <summary>التقى مسؤولون أمنيون لبحث ضبط الحدود.</summary>
  </entry>
</feed>
"""


def test_rss_items_are_parsed_with_links_resolved_and_bad_items_counted() -> None:
    feed = parse_feed(RSS.encode(), FEED_URL, "application/rss+xml")

    assert feed.title == "Frontier Wire"
    assert feed.language == "en"
    first, second = feed.items
    assert first.link == "http://127.0.0.1:8000/news/convoy-stopped?utm_source=rss&utm_medium=feed#comments"
    assert first.guid == "fw-1001"
    assert first.summary == "Guards stopped a convoy.\n\nTwo trucks were searched."
    assert first.author == "Staff reporter"
    assert first.published_at == datetime(2026, 11, 10, 8, 0, tzinfo=timezone.utc)
    assert second.published_at is None and second.published_raw == "sometime last week"
    assert feed.skipped == {"bad_link": 2, "no_link": 1}


def test_atom_in_arabic() -> None:
    feed = parse_feed(ATOM_AR.encode(), "https://hudud.example/feed", "application/atom+xml")

    assert feed.language == "ar"
    (item,) = feed.items
    assert item.title == "اجتماع أمني في عمّان"
    assert item.guid == "tag:hudud.example,2026:77"
    assert item.published_at == datetime(2026, 11, 9, 8, 30, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"<!doctype html><html><head><title>Home</title></head><body><p>Hello</p></body></html>", "not_a_feed"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR garbage", "not_a_feed"),
    ],
)
def test_a_page_that_is_not_a_feed_is_an_error(body: bytes, reason: str) -> None:
    with pytest.raises(FeedParseError) as caught:
        parse_feed(body, FEED_URL, "text/html")
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    "prolog",
    [
        '<!DOCTYPE rss [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>',
        '<!DOCTYPE rss [<!ELEMENT rss ANY>]>',
        '<!DOCTYPE rss SYSTEM "http://127.0.0.9/evil.dtd" [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
    ],
)
def test_entity_declarations_are_refused_before_parsing(prolog: str) -> None:
    body = f'<?xml version="1.0"?>{prolog}<rss version="2.0"><channel><title>&lol2;</title></channel></rss>'
    with pytest.raises(FeedParseError) as caught:
        parse_feed(body.encode(), FEED_URL)
    assert caught.value.reason == "entities_declared"


def test_entity_declarations_in_utf16_are_refused_too() -> None:
    body = '<?xml version="1.0" encoding="utf-16"?><!DOCTYPE rss [<!ENTITY a "b">]><rss version="2.0"/>'
    with pytest.raises(FeedParseError):
        parse_feed(body.encode("utf-16"), FEED_URL)


def test_the_word_entity_inside_an_item_is_not_a_declaration() -> None:
    body = RSS.replace("Two trucks were searched.", "&lt;!ENTITY is XML syntax&gt;").encode()
    assert len(parse_feed(body, FEED_URL).items) == 2


def test_malformed_xml_keeps_what_can_be_recovered_and_flags_it() -> None:
    broken = RSS.replace("</channel>\n</rss>", "<item><title>cut off")
    feed = parse_feed(broken.encode(), FEED_URL, "application/rss+xml")
    assert [item.guid for item in feed.items][:1] == ["fw-1001"]
    assert feed.recovered_error


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTPS://News.Example.COM:443/a/b?utm_source=rss&utm_medium=feed#top", "https://news.example.com/a/b"),
        ("http://news.example.com/story?id=7&fbclid=abc&gclid=1", "http://news.example.com/story?id=7"),
        ("http://news.example.com/story?b=2&a=1", "http://news.example.com/story?a=1&b=2"),
        ("http://news.example.com", "http://news.example.com/"),
    ],
)
def test_canonical_url(url: str, expected: str) -> None:
    assert canonical_url(url) == expected


@pytest.mark.parametrize("url", ["javascript:alert(1)", "file:///etc/passwd", "ftp://x/y", "/relative", "http://"])
def test_canonical_url_refuses_non_http(url: str) -> None:
    with pytest.raises(InputError):
        canonical_url(url)


def test_html_to_text_keeps_paragraphs() -> None:
    assert html_to_text("<p>One &amp; two</p><p>Three<br>four</p>") == "One & two\n\nThree\n\nfour"


def test_feed_list_from_yaml_and_opml(tmp_path: Path) -> None:
    yaml_file = tmp_path / "feeds.yaml"
    yaml_file.write_text(
        "feeds:\n  - url: https://a.example/rss\n    name: A\n    language: ar\n  - https://b.example/atom\n",
        encoding="utf-8",
    )
    opml_file = tmp_path / "feeds.opml"
    opml_file.write_text(
        '<?xml version="1.0"?><opml version="2.0"><body><outline text="Group">'
        '<outline text="C" type="rss" xmlUrl="https://c.example/feed"/></outline></body></opml>',
        encoding="utf-8",
    )

    assert [(s.url, s.name, s.language) for s in load_feed_list(yaml_file)] == [
        ("https://a.example/rss", "A", "ar"),
        ("https://b.example/atom", None, None),
    ]
    assert [(s.url, s.name) for s in load_feed_list(opml_file)] == [("https://c.example/feed", "C")]


def test_feed_list_errors_name_the_place(tmp_path: Path) -> None:
    bad = tmp_path / "feeds.yaml"
    bad.write_text("feeds:\n  - url: https://a.example/rss\n  - url: ftp://b.example/x\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"feeds\[1\]"):
        load_feed_list(bad)
    with pytest.raises(InputError, match="cannot read"):
        load_feed_list(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "before_doctype",
    [
        "<!-- <a> looks like a root element -->",
        "<!--" + "padding " * 10_000 + "-->",  # pushes the DTD far past any fixed-size prolog scan
        '<?xml-stylesheet href="<b>"?>',
    ],
)
def test_entity_declarations_hidden_behind_comments_are_refused(before_doctype: str) -> None:
    body = (
        f'<?xml version="1.0"?>{before_doctype}<!DOCTYPE rss [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><rss version="2.0"><channel><title>&b;</title>'
        "</channel></rss>"
    )
    with pytest.raises(FeedParseError) as caught:
        parse_feed(body.encode(), FEED_URL)
    assert caught.value.reason == "entities_declared"


def test_an_external_dtd_reference_alone_is_harmless_and_fetches_nothing() -> None:
    body = RSS.replace(
        '<rss version="2.0"',
        '<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN" '
        '"http://127.0.0.9/rss-0.91.dtd">\n<rss version="2.0"',
    )
    assert len(parse_feed(body.encode(), FEED_URL).items) == 2


@pytest.mark.parametrize("reference", ["&#55357;&#56832;", "&#x110000;", "&#99999999999;"])
def test_character_references_that_crash_feedparser_are_a_parse_error(reference: str) -> None:
    body = RSS.replace("Frontier Wire", f"Frontier {reference} Wire").encode()
    with pytest.raises(FeedParseError) as caught:
        parse_feed(body, FEED_URL)
    assert caught.value.reason == "parser_error" and "cannot be parsed" in str(caught.value)


def test_overlong_links_are_skipped_and_counted() -> None:
    long_link = "https://frontier.example/news/" + "x" * 2100
    body = RSS.replace("https://frontier.example/news/garbage-date", long_link).encode()
    feed = parse_feed(body, FEED_URL)
    assert [item.guid for item in feed.items] == ["fw-1001"]
    assert feed.skipped["link_too_long"] == 1


def test_feed_list_language_codes_are_checked(tmp_path: Path) -> None:
    bad = tmp_path / "feeds.yaml"
    bad.write_text("feeds:\n  - url: https://a.example/rss\n    language: Arabic and English\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"feeds\[0\]: not a language code"):
        load_feed_list(bad)
