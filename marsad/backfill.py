"""Backfill: bring in an archive (a sitemap, or a file of URLs) through the ingest's page loop.

discover (read the sitemaps, record each URL in range as a pending article) → claim → fetch pages
→ extract → tag → store, per batch; ``flows/backfill.py`` runs them. Discovery only inserts
pending rows, with the conflict-ignoring insert the feed poll uses, so a URL already stored by an
ingest or an earlier backfill is never stored twice, and an interrupted backfill resumes by being
run again: its pending rows are still there for the page loop to claim.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit
from zoneinfo import ZoneInfo

import lxml.etree
from sqlalchemy import Engine

from marsad import ingest as stages
from marsad import store
from marsad.config import Settings, get_settings
from marsad.db import session_scope
from marsad.errors import (
    BlockedAddressError,
    FeedParseError,
    FetchError,
    InputError,
    MarsadError,
    SitemapError,
)
from marsad.feeds import (
    MAX_URL_LENGTH,
    canonical_url,
    reject_entity_declarations,
    validate_feed_url,
)
from marsad.fetch import Fetcher, FetchReason, FetchResult, HostSpacing
from marsad.text import one_line, scrub
from models import Article, DateSource, ExtractionStatus, utcnow

NEWS_NS = "http://www.google.com/schemas/sitemap-news/0.9"
# An index of indexes of indexes is the deepest real sites go; deeper is a loop or a trap.
MAX_SITEMAP_DEPTH = 3
# Child sitemaps read per backfill: a news site's index can list thousands (one per day since
# its launch); the most recently modified are read first.
MAX_CHILD_SITEMAPS = 100
MAX_URLS_PER_SITEMAP = 50_000  # the sitemap protocol's own limit
INSERT_CHUNK = 1000  # rows per transaction: progress is kept even if discovery stops midway
_GZIP_MAGIC = b"\x1f\x8b"
_DAY_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DAY_AND_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


# Sitemaps ------------------------------------------------------------------------------------


class SitemapKind(StrEnum):
    URLSET = "urlset"
    INDEX = "sitemapindex"


@dataclass(frozen=True)
class SitemapEntry:
    """A page of a ``<urlset>``, or a child sitemap of a ``<sitemapindex>``."""

    loc: str  # absolute URL as listed
    # news:publication_date, else lastmod: a date when the sitemap gives only the day (which has
    # no time zone to convert), else an aware datetime (UTC assumed when none is written).
    when: datetime | date | None = None
    title: str | None = None  # news:title


@dataclass
class Sitemap:
    url: str
    kind: SitemapKind
    entries: list[SitemapEntry]
    skipped: Counter[str] = field(default_factory=Counter)  # entries left out, by reason


def parse_sitemap(body: bytes, url: str, *, max_bytes: int | None = None) -> Sitemap:
    """Parse a sitemap ``<urlset>`` or a sitemap index fetched from ``url``, gzipped or not.

    Raises SitemapError for anything else: malformed XML, entity declarations (a billion laughs),
    a gzip body larger than ``max_bytes`` (MARSAD_FETCH_MAX_BYTES by default) once decompressed.
    """
    limit = max_bytes if max_bytes is not None else get_settings().fetch_max_bytes
    body = _gunzip(body, url, limit)
    if not body.strip():
        raise SitemapError(f"the sitemap {url} is empty", reason="empty")
    try:
        reject_entity_declarations(body)
    except FeedParseError:
        raise SitemapError(
            f"the sitemap {url} declares XML entities or an internal DTD; refused",
            reason="entities_declared",
        ) from None
    # The same hardened parser as OPML files: no entities, no DTD, nothing fetched.
    parser = lxml.etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        root = lxml.etree.fromstring(body, parser=parser)
    except lxml.etree.XMLSyntaxError as exc:
        raise SitemapError(
            f"the sitemap {url} is not well-formed XML: {one_line(str(exc), 200)}",
            reason="malformed",
        ) from None
    name = _local_name(root)
    if name not in (SitemapKind.URLSET, SitemapKind.INDEX):
        raise SitemapError(
            f"{url} is not a sitemap: its root element is <{name}>, not <urlset> or <sitemapindex>",
            reason="not_a_sitemap",
        )
    kind = SitemapKind(name)
    child_name = "url" if kind is SitemapKind.URLSET else "sitemap"
    sitemap = Sitemap(url, kind, [])
    for node in root:
        if _local_name(node) != child_name:
            continue
        if len(sitemap.entries) >= MAX_URLS_PER_SITEMAP:
            sitemap.skipped["over_url_limit"] += 1
            continue
        entry = _entry(node, url, sitemap.skipped)
        if entry is not None:
            sitemap.entries.append(entry)
    return sitemap


def _gunzip(body: bytes, url: str, limit: int) -> bytes:
    # Sniffed, not read off the URL: a server that sends sitemap.xml.gz with Content-Encoding gzip
    # has had it decoded by the Fetcher already.
    if not body.startswith(_GZIP_MAGIC):
        return body
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
    try:
        # max_length stops inflation at the cap: a small bomb never becomes gigabytes in memory.
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise SitemapError(f"the sitemap {url} is corrupt gzip: {exc}", reason="bad_gzip") from None
    if len(data) > limit:
        raise SitemapError(
            f"the sitemap {url} is larger than {limit} bytes once decompressed "
            "(MARSAD_FETCH_MAX_BYTES)",
            reason="too_large",
        )
    if not inflater.eof:
        raise SitemapError(f"the sitemap {url} is truncated gzip", reason="bad_gzip")
    return data


def _local_name(node: Any) -> str | None:
    if not isinstance(node.tag, str):  # comments and processing instructions
        return None
    return lxml.etree.QName(node).localname


def _child(node: Any, name: str, namespace: str | None = None) -> Any | None:
    # Sitemap elements are matched on their local name alone: sitemaps in the old Google
    # namespace, or in none, are common and mean the same.
    for child in node:
        if _local_name(child) == name and (
            namespace is None or lxml.etree.QName(child).namespace == namespace
        ):
            return child
    return None


def _text(node: Any | None) -> str | None:
    return one_line(node.text) if node is not None else None


def _entry(node: Any, sitemap_url: str, skipped: Counter[str]) -> SitemapEntry | None:
    loc = _text(_child(node, "loc"))
    if not loc:
        skipped["no_loc"] += 1
        return None
    link = urljoin(sitemap_url, loc)
    try:
        if len(link) > MAX_URL_LENGTH or len(canonical_url(link)) > MAX_URL_LENGTH:
            skipped["link_too_long"] += 1
            return None
    except InputError:
        skipped["bad_url"] += 1
        return None
    news = _child(node, "news", NEWS_NS)
    published_raw = _text(_child(news, "publication_date", NEWS_NS)) if news is not None else None
    lastmod_raw = _text(_child(node, "lastmod"))
    when = parse_w3c_date(published_raw) or parse_w3c_date(lastmod_raw)
    if when is None and (published_raw or lastmod_raw):
        skipped["bad_date"] += 1
    title = _text(_child(news, "title", NEWS_NS)) if news is not None else None
    return SitemapEntry(link, when, title)


def parse_w3c_date(value: str | None) -> datetime | date | None:
    """A sitemap date (W3C datetime): a ``date`` for a bare day, else an aware datetime in UTC.

    A time written without a zone is taken as UTC, as feedparser does for feeds. Coarser forms
    (a year, a month) and anything unreadable give None.
    """
    if not value:
        return None
    value = value.strip()
    try:
        if _DAY_ONLY.match(value):
            return date.fromisoformat(value)
        # fromisoformat alone would also read compact and week dates, which W3C dates are not.
        if not _DAY_AND_TIME.match(value):
            return None
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        return None


# URL lists -----------------------------------------------------------------------------------


def read_url_list(path: Path | str) -> list[str]:
    """The URLs of a text file, one per line; blank lines and lines starting with # are skipped.

    Raises InputError naming the file and line of the first URL that is not an http(s) URL.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text: {exc}") from exc
    urls = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            url = validate_feed_url(line)
            if len(url) > MAX_URL_LENGTH or len(canonical_url(url)) > MAX_URL_LENGTH:
                raise InputError(f"URL longer than {MAX_URL_LENGTH} characters")
        except InputError as exc:
            raise InputError(f"{path}, line {number}: {exc}") from exc
        urls.append(url)
    return urls


# Discovery -----------------------------------------------------------------------------------


@dataclass
class DiscoveryReport:
    """What discovery found, and why each URL it did not record was left out."""

    source: str
    since: date | None = None
    until: date | None = None
    sitemaps_read: int = 0
    sitemaps_out_of_range: int = 0  # child sitemaps last modified before ``since``: not read
    urls_seen: int = 0
    new: int = 0  # recorded as pending articles
    already_known: int = 0  # stored before, by an ingest or an earlier backfill
    out_of_range: int = 0
    undated_kept: int = 0  # no date in the source, kept because no range was asked for
    undated_skipped: int = 0  # no date in the source, left out because a range was asked for
    skipped: Counter[str] = field(default_factory=Counter)  # unusable entries, by reason
    failures: list[tuple[str, str]] = field(default_factory=list)  # (sitemap URL, why unread)

    def as_log_line(self) -> str:
        parts = [
            f"{self.sitemaps_read} sitemaps read" if self.sitemaps_read else None,
            f"{self.sitemaps_out_of_range} sitemaps last modified before {self.since} skipped"
            if self.sitemaps_out_of_range else None,
            f"{self.urls_seen} URLs seen",
            f"{self.new} new",
            f"{self.already_known} already known",
            f"{self.out_of_range} out of range" if self.since or self.until else None,
            f"{self.undated_kept} without a date kept (no date range given)"
            if self.undated_kept else None,
            f"{self.undated_skipped} without a date skipped (a date range was given)"
            if self.undated_skipped else None,
            "left out: " + ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items()))
            if self.skipped else None,
            f"{len(self.failures)} sitemaps failed" if self.failures else None,
        ]
        return ", ".join(part for part in parts if part)


def is_sitemap_url(source: str) -> bool:
    return urlsplit(source.strip()).scheme.lower() in ("http", "https")


def discover(
    engine: Engine,
    settings: Settings,
    source: str,
    since: date | None = None,
    until: date | None = None,
    *,
    spacing: HostSpacing | None = None,
) -> DiscoveryReport:
    """Record the URLs of ``source`` dated in [since, until] as pending articles.

    ``source`` is an http(s) sitemap or sitemap index URL, or the path of a file of URLs. Days are
    in MARSAD_TIMEZONE, both included; a URL without a date is kept only when no range is given.
    Running it again records nothing twice. The root sitemap failing raises (FetchError,
    SitemapError); a child sitemap failing is reported and the others are read.
    """
    if since is not None and until is not None and since > until:
        raise InputError(f"the range starts ({since}) after it ends ({until})")
    report = DiscoveryReport(source=source, since=since, until=until)
    if is_sitemap_url(source):
        validate_feed_url(source)
        spacing = spacing or HostSpacing(settings.backfill_host_interval)
        entries = asyncio.run(_read_sitemaps(settings, source.strip(), since, spacing, report))
    elif Path(source).is_file():
        entries = [SitemapEntry(url) for url in read_url_list(source)]
    else:
        raise InputError(f"{source} is neither an http(s) sitemap URL nor a file of URLs")
    rows = _article_rows(entries, settings.tz, since, until, report)
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[start : start + INSERT_CHUNK]
        with session_scope(engine) as session:
            inserted = session.execute(
                store.insert_ignoring_conflicts(session, Article).returning(Article.id), chunk
            )
            new = len(inserted.all())
        report.new += new
        report.already_known += len(chunk) - new
    return report


async def _read_sitemaps(
    settings: Settings,
    root_url: str,
    since: date | None,
    spacing: HostSpacing,
    report: DiscoveryReport,
) -> list[SitemapEntry]:
    """Read a sitemap and, level by level, the sitemaps its indexes list; return their pages."""
    pages: list[SitemapEntry] = []
    seen = {root_url}
    level = [root_url]
    children_left = MAX_CHILD_SITEMAPS
    not_read = 0
    async with Fetcher.from_settings(settings, host_spacing=spacing) as fetcher:
        for depth in range(MAX_SITEMAP_DEPTH + 1):
            if not level:
                break
            results = await asyncio.gather(*(fetcher.fetch(url) for url in level))
            children: list[SitemapEntry] = []
            for url, result in zip(level, results, strict=True):
                try:
                    sitemap = _sitemap_from(result, settings)
                except MarsadError as exc:
                    if depth == 0:
                        raise
                    report.failures.append((url, str(exc)))
                    continue
                report.sitemaps_read += 1
                report.skipped.update(sitemap.skipped)
                if sitemap.kind is SitemapKind.URLSET:
                    pages += sitemap.entries
                else:
                    children += sitemap.entries
            level = []
            # An index lists its sitemaps oldest first as often as newest first; when there are
            # more than can be read, the recently modified ones hold the coverage asked for.
            for child in sorted(children, key=_recency, reverse=True):
                if child.loc in seen:
                    continue
                seen.add(child.loc)
                changed = _day(child.when, settings.tz) if child.when is not None else None
                if since is not None and changed is not None and changed < since:
                    # A sitemap last changed before the range began lists nothing published in it.
                    report.sitemaps_out_of_range += 1
                elif depth + 1 > MAX_SITEMAP_DEPTH:
                    why = f"not read: sitemap indexes nested deeper than {MAX_SITEMAP_DEPTH}"
                    report.failures.append((child.loc, why))
                elif children_left <= 0:
                    not_read += 1
                else:
                    children_left -= 1
                    level.append(child.loc)
    if not_read:
        why = f"{not_read} sitemaps not read: at most {MAX_CHILD_SITEMAPS} are read per backfill"
        report.failures.append((root_url, why))
    return pages


def _sitemap_from(result: FetchResult, settings: Settings) -> Sitemap:
    if not result.ok:
        error_class = (
            BlockedAddressError if result.reason == FetchReason.BLOCKED_ADDRESS else FetchError
        )
        raise error_class(
            f"cannot read the sitemap {result.url}: {result.error or result.reason}",
            reason=result.reason,
        )
    return parse_sitemap(result.body, result.final_url, max_bytes=settings.fetch_max_bytes)


def _recency(entry: SitemapEntry) -> datetime:
    if entry.when is None:
        return datetime.min.replace(tzinfo=UTC)
    return _as_datetime(entry.when, ZoneInfo("UTC"))


def _as_datetime(value: datetime | date, tz: ZoneInfo) -> datetime:
    """An aware UTC datetime: a bare day is its midnight in MARSAD_TIMEZONE, so it is counted on
    that day wherever Marsad counts days."""
    if isinstance(value, datetime):
        return value
    return datetime.combine(value, time(), tzinfo=tz).astimezone(UTC)


def _day(value: datetime | date, tz: ZoneInfo) -> date:
    """The day in MARSAD_TIMEZONE; a bare day is already one."""
    return value.astimezone(tz).date() if isinstance(value, datetime) else value


def _article_rows(
    entries: Sequence[SitemapEntry],
    tz: ZoneInfo,
    since: date | None,
    until: date | None,
    report: DiscoveryReport,
) -> list[dict[str, Any]]:
    now = utcnow()
    ranged = since is not None or until is not None
    rows: dict[str, dict[str, Any]] = {}
    for entry in entries:
        report.urls_seen += 1
        if entry.when is None:
            if ranged:
                report.undated_skipped += 1
                continue
            report.undated_kept += 1
        elif ranged:
            day = _day(entry.when, tz)
            if (since is not None and day < since) or (until is not None and day > until):
                report.out_of_range += 1
                continue
        try:
            canonical = canonical_url(entry.loc)
        except InputError:
            report.skipped["bad_url"] += 1
            continue
        if canonical in rows:
            report.skipped["listed_twice"] += 1
            continue
        published = _as_datetime(entry.when, tz) if entry.when is not None else None
        if published is not None and published > now + stages.FUTURE_TOLERANCE:
            published = None  # a publisher's mistake: let the page date it
        rows[canonical] = {
            "canonical_url": canonical,
            "url": scrub(entry.loc),
            "guid": None,
            "feed_id": None,
            "title": entry.title,
            "summary": None,
            "text": None,
            "author": None,
            "published_at": published,
            # "feed" is the date source a page's own date never overrides: the sitemap's date is
            # the publisher's listing, as trustworthy as its feed's.
            "date_source": DateSource.FEED if published is not None else None,
            "discovered_at": now,
            "story_at": published or now,
            "extraction_status": ExtractionStatus.PENDING,
            "fetch_attempts": 0,
        }
    # Inserting in one global order keeps two overlapping runs from deadlocking on PostgreSQL.
    return [rows[key] for key in sorted(rows)]


# Pages ---------------------------------------------------------------------------------------


# Summary -------------------------------------------------------------------------------------


@dataclass
class BackfillSummary:
    discovery: DiscoveryReport
    pages_stored: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # page failures by reason
    duration_s: float = 0.0

    @classmethod
    def of(
        cls, discovery: DiscoveryReport, stored: Sequence[stages.StoreReport], duration_s: float
    ) -> BackfillSummary:
        failures: Counter[str] = Counter()
        for report in stored:
            failures.update(report.failures)
        return cls(
            discovery=discovery,
            pages_stored=sum(report.stored for report in stored),
            failures=dict(failures),
            duration_s=duration_s,
        )

    def as_log_line(self) -> str:
        d = self.discovery
        window = f" {d.since or '…'}..{d.until or '…'}" if d.since or d.until else ""
        failures = ", ".join(f"{k}={v}" for k, v in sorted(self.failures.items())) or "none"
        line = (
            f"backfill of {d.source}{window}: {d.as_log_line()}; {self.pages_stored} pages stored "
            f"in {self.duration_s:.1f} s; page failures: {failures}"
        )
        if d.failures:
            line += "; sitemaps failed: " + "; ".join(f"{url}: {why}" for url, why in d.failures)
        return line

    def as_markdown(self) -> str:
        d = self.discovery
        lines = [
            f"# Backfill of {_md(d.source)}",
            "",
            (
                "| sitemaps read | URLs seen | new | already known | out of range "
                "| undated kept | undated skipped | pages stored | seconds |"
            ),
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            (
                f"| {d.sitemaps_read} | {d.urls_seen} | {d.new} | {d.already_known} "
                f"| {d.out_of_range} | {d.undated_kept} | {d.undated_skipped} "
                f"| {self.pages_stored} | {self.duration_s:.1f} |"
            ),
        ]
        counts = Counter(self.failures) + Counter({f"url:{k}": v for k, v in d.skipped.items()})
        if counts:
            lines += ["", "| failure | count |", "|---|---:|"]
            lines += [f"| {_md(reason)} | {count} |" for reason, count in sorted(counts.items())]
        if d.failures:
            lines += ["", "| sitemap | why it was not read |", "|---|---|"]
            lines += [f"| {_md(url)} | {_md(why)} |" for url, why in d.failures]
        return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
