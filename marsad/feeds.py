"""Feeds: parse feed bytes into items, canonicalise URLs, read feed lists (OPML or YAML).

Parsing takes bytes, never a URL or a path: feedparser would open files or fetch with no timeout.
"""

from __future__ import annotations

import codecs
import calendar
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import feedparser
import lxml.etree
import lxml.html
import yaml
from courlan import normalize_url

from marsad.errors import FeedParseError, InputError

MAX_ITEMS_PER_FEED = 500
_PROLOG_SCAN_BYTES = 64 * 1024
_ROOT_ELEMENT = re.compile(r"<[A-Za-z_]")
_ENTITY_DECL = re.compile(r"<!ENTITY", re.IGNORECASE)
_INTERNAL_SUBSET = re.compile(r"<!DOCTYPE[^>\[]*\[", re.IGNORECASE)
_WHITESPACE = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


@dataclass(frozen=True)
class FeedItem:
    link: str  # absolute URL as published (not yet canonical)
    guid: str | None
    title: str | None
    summary: str | None  # plain text of the item's summary or, when longer, its full content
    author: str | None
    published_at: datetime | None  # None when missing or unparseable
    published_raw: str | None


@dataclass
class ParsedFeed:
    title: str | None
    language: str | None
    items: list[FeedItem]
    # Malformed XML that feedparser recovered from: kept, but flagged on the fetch event.
    recovered_error: str | None = None
    # Item-level problems counted by reason ("bad_link", "no_link").
    skipped: Counter[str] = field(default_factory=Counter)


def reject_entity_declarations(body: bytes) -> None:
    """Refuse a feed whose prolog declares entities or an internal DTD.

    feedparser's lenient fallback expands such entities itself: a 157 KB feed became a 2-billion
    character title. A real feed never needs them.
    """
    prolog = _decode_head(body[:_PROLOG_SCAN_BYTES])
    root = _ROOT_ELEMENT.search(prolog)
    if root is not None:
        prolog = prolog[: root.start()]
    if _ENTITY_DECL.search(prolog) or _INTERNAL_SUBSET.search(prolog):
        raise FeedParseError(
            "the feed declares XML entities or an internal DTD; refused", reason="entities_declared"
        )


def _decode_head(head: bytes) -> str:
    # Enough to read markup in the prolog: UTF-16 needs real decoding, every ASCII-compatible
    # encoding reads correctly as Latin-1 for this purpose.
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return head.decode("utf-16", errors="replace")
    if head.startswith(b"<\x00"):
        return head.decode("utf-16-le", errors="replace")
    if head.startswith(b"\x00<"):
        return head.decode("utf-16-be", errors="replace")
    return head.decode("latin-1")


def parse_feed(body: bytes, url: str, content_type: str | None = None) -> ParsedFeed:
    """Parse RSS or Atom bytes fetched from ``url``. Raises FeedParseError when it is no feed."""
    if not body.strip():
        raise FeedParseError("the response is empty, not a feed", reason="empty")
    reject_entity_declarations(body)
    headers = {"content-location": url}
    if content_type:
        headers["content-type"] = content_type
    parsed = feedparser.parse(body, response_headers=headers, sanitize_html=True)
    entries = parsed.get("entries") or []
    if not parsed.get("version") and not entries:
        detail = f" (content type {content_type})" if content_type else ""
        raise FeedParseError(
            f"the response is not an RSS or Atom feed{detail}", reason="not_a_feed"
        )
    recovered = None
    # A wrong Content-Type or a charset override is common and harmless; XML errors are not.
    if parsed.get("bozo") and not isinstance(
        parsed.get("bozo_exception"),
        (feedparser.NonXMLContentType, feedparser.CharacterEncodingOverride),
    ):
        recovered = _one_line(str(parsed.get("bozo_exception")))

    feed_meta = parsed.get("feed", {})
    skipped: Counter[str] = Counter()
    items: list[FeedItem] = []
    for entry in entries[:MAX_ITEMS_PER_FEED]:
        item = _item_from_entry(entry, url, skipped)
        if item is not None:
            items.append(item)
    if len(entries) > MAX_ITEMS_PER_FEED:
        skipped["over_item_limit"] += len(entries) - MAX_ITEMS_PER_FEED
    return ParsedFeed(
        title=_clean_inline(feed_meta.get("title")),
        language=_clean_inline(feed_meta.get("language")),
        items=items,
        recovered_error=recovered,
        skipped=skipped,
    )


def _item_from_entry(entry: Any, feed_url: str, skipped: Counter[str]) -> FeedItem | None:
    guid = _clean_inline(entry.get("id"))
    raw_link = entry.get("link") or (guid if guid and guid.startswith(("http://", "https://")) else None)
    if not raw_link:
        skipped["no_link"] += 1
        return None
    link = urljoin(feed_url, raw_link.strip())
    try:
        canonical_url(link)
    except InputError:
        skipped["bad_link"] += 1
        return None
    return FeedItem(
        link=link,
        guid=guid,
        title=_clean_inline(entry.get("title")),
        summary=_best_summary(entry),
        author=_clean_inline(entry.get("author")),
        published_at=_entry_date(entry),
        published_raw=_clean_inline(dict.get(entry, "published") or dict.get(entry, "updated")),
    )


def _entry_date(entry: Any) -> datetime | None:
    # dict.get bypasses FeedParserDict's deprecated updated→published key aliasing (and its warning).
    struct = dict.get(entry, "published_parsed") or dict.get(entry, "updated_parsed")
    if not struct:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(struct), tz=timezone.utc)
    except (OverflowError, ValueError, OSError):
        return None


def _best_summary(entry: Any) -> str | None:
    candidates = [entry.get("summary")]
    candidates += [part.get("value") for part in entry.get("content") or []]
    texts = [html_to_text(c) for c in candidates if c]
    texts = [t for t in texts if t]
    return max(texts, key=len) if texts else None


def html_to_text(markup: str) -> str:
    """Plain text of an HTML fragment, paragraphs kept as blank-line breaks."""
    if "<" not in markup and "&" not in markup:
        return _tidy(markup)
    try:
        fragment = lxml.html.fragment_fromstring(markup, create_parent="div")
    except (lxml.etree.ParserError, ValueError):
        return _tidy(markup)
    for block in fragment.iter("p", "br", "div", "li", "h1", "h2", "h3", "h4", "blockquote"):
        block.tail = "\n\n" + (block.tail or "")
    return _tidy(fragment.text_content())


def _tidy(text: str) -> str:
    lines = (_WHITESPACE.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _clean_inline(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    value = " ".join(value.split())
    return value or None


def _one_line(message: str) -> str:
    return " ".join(message.split())[:300]


def canonical_url(url: str) -> str:
    """The URL an article is known by: no fragment, no tracking parameters, normalised host.

    Raises InputError for anything but an absolute http(s) URL.
    """
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InputError(f"not an http(s) URL: {url[:200]!r}")
    # courlan (trafilatura's URL library) lowercases, drops default ports and known trackers
    # (utm_*, fbclid, gclid, ...) and sorts the query; it keeps fragments unless strict, and
    # strict would also drop ordinary query parameters that identify articles.
    normalised = normalize_url(url, strict=False)
    scheme, netloc, path, query, _fragment = urlsplit(normalised)
    return urlunsplit((scheme, netloc, path or "/", query, ""))


def validate_feed_url(url: str) -> str:
    url = url.strip()
    canonical_url(url)  # raises InputError with the reason
    return url


@dataclass(frozen=True)
class FeedSpec:
    url: str
    name: str | None = None
    language: str | None = None


def load_feed_list(path: Path) -> list[FeedSpec]:
    """Read an OPML file or a YAML list of feeds (``feeds: [{url, name, language}]``)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    head = raw.lstrip()[:200].lower()
    if path.suffix.lower() in (".opml", ".xml") or head.startswith(b"<"):
        return _load_opml(raw, path)
    return _load_yaml(raw, path)


def _load_opml(raw: bytes, path: Path) -> list[FeedSpec]:
    parser = lxml.etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        root = lxml.etree.fromstring(raw, parser=parser)
    except lxml.etree.XMLSyntaxError as exc:
        raise InputError(f"{path}: not valid OPML: {exc}") from exc
    specs = []
    for outline in root.iter("outline"):
        url = outline.get("xmlUrl") or outline.get("xmlurl")
        if not url:
            continue
        specs.append(
            FeedSpec(
                url=_checked(url, f"{path}: outline {outline.get('text') or url!r}"),
                name=outline.get("title") or outline.get("text"),
                language=outline.get("language"),
            )
        )
    return specs


def _load_yaml(raw: bytes, path: Path) -> list[FeedSpec]:
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {_one_line(str(exc))}") from exc
    entries = data.get("feeds") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise InputError(f"{path}: expected a list of feeds or a mapping with 'feeds:'")
    specs = []
    for index, entry in enumerate(entries):
        where = f"{path}: feeds[{index}]"
        if isinstance(entry, str):
            entry = {"url": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            raise InputError(f"{where}: each feed needs a 'url'")
        specs.append(
            FeedSpec(
                url=_checked(entry["url"], where),
                name=_optional_str(entry.get("name"), f"{where}.name"),
                language=_optional_str(entry.get("language"), f"{where}.language"),
            )
        )
    return specs


def _checked(url: str, where: str) -> str:
    try:
        return validate_feed_url(url)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from exc


def _optional_str(value: object, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{where}: must be text")
    return value
