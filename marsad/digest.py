"""The daily digest: what arrived for one recipient, grouped by topic, as an email.

Two halves: :func:`build_view` reads the database into a plain view of the digest (stories, trends,
source health), and :func:`render` turns a view into a MIME message with Jinja2 templates and no
side effects. Delivery and bookkeeping live in ``marsad.delivery``; sending in ``marsad.mail``.
"""

from __future__ import annotations

import re
import textwrap
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from marsad.errors import InputError
from marsad.health import FeedHealth
from marsad.tagging import TOPICS
from marsad.trends import local_midnight, trends
from models import DAILY, Article, ArticleTag, Digest, DigestItem, Feed

TOPIC_LABELS = {
    "isis": "ISIS",
    "coalition": "The anti-ISIS coalition",
    "regional_cooperation": "Regional cooperation",
}
SHORT_LABELS = {"isis": "ISIS", "coalition": "coalition", "regional_cooperation": "regional cooperation"}
TOPIC_COLOURS = {"isis": "#b91c1c", "coalition": "#1d4ed8", "regional_cooperation": "#047857"}

# Pages are committed in batches, some time after they were fetched: a digest looks back this far
# before its period so that an article fetched just before the previous digest's cut-off but stored
# after it is not missed. Articles already carried are excluded by id, so nothing repeats.
LOOKBACK = timedelta(hours=6)
SNIPPET_BEFORE, SNIPPET_AFTER = 110, 230
PLAIN_SNIPPET = 280
MAX_TERMS = 8
# A long section lists this many of the stories it does not show in full, as one line each.
MORE_LISTED = 15
# `marsad articles list` prints this many rows unless given --limit (marsad.cli.TABLE_LIMIT).
ARTICLES_LIST_DEFAULT_LIMIT = 50
# Scripts written right to left: a story in one of these languages is laid out right to left.
RTL_LANGUAGES = frozenset({"ar", "fa", "he", "ur", "ps", "ckb", "yi", "dv", "sd", "ug"})
# Several outlets carrying a story make it more relevant, a little: never more than a stronger tag.
OUTLET_BONUS, OUTLET_BONUS_MAX = 0.03, 4

_WHITESPACE = re.compile(r"\s+")
_SAFE_URL = re.compile(r"^https?://[^\s\x00-\x1f\x7f]+$", re.IGNORECASE)
_LANGUAGE_TAG = re.compile(r"^[a-z]{2,3}$")
# Strong right-to-left characters (Hebrew, Arabic, Syriac, Thaana, N'Ko... and their presentation
# forms): text holding one is isolated in the plain part so that it cannot reorder its neighbours.
_RTL_CHAR = re.compile("[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufefc]")
FSI, PDI = "\u2068", "\u2069"  # Unicode bidi isolates: FIRST STRONG ISOLATE ... POP DIRECTIONAL ISOLATE


# --- the view -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fragment:
    """A piece of a snippet; ``marked`` pieces are the terms that tagged the story."""

    text: str
    marked: bool = False


@dataclass(frozen=True)
class Story:
    article_id: int
    title: str
    url: str | None  # None when the link is not http(s): never made clickable
    source: str
    published: datetime | None  # in the analysts' time zone
    rtl: bool
    topic: str  # the section it is shown in
    score: float
    topics: tuple[str, ...]  # every topic it carries, its section's first
    snippet: tuple[Fragment, ...]
    terms: tuple[str, ...]
    places: tuple[str, ...]
    also_reported_by: tuple[str, ...]
    source_label: str | None = None  # "state media", "official"...: how to weigh the source
    language: str | None = None  # the article's primary language subtag ("ar", "fa"), when known
    # The day, in the analysts' time zone, on which `marsad articles list --topic <section>` lists
    # the story: its first article carrying the section's topic (published, else first seen).
    listed_on: date | None = None

    @property
    def plain_snippet(self) -> str:
        return "".join(f"*{p.text}*" if p.marked else p.text for p in self.snippet)

    @property
    def relevance(self) -> float:
        return self.score + OUTLET_BONUS * min(len(self.also_reported_by), OUTLET_BONUS_MAX)


@dataclass(frozen=True)
class Section:
    topic: str
    label: str
    colour: str
    stories: tuple[Story, ...]  # the most relevant first, at most digest_max_stories
    rest: tuple[Story, ...] = ()  # the section's other stories, listed one line each
    more_command: str = ""  # a `marsad articles list` line that lists every story in ``rest``

    @property
    def more(self) -> int:
        """Stories of the section not shown in full."""
        return len(self.rest)

    @property
    def listed(self) -> tuple[Story, ...]:
        """The first of ``rest``, named one line each below the section."""
        return self.rest[:MORE_LISTED]

    @property
    def total(self) -> int:
        return len(self.stories) + self.more


@dataclass(frozen=True)
class TrendBar:
    """One topic's articles on the digest's day against the days before it, counted as
    ``marsad trends --by day`` counts them (publication day, else first seen, in the analysts'
    time zone; every article, copies of one story too)."""

    topic: str
    label: str
    colour: str
    today: int  # articles of the digest's day (so far, when the day is not over)
    avg7: float  # daily mean over the 7 days before it
    avg28: float  # daily mean over the 28 days before it

    def width(self, value: float, scale: float) -> int:
        """Bar width in percent of the widest bar of the strip (at least 1 for a non-zero value)."""
        if scale <= 0 or value <= 0:
            return 0
        return max(1, round(100 * value / scale))


@dataclass(frozen=True)
class Spike:
    """A topic unusually high today against its recent daily baseline (``marsad trends --spikes``)."""

    topic: str
    label: str
    count: int
    baseline: float
    z: float | None


@dataclass(frozen=True)
class DigestView:
    day: date
    period_start: datetime
    period_end: datetime
    timezone: str
    topics: tuple[str, ...]
    sections: tuple[Section, ...]
    trends: tuple[TrendBar, ...]
    health: FeedHealth
    article_ids: tuple[int, ...]  # every article this digest carries, shown or not
    late_copies: int = 0  # copies of stories sent in an earlier digest: carried, not shown again
    spikes: tuple[Spike, ...] = ()
    alert: Spike | None = None  # set on a spike alert, sent at once rather than with the digest

    @property
    def trend_day_partial(self) -> bool:
        """The digest's day was not over when it was built: its trend counts are "so far"."""
        return self.period_end.date() <= self.day

    def spike(self, topic: str) -> Spike | None:
        return next((s for s in self.spikes if s.topic == topic), None)

    @property
    def story_count(self) -> int:
        return sum(section.total for section in self.sections)

    @property
    def is_empty(self) -> bool:
        return self.story_count == 0

    @property
    def trend_scale(self) -> float:
        return max((max(t.today, t.avg7, t.avg28) for t in self.trends), default=0.0)

    def subject(self) -> str:
        """Dates and counts only: no fetched text ever reaches a header."""
        day = f"{self.day:%a} {self.day.day} {self.day:%b %Y}"
        if self.alert is not None:
            return (
                f"Marsad alert, {self.day.day} {self.day:%b}: {SHORT_LABELS[self.alert.topic]} spike, "
                f"{self.alert.count} articles today (usually {self.alert.baseline:.1f})"
            )
        if self.is_empty:
            return f"Marsad digest, {day}: nothing new"
        counts = ", ".join(
            f"{SHORT_LABELS[s.topic]} {s.total}" for s in self.sections if s.total
        )
        plural = "story" if self.story_count == 1 else "stories"
        return f"Marsad digest, {day}: {self.story_count} {plural} ({counts})"


# --- reading the database -----------------------------------------------------------------------


# Independent outlets, the common case, carry no label.
SOURCE_LABELS = {"state": "state media", "official": "official", "wire": "wire", "research": "research"}


@dataclass
class _Candidate:
    article: Article
    source: str
    scores: dict[str, float] = field(default_factory=dict)
    source_label: str | None = None


def build_view(
    session: Session,
    *,
    recipient: str,
    topics: Sequence[str],
    day: date,
    period_start: datetime,
    period_end: datetime,
    tz: ZoneInfo,
    health: FeedHealth,
    max_stories: int,
    spikes: Sequence[Spike] = (),
    alert: Spike | None = None,
) -> DigestView:
    """What arrived in ``[period_start, period_end)`` (with a short look-back) carrying one of
    ``topics`` and not carried by an earlier digest of ``recipient``, as a digest view."""
    topics = tuple(t for t in TOPICS if t in topics)
    sources, labels = {}, {}
    for feed_id, name, url, source_type in session.execute(
        select(Feed.id, Feed.name, Feed.url, Feed.source_type)
    ):
        sources[feed_id] = name or url
        if source_type in SOURCE_LABELS:
            labels[feed_id] = SOURCE_LABELS[source_type]
    carried = (
        select(DigestItem.article_id)
        .join(Digest, Digest.id == DigestItem.digest_id)
        .where(Digest.recipient == recipient, Digest.kind == DAILY)
    )
    arrived = func.coalesce(Article.fetched_at, Article.discovered_at)
    articles = session.scalars(
        select(Article)
        .where(
            Article.id.in_(select(ArticleTag.article_id).where(ArticleTag.topic.in_(topics))),
            arrived >= period_start - LOOKBACK,
            arrived < period_end,
            Article.id.not_in(carried),
        )
        .options(selectinload(Article.tags))
        .order_by(Article.id)
    ).all()

    clusters: dict[int, list[_Candidate]] = defaultdict(list)
    for article in articles:
        candidate = _Candidate(article, _source(article, sources), source_label=labels.get(article.feed_id))
        candidate.scores = {t.topic: t.score for t in article.tags if t.topic in topics}
        clusters[article.cluster_id or article.id].append(candidate)

    already_sent = set(
        session.scalars(
            select(Article.cluster_id)
            .where(Article.id.in_(carried), Article.cluster_id.in_(list(clusters)))
            .distinct()
        )
    ) if clusters else set()
    outlets = _cluster_outlets(session, [c for c in clusters if c not in already_sent], sources)

    by_topic: dict[str, list[Story]] = defaultdict(list)
    late_copies = 0
    for cluster_id, members in clusters.items():
        if cluster_id in already_sent:
            late_copies += len(members)
            continue
        lead = min(members, key=lambda c: (_story_time(c.article), c.article.id))
        scores = dict(lead.scores)
        for member in members:  # a copy may carry a topic its lead missed
            for topic, score in member.scores.items():
                scores[topic] = max(score, scores.get(topic, 0.0))
        topic = max(scores, key=lambda t: (scores[t], -TOPICS.index(t)))
        also = tuple(name for name in outlets.get(cluster_id, ()) if name != lead.source)
        # `articles list --topic` finds the story through its first article carrying the topic.
        listed = min(
            (m for m in members if topic in m.scores), key=lambda c: (_story_time(c.article), c.article.id)
        )
        story = _story(lead, topic, scores, also, tz, listed.article.story_at or _story_time(listed.article))
        by_topic[topic].append(story)

    sections = []
    for topic in topics:
        stories = sorted(
            by_topic.get(topic, ()),
            key=lambda s: (-s.relevance, -(s.published.timestamp() if s.published else 0), s.article_id),
        )
        rest = tuple(stories[max_stories:])
        sections.append(
            Section(
                topic,
                TOPIC_LABELS[topic],
                TOPIC_COLOURS[topic],
                tuple(stories[:max_stories]),
                rest,
                more_command(session, topic, rest, tz),
            )
        )
    return DigestView(
        day=day,
        period_start=period_start.astimezone(tz),
        period_end=period_end.astimezone(tz),
        timezone=str(tz),
        topics=topics,
        sections=tuple(sections),
        trends=trend_bars(session, topics, day, tz),
        health=health,
        article_ids=tuple(a.id for a in articles),
        late_copies=late_copies,
        spikes=tuple(spike for spike in spikes if spike.topic in topics),
        alert=alert,
    )


def _source(article: Article, sources: dict[int, str]) -> str:
    if article.feed_id is not None and article.feed_id in sources:
        return sources[article.feed_id]
    return article.site_name or _host(article.canonical_url)


def _host(url: str) -> str:
    return url.split("//", 1)[-1].split("/", 1)[0]


def _story_time(article: Article) -> datetime:
    return article.published_at or article.discovered_at


def _cluster_outlets(
    session: Session, cluster_ids: Sequence[int], sources: dict[int, str]
) -> dict[int, tuple[str, ...]]:
    """Every outlet that carried each story, in order of publication."""
    if not cluster_ids:
        return {}
    out: dict[int, dict[str, None]] = defaultdict(dict)
    rows = session.execute(
        select(Article.cluster_id, Article.feed_id, Article.site_name, Article.canonical_url)
        .where(Article.cluster_id.in_(cluster_ids))
        .order_by(Article.story_at, Article.id)
    )
    for cluster_id, feed_id, site_name, url in rows:
        name = sources.get(feed_id) if feed_id is not None else None
        out[cluster_id].setdefault(name or site_name or _host(url))
    return {cluster_id: tuple(names) for cluster_id, names in out.items()}


def more_command(session: Session, topic: str, rest: Sequence[Story], tz: ZoneInfo) -> str:
    """A `marsad articles list` line whose output includes every story of ``rest``: the section's
    topic over the days (in ``tz``, as --since and --until read them) on which they were published,
    with --limit when the default screenful would cut the list short."""
    days = [s.listed_on for s in rest if s.listed_on is not None]
    if not days:
        return ""
    first, last = min(days), max(days)
    command = f"marsad articles list --topic {topic} --since {first.isoformat()} --until {last.isoformat()}"
    lo, hi = local_midnight(first, tz), local_midnight(last + timedelta(days=1), tz)
    listed = session.scalar(
        select(func.count())
        .select_from(ArticleTag)
        .where(ArticleTag.topic == topic, ArticleTag.story_at >= lo, ArticleTag.story_at < hi)
    ) or 0
    if listed > ARTICLES_LIST_DEFAULT_LIMIT:
        command += f" --limit {listed}"
    return command


def _language(value: str | None) -> str | None:
    """The primary subtag of a stored language code, when it is one (it comes from the page)."""
    primary = (value or "").strip().lower().replace("_", "-").split("-")[0]
    return primary if _LANGUAGE_TAG.match(primary) else None


def _story(
    lead: _Candidate,
    topic: str,
    scores: dict[str, float],
    also: tuple[str, ...],
    tz: ZoneInfo,
    listed_at: datetime | None = None,
) -> Story:
    article = lead.article
    language = _language(article.language)
    text = article.text or article.summary or ""
    tags = {t.topic: t for t in article.tags if t.topic in scores}
    spans = sorted(
        {
            (e["start"], e["end"])
            for t in tags.values()
            for e in (t.evidence or [])
            if e.get("field") == "text" and _valid_span(e, len(text))
        }
    )
    primary = [
        (e["start"], e["end"])
        for e in (tags[topic].evidence or [] if topic in tags else [])
        if e.get("field") == "text" and _valid_span(e, len(text))
    ]
    terms = _surfaces(
        [tags[topic], *(t for name, t in tags.items() if name != topic)] if topic in tags else [],
        {"title": article.title or "", "text": text},
    )
    url = article.url if _SAFE_URL.match(article.url or "") else None
    others = sorted((t for t in scores if t != topic), key=lambda t: -scores[t])
    return Story(
        article_id=article.id,
        title=" ".join((article.title or _host(article.canonical_url)).split()),
        url=url,
        source=lead.source,
        published=article.published_at.astimezone(tz) if article.published_at else None,
        rtl=language in RTL_LANGUAGES,
        topic=topic,
        score=scores[topic],
        topics=(topic, *others),
        snippet=snippet(text, spans, primary[0] if primary else None),
        terms=terms,
        places=tuple(article.places or ())[:6],
        also_reported_by=also,
        source_label=lead.source_label,
        language=language,
        listed_on=listed_at.astimezone(tz).date() if listed_at else None,
    )


def _surfaces(tags: Sequence[ArticleTag], fields: dict[str, str]) -> tuple[str, ...]:
    """The words that tagged the story as the article writes them ("Daesh", "داعش"), not the
    taxonomy's labels; the section's own topic first, repeats and case variants once."""
    seen: dict[str, str] = {}
    for tag in tags:
        for evidence in tag.evidence or ():
            field_text = fields.get(str(evidence.get("field")), "")
            if _valid_span(evidence, len(field_text)):
                surface = _WHITESPACE.sub(" ", field_text[evidence["start"] : evidence["end"]])
                seen.setdefault(surface.casefold(), surface)
            if len(seen) >= MAX_TERMS:
                return tuple(seen.values())
    return tuple(seen.values())


def _valid_span(evidence: dict[str, Any], length: int) -> bool:
    start, end = evidence.get("start"), evidence.get("end")
    return isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= length


def snippet(
    text: str, spans: Sequence[tuple[int, int]], focus: tuple[int, int] | None
) -> tuple[Fragment, ...]:
    """A short passage of ``text`` around ``focus`` (the first term that tagged the story), cut at
    word boundaries, with every evidence span inside it marked."""
    if not text:
        return ()
    if focus is None:
        lo, hi = 0, min(len(text), PLAIN_SNIPPET)
    else:
        lo, hi = max(0, focus[0] - SNIPPET_BEFORE), min(len(text), focus[1] + SNIPPET_AFTER)
    if lo > 0:
        space = text.find(" ", lo, focus[0] if focus else hi)
        lo = space + 1 if space != -1 else lo
    if hi < len(text):
        space = text.rfind(" ", focus[1] if focus else lo, hi)
        hi = space if space != -1 else hi
    pieces: list[Fragment] = [Fragment("… ")] if lo > 0 else []
    cursor = lo
    for start, end in spans:
        if start < cursor or end > hi:
            continue
        if start > cursor:
            pieces.append(Fragment(text[cursor:start]))
        pieces.append(Fragment(text[start:end], marked=True))
        cursor = end
    if cursor < hi:
        pieces.append(Fragment(text[cursor:hi]))
    if hi < len(text):
        pieces.append(Fragment(" …"))
    return tuple(Fragment(_WHITESPACE.sub(" ", p.text), p.marked) for p in pieces)


def trend_bars(session: Session, topics: Sequence[str], day: date, tz: ZoneInfo) -> tuple[TrendBar, ...]:
    """Per topic: articles of ``day`` (a calendar day in ``tz``) against the daily means of the 7
    and 28 days before it, counted by :func:`marsad.trends.trends` as ``marsad trends`` counts."""
    if not topics:
        return ()
    rows = trends(session, topics=topics, by="day", since=day - timedelta(days=28), until=day, tz=tz)
    counts = {(row["period"], row["topic"]): row["count"] for row in rows}

    def before(topic: str, days: int) -> int:
        return sum(counts.get((day - timedelta(days=n), topic), 0) for n in range(1, days + 1))

    return tuple(
        TrendBar(
            topic,
            TOPIC_LABELS[topic],
            TOPIC_COLOURS[topic],
            counts.get((day, topic), 0),
            round(before(topic, 7) / 7, 1),
            round(before(topic, 28) / 28, 1),
        )
        for topic in topics
    )


# --- rendering ----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _environment() -> tuple[Environment, Environment]:
    loader = PackageLoader("marsad", "templates")
    common: dict[str, Any] = {
        "loader": loader,
        "undefined": StrictUndefined,
        "trim_blocks": True,
        "lstrip_blocks": True,
        "keep_trailing_newline": True,
    }
    html = Environment(autoescape=select_autoescape(["html"], default=True), **common)
    # The plain-text part is not HTML: escaping would show "&amp;" to the reader.
    text = Environment(autoescape=False, **common)
    text.filters["wrap"] = _wrap
    text.filters["isolate"] = isolate
    for env in (html, text):
        env.filters["when"] = _format_when
        env.filters["short_day"] = _format_short_day
        env.globals["SHORT_LABELS"] = SHORT_LABELS
    return html, text


def isolate(value: str) -> str:
    """``value`` between Unicode bidi isolates when it holds right-to-left text, so that in a
    plain-text line it reads as one unit and the separators and dates around it keep their order
    ("⁨الجسر⁩ · 13 Mar 2026", not the date's day pulled next to the name). HTML uses <bdi>."""
    return f"{FSI}{value}{PDI}" if _RTL_CHAR.search(value) else value


_ISOLATED = re.compile(f"{FSI}[^{PDI}]*{PDI}")
_GLUE = "\ue000"  # a private-use character: stands for the spaces inside an isolate while wrapping


def _wrap(value: str, indent: int = 2) -> str:
    """Lines of at most 76 characters; never broken inside an isolate (a break would end it)."""
    pad = " " * indent
    glued = _ISOLATED.sub(lambda m: m.group().replace(" ", _GLUE), value.replace(_GLUE, " "))
    return textwrap.fill(
        glued, width=76, initial_indent=pad, subsequent_indent=pad, break_long_words=False, break_on_hyphens=False
    ).replace(_GLUE, " ")


def _format_when(value: datetime | None) -> str:
    return f"{value:%d %b %Y, %H:%M}" if value else "undated"


def _format_short_day(value: datetime | date | None) -> str:
    return f"{value.day} {value:%b}" if value else "undated"


def render_html(view: DigestView) -> str:
    return _environment()[0].get_template("digest.html").render(view=view)


def render_text(view: DigestView) -> str:
    return _environment()[1].get_template("digest.txt").render(view=view)


def check_address(value: str) -> str:
    """A bare e-mail address, or InputError: nothing that could add a header line or a second
    recipient gets through."""
    if any(c in value for c in "\r\n\x00,;<>\"") or not value.strip():
        raise InputError(f"not a plain e-mail address: {value!r}")
    try:
        address = Address(addr_spec=value.strip())
    except (ValueError, IndexError, HeaderParseError) as exc:
        raise InputError(f"not a plain e-mail address: {value!r} ({exc})") from None
    if not address.username or not address.domain:
        raise InputError(f"not a plain e-mail address: {value!r}")
    return address.addr_spec


# RFC 5322 allows 998 characters a line. Folding at 78 made Python move a whole Subject onto a
# continuation line, which readers then show with a leading space.
_POLICY = SMTP.clone(max_line_length=998)


def render(
    view: DigestView, *, sender: str, recipient: str, message_id: str, when: datetime | None = None
) -> EmailMessage:
    """The digest as a multipart message: plain text and its HTML alternative."""
    message = EmailMessage(policy=_POLICY)
    message["From"] = Address("Marsad", addr_spec=check_address(sender))
    message["To"] = check_address(recipient)
    message["Subject"] = view.subject()
    message["Date"] = format_datetime(when or datetime.now(timezone.utc))
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    message.set_content(render_text(view))
    message.add_alternative(render_html(view), subtype="html")
    return message
