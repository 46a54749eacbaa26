"""Feeds: parse feed bytes into items, canonicalise URLs, read feed lists (OPML or YAML).

Parsing takes bytes, never a URL or a path: feedparser would open files or fetch with no timeout.
"""

from __future__ import annotations

import calendar
import codecs
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Sequence
from typing import Any
from xml.parsers import expat
from urllib.parse import urljoin, urlsplit, urlunsplit

import feedparser
import lxml.etree
import lxml.html
import yaml
from courlan import normalize_url

from marsad.errors import FeedParseError, InputError
from marsad.text import one_line, scrub

MAX_ITEMS_PER_FEED = 500
MAX_URL_LENGTH = 2048  # the URL columns' size
_ENTITY_DECL = re.compile(r"<!ENTITY", re.IGNORECASE)
_PROLOG_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9_.:-]+)["']""")
_CHARSET_PARAM = re.compile(r";\s*charset\s*=\s*[\"']?([^;\"'\s]+)[\"']?", re.IGNORECASE)
_INTERNAL_SUBSET = re.compile(r"<!DOCTYPE[^>\[]*\[", re.IGNORECASE)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_LANGUAGE_CODE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,2}$")
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
    # How often the feed says it changes at most (RSS <ttl>, sy:updatePeriod/updateFrequency).
    hint_minutes: float | None = None


class _RootReached(Exception):
    """The prolog is over: nothing after it can declare an entity."""


def reject_entity_declarations(body: bytes) -> None:
    """Refuse a feed whose prolog declares entities or an internal DTD.

    feedparser's lenient fallback expands such entities itself: a 157 KB feed became a 2-billion
    character title. A real feed never needs them. expat reads the prolog (comments, processing
    instructions and encodings included) and stops at the root element; it neither expands nor
    fetches anything before the handlers refuse.
    """
    refusal = FeedParseError(
        "the feed declares XML entities or an internal DTD; refused", reason="entities_declared"
    )

    def on_doctype(_name: str, _system: str, _public: str, has_internal_subset: int) -> None:
        if has_internal_subset:
            raise refusal

    def on_entity(*_args: object) -> None:
        raise refusal

    def on_root(*_args: object) -> None:
        raise _RootReached

    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = on_doctype
    parser.EntityDeclHandler = on_entity
    parser.StartElementHandler = on_root
    try:
        parser.Parse(body, True)
    except _RootReached:
        return
    except (expat.ExpatError, ValueError, LookupError):
        # Not well-formed before its root (or an encoding expat lacks): feedparser would fall
        # back to its lenient parser, so be strict instead and look for declarations anywhere.
        text = _COMMENT.sub("", _decode_for_scan(body))
        if _ENTITY_DECL.search(text) or _INTERNAL_SUBSET.search(text):
            raise refusal from None


def _decode_for_scan(data: bytes) -> str:
    # Enough to find markup: UTF-16 needs real decoding, every ASCII-compatible encoding reads
    # correctly as Latin-1 for this purpose.
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    if data.startswith(b"<\x00"):
        return data.decode("utf-16-le", errors="replace")
    if data.startswith(b"\x00<"):
        return data.decode("utf-16-be", errors="replace")
    return data.decode("latin-1")


def _codec(label: str | None) -> str | None:
    try:
        return codecs.lookup(label).name if label else None
    except LookupError:
        return None


def _correct_declared_encoding(
    body: bytes, content_type: str | None
) -> tuple[bytes, str | None, str | None]:
    """Transcode a feed to UTF-8 when its declared encoding (HTTP charset, else the XML prolog)
    is plainly wrong, returning the body, content type and a note saying what was corrected.

    feedparser trusts any declaration that decodes without error: a single-byte charset always
    does, so UTF-8 declared as windows-1256 turned Arabic into mojibake, and windows-1256 declared
    (or defaulted) as UTF-8 was read as windows-1252, both silently. Valid UTF-8 with non-ASCII
    bytes is almost never another encoding; bytes that are not UTF-8 are detected instead.
    """
    if body.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or (
        b"\x00" in body[:4]
    ):
        return body, content_type, None  # a byte-order mark or UTF-16/32: feedparser sniffs these
    header = _CHARSET_PARAM.search(content_type or "")
    prolog = _PROLOG_ENCODING.match(body[:1024])
    label = header.group(1) if header else (prolog.group(1).decode("ascii") if prolog else None)
    declared = _codec(label)
    try:
        body.decode("utf-8")
        is_utf8 = True
    except UnicodeDecodeError:
        is_utf8 = False
    if is_utf8:
        wrong = declared not in (None, "utf-8", "ascii") and (
            not body.isascii() or declared.startswith(("utf-16", "utf-32"))
        )
        if not wrong:
            return body, content_type, None
        actual = "utf-8"
        note = f"declared {label} but the bytes are UTF-8; read as UTF-8"
    else:
        if declared not in (None, "utf-8"):
            return body, content_type, None  # declared legacy charset, plausibly right
        from charset_normalizer import from_bytes

        guess = from_bytes(body[:65536]).best()
        actual = _codec(guess.encoding if guess is not None else None) or "cp1252"
        note = f"declared {label or 'UTF-8 (by default)'} but the bytes are not UTF-8; read as {actual}"
    text = body.decode(actual, errors="replace")
    if prolog:
        text = re.sub(r"""(encoding\s*=\s*["'])[^"']*""", r"\g<1>utf-8", text, count=1)
    if header and content_type:
        content_type = content_type[: header.start()] + "; charset=utf-8" + content_type[header.end() :]
    return text.encode("utf-8"), content_type, note


def parse_feed(body: bytes, url: str, content_type: str | None = None) -> ParsedFeed:
    """Parse RSS or Atom bytes fetched from ``url``. Raises FeedParseError when it is no feed."""
    if not body.strip():
        raise FeedParseError("the response is empty, not a feed", reason="empty")
    reject_entity_declarations(body)
    body, content_type, encoding_note = _correct_declared_encoding(body, content_type)
    headers = {"content-location": url}
    if content_type:
        headers["content-type"] = content_type
    try:
        parsed = feedparser.parse(body, response_headers=headers, sanitize_html=True)
    except Exception as exc:  # noqa: BLE001 - feedparser raises what its internals raise
        # Seen: a surrogate pair written as two character references (UnicodeEncodeError), a
        # reference beyond U+10FFFF (ValueError, OverflowError). One bad feed must not stop a run.
        raise FeedParseError(
            f"the feed cannot be parsed: {type(exc).__name__}: {one_line(str(exc), 200)}",
            reason="parser_error",
        ) from None
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
        recovered = one_line(str(parsed.get("bozo_exception")), 300)
    if encoding_note:
        recovered = f"{encoding_note}; {recovered}" if recovered else encoding_note

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
        title=one_line(feed_meta.get("title")),
        language=one_line(feed_meta.get("language")),
        items=items,
        recovered_error=recovered,
        skipped=skipped,
        hint_minutes=update_hint_minutes(feed_meta),
    )


_SY_PERIOD_MINUTES = {"hourly": 60, "daily": 1440, "weekly": 10080, "monthly": 43200, "yearly": 525600}


def update_hint_minutes(feed_meta: Any) -> float | None:
    """Minutes between updates the feed declares: RSS ``<ttl>`` or the syndication module's
    ``updatePeriod`` divided by ``updateFrequency``; the longer when both are given. None when
    absent or nonsense."""
    hints = []
    ttl = _positive_number(feed_meta.get("ttl"))
    if ttl is not None:
        hints.append(ttl)
    period = _SY_PERIOD_MINUTES.get(str(feed_meta.get("sy_updateperiod") or "").strip().lower())
    if period is not None:
        frequency = _positive_number(feed_meta.get("sy_updatefrequency")) or 1.0
        hints.append(period / frequency)
    return max(hints) if hints else None


def _positive_number(value: Any) -> float | None:
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _item_from_entry(entry: Any, feed_url: str, skipped: Counter[str]) -> FeedItem | None:
    guid = one_line(entry.get("id"))
    raw_link = entry.get("link") or (guid if guid and guid.startswith(("http://", "https://")) else None)
    if not raw_link:
        skipped["no_link"] += 1
        return None
    link = urljoin(feed_url, raw_link.strip())
    if len(link) > MAX_URL_LENGTH:
        skipped["link_too_long"] += 1
        return None
    try:
        if len(canonical_url(link)) > MAX_URL_LENGTH:
            skipped["link_too_long"] += 1
            return None
    except InputError:
        skipped["bad_link"] += 1
        return None
    return FeedItem(
        link=link,
        guid=guid,
        title=one_line(entry.get("title")),
        summary=_best_summary(entry),
        author=one_line(entry.get("author")),
        published_at=_entry_date(entry),
        published_raw=one_line(dict.get(entry, "published") or dict.get(entry, "updated")),
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
    # Control characters survive lxml's text_content (an ESC in a summary did): drop them here,
    # where every summary and content passes, not in each caller.
    lines = (_WHITESPACE.sub(" ", line).strip() for line in scrub(text).split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


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


def validate_language(code: str | None) -> str | None:
    """A language code such as ``en``, ``ar`` or ``ar-SY``; None stays None."""
    if code is None:
        return None
    code = code.strip()
    if not _LANGUAGE_CODE.match(code):
        raise InputError(f"not a language code: {code[:40]!r} (use e.g. en, ar or ar-SY)")
    return code


def validate_feed_url(url: str) -> str:
    url = url.strip()
    canonical_url(url)  # raises InputError with the reason
    return url


SOURCE_TYPES = ("independent", "state", "wire", "official", "research")
_COUNTRY = re.compile(r"^[A-Z]{2}$")


@dataclass(frozen=True)
class FeedSpec:
    url: str
    name: str | None = None
    language: str | None = None
    country: str | None = None  # ISO 3166-1 alpha-2, or UN/EU for international bodies
    source_type: str | None = None  # one of SOURCE_TYPES
    homepage: str | None = None


def load_feed_list(path: Path) -> list[FeedSpec]:
    """Read an OPML file or a YAML list of feeds (``feeds: [{url, name, language, country, type,
    homepage}]``)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    head = raw.lstrip()[:200].lower()
    if path.suffix.lower() in (".opml", ".xml") or head.startswith(b"<"):
        return _load_opml(raw, str(path))
    return _load_yaml(raw, str(path))


def starter_feed_list() -> list[FeedSpec]:
    """The curated starter sources shipped in ``marsad/sources/starter.yaml``."""
    from importlib.resources import files

    resource = files("marsad") / "sources" / "starter.yaml"
    return _load_yaml(resource.read_bytes(), "the starter list (marsad/sources/starter.yaml)")


def _load_opml(raw: bytes, where: str) -> list[FeedSpec]:
    try:
        reject_entity_declarations(raw)
    except FeedParseError as exc:
        raise InputError(f"{where}: XML entity declarations or an internal DTD; refused") from exc
    parser = lxml.etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        root = lxml.etree.fromstring(raw, parser=parser)
    except lxml.etree.XMLSyntaxError as exc:
        raise InputError(f"{where}: not valid OPML: {exc}") from exc
    specs = []
    for outline in root.iter("outline"):
        url = outline.get("xmlUrl") or outline.get("xmlurl")
        if not url:
            continue
        place = f"{where}: outline {outline.get('text') or url!r}"
        specs.append(
            _spec(
                place,
                url=url,
                # An unnamed feed is written with its URL as the required `text`.
                name=outline.get("title") or (outline.get("text") if outline.get("text") != url else None),
                language=outline.get("language"),
                country=outline.get("country"),
                source_type=outline.get("sourceType"),
                homepage=outline.get("htmlUrl"),
            )
        )
    return specs


def _load_yaml(raw: bytes, where: str) -> list[FeedSpec]:
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise InputError(f"{where}: not valid YAML: {one_line(str(exc), 300)}") from exc
    entries = data.get("feeds") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise InputError(f"{where}: expected a list of feeds or a mapping with 'feeds:'")
    specs = []
    for index, entry in enumerate(entries):
        place = f"{where}: feeds[{index}]"
        if isinstance(entry, str):
            entry = {"url": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            raise InputError(f"{place}: each feed needs a 'url'")
        specs.append(
            _spec(
                place,
                **{
                    key: _optional_str(entry.get(field), f"{place}.{field}")
                    for key, field in (
                        ("url", "url"), ("name", "name"), ("language", "language"),
                        ("country", "country"), ("source_type", "type"), ("homepage", "homepage"),
                    )
                },
            )
        )
    return specs


def _spec(place: str, *, url: str | None, **fields: str | None) -> FeedSpec:
    """A checked FeedSpec; a bad field raises InputError naming ``place``."""
    country, source_type, homepage = fields["country"], fields["source_type"], fields["homepage"]
    if country is not None and not _COUNTRY.match(country.strip().upper()):
        raise InputError(f"{place}: country {country[:20]!r} is not a two-letter code (e.g. SY, IQ)")
    if source_type is not None and source_type.strip().lower() not in SOURCE_TYPES:
        raise InputError(
            f"{place}: type {source_type[:30]!r} is not one of {', '.join(SOURCE_TYPES)}"
        )
    return FeedSpec(
        url=_checked(url or "", place),
        name=fields["name"],
        language=_checked_language(fields["language"], place),
        country=country.strip().upper() if country else None,
        source_type=source_type.strip().lower() if source_type else None,
        homepage=_checked(homepage, f"{place} homepage") if homepage else None,
    )


def dump_feed_list(feeds: Sequence[Any], format: str) -> str:
    """Feeds (rows with url, name, language, country, source_type, homepage) as YAML or OPML that
    ``load_feed_list`` reads back to the same feeds."""
    if format == "yaml":
        entries = []
        for feed in feeds:
            entry = {"url": feed.url}
            for key, value in (("name", feed.name), ("language", feed.language),
                               ("country", feed.country), ("type", feed.source_type),
                               ("homepage", feed.homepage)):
                if value:
                    entry[key] = value
            entries.append(entry)
        return yaml.safe_dump({"feeds": entries}, allow_unicode=True, sort_keys=False)
    if format == "opml":
        root = lxml.etree.Element("opml", version="2.0")
        head = lxml.etree.SubElement(root, "head")
        lxml.etree.SubElement(head, "title").text = "Marsad feeds"
        body = lxml.etree.SubElement(root, "body")
        for feed in feeds:
            attributes = {"type": "rss", "text": feed.name or feed.url, "xmlUrl": feed.url}
            for key, value in (("title", feed.name), ("language", feed.language),
                               ("country", feed.country), ("sourceType", feed.source_type),
                               ("htmlUrl", feed.homepage)):
                if value:
                    attributes[key] = value
            lxml.etree.SubElement(body, "outline", attributes)
        return lxml.etree.tostring(
            root, pretty_print=True, xml_declaration=True, encoding="UTF-8"
        ).decode("utf-8")
    raise InputError(f"unknown format {format!r}: use opml or yaml")


def _checked(url: str, where: str) -> str:
    try:
        return validate_feed_url(url)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from exc


def _checked_language(code: str | None, where: str) -> str | None:
    try:
        return validate_language(code)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from exc


def _optional_str(value: object, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{where}: must be text")
    return value
