"""Full-text search over article titles and texts, in English and Arabic, on SQLite and PostgreSQL.

The index lives in the database and follows every write to ``articles`` by itself (migration
0006): on SQLite an FTS5 table kept in step by triggers, on PostgreSQL a generated ``tsvector``
column with a GIN index. Ingest, extraction and retag need no code for it.

Queries are read as PostgreSQL's ``websearch_to_tsquery`` reads them: words and ``"quoted
phrases"`` (all must occur), ``-word`` or ``-"a phrase"`` to exclude, and ``OR`` between
alternatives (``isis raid OR daesh attack``: both of the first two words, or both of the last two).
Every other character is only a word separator, and ``AND``, ``NOT`` and ``NEAR`` are words: there
is no prefix search (``*``), no column filter, no grouping with parentheses. The query is parsed here once and handed to the
database as a bound value (an FTS5 expression of quoted strings, or a canonical websearch text),
so nothing the user types reaches SQL and no input can cause a query syntax error.

Both the index and the queries fold Arabic spelling variants (``fold_arabic``): أ إ آ ٱ -> ا,
ة -> ه, ى ئ -> ي, ؤ -> و; harakat, tatweel and invisible characters are removed. Case is folded
everywhere; Latin accents on SQLite only (``unicode61 remove_diacritics 2``). English articles are
stemmed on PostgreSQL only (``fighter`` finds ``fighters``), where English stop words (the, and,
of) are also ignored in English articles; SQLite matches every word as written.

Ranking: the relevance of the match, with a title match above a match in the text (bm25 with the
title weighted on SQLite; ``ts_rank_cd`` with title weight A and text weight B on PostgreSQL),
then the newest story first. Relevance figures differ between the backends; the order of clearly
different matches does not.

Snippets come from the article's text (its title when it has no text): an excerpt around the best
match, one line, with matched words between ``MARK_START`` and ``MARK_END`` (``⟦word⟧``; not «»,
which Arabic news uses as quotation marks) and "…" where text was cut. They are computed for the
page of results only. The database highlights the folded text; the excerpt is then mapped back
onto the original so that Arabic words keep their spelling and diacritics.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    case,
    column,
    func,
    literal_column,
    or_,
    select,
    table,
)
from sqlalchemy.dialects.postgresql import REGCONFIG, TSQUERY, TSVECTOR
from sqlalchemy.orm import Session
from sqlalchemy.types import Float, Integer, Text

from marsad.errors import InputError
from models import Article, ArticleTag

MARK_START = "⟦"
MARK_END = "⟧"
ELLIPSIS = "…"

MAX_QUERY_CHARS = 1000
MAX_QUERY_TERMS = 32
MAX_LIMIT = 1000
SNIPPET_TOKENS = 30
INDEXED_CHARS = 100_000  # of a title or text (migration 0006)

# The folding applied by migration 0006 to the indexed text (keep the two identical; the tests
# compare them). Letter variants map one character to one; the marks are removed.
_LETTER_FOLD = {
    "\u0623": "\u0627", "\u0625": "\u0627", "\u0622": "\u0627", "\u0671": "\u0627",
    "\u0672": "\u0627", "\u0673": "\u0627",  # alef forms -> ا
    "\u0629": "\u0647",  # ة -> ه
    "\u0649": "\u064a", "\u06cc": "\u064a", "\u0626": "\u064a",  # ى ی ئ -> ي
    "\u0624": "\u0648",  # ؤ -> و
    "\u06a9": "\u0643",  # ک -> ك
}  # fmt: skip
_DELETE_RANGES = (
    (0x0610, 0x061A), (0x064B, 0x065F), (0x0670, 0x0670), (0x06D6, 0x06DC), (0x06DF, 0x06E8),
    (0x06EA, 0x06ED), (0x0640, 0x0640),  # harakat, Quranic marks, superscript alef, tatweel
    (0x00AD, 0x00AD), (0x200B, 0x200D), (0x2060, 0x2060), (0xFEFF, 0xFEFF),  # invisible
)  # fmt: skip
_DELETED = frozenset(chr(c) for lo, hi in _DELETE_RANGES for c in range(lo, hi + 1))
_FOLD_TABLE = str.maketrans({**_LETTER_FOLD, **dict.fromkeys(_DELETED)})

# Where the database marks matches in the folded text: control characters that stored text never
# contains (marsad.text.scrub removes them), mapped to MARK_START / MARK_END afterwards.
_DB_START = "\x02"
_DB_END = "\x03"
_POSTGRES_HEADLINE = (
    f"StartSel={_DB_START}, StopSel={_DB_END}, MaxWords={SNIPPET_TOKENS}, MinWords=12, "
    "ShortWord=2, HighlightAll=false, MaxFragments=0"
)
# A match in the title counts as much as about five in the text: bm25's column weights (title,
# text) on SQLite, ts_rank_cd's weights for D, C, B (text) and A (title) labels on PostgreSQL.
_TITLE_WEIGHT_SQLITE = 5.0
_RANK_WEIGHTS_POSTGRES = "{0.1, 0.2, 0.2, 1.0}"


def fold_arabic(text: str) -> str:
    """Fold Arabic spelling variants as the search index does (see the module docstring)."""
    return text.translate(_FOLD_TABLE)


@dataclass(frozen=True)
class SearchHit:
    id: int
    url: str  # the canonical URL
    title: str | None
    published_at: datetime | None
    topics: list[str]
    snippet: str  # plain text, one line, matches between MARK_START and MARK_END


# Queries ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clause:
    """One alternative of a query: every item in ``required``, none of ``excluded``.

    An item is a word or a phrase (words that must follow each other), already folded.
    """

    required: tuple[str, ...]
    excluded: tuple[str, ...] = ()


@dataclass(frozen=True)
class Query:
    """A parsed query: an article matches when it matches any of the ``clauses``."""

    clauses: tuple[Clause, ...]

    def fts5(self) -> str:
        """The query in FTS5 syntax: every item an FTS5 string, so its characters are literal."""

        def joined(items: Sequence[str], operator: str) -> str:
            quoted = ('"' + item.replace('"', '""') + '"' for item in items)
            return "(" + f" {operator} ".join(quoted) + ")"

        alternatives = []
        for clause in self.clauses:
            expression = joined(clause.required, "AND")
            if clause.excluded:
                expression = f"({expression} NOT {joined(clause.excluded, 'OR')})"
            alternatives.append(expression)
        return " OR ".join(alternatives)

    def websearch(self) -> str:
        """The query as a canonical ``websearch_to_tsquery`` text: every item quoted."""
        return " or ".join(
            " ".join([*(f'"{item}"' for item in clause.required),
                      *(f'-"{item}"' for item in clause.excluded)])
            for clause in self.clauses
        )  # fmt: skip


_SPACE_LIKE = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")


def parse_query(text: str) -> Query:
    """Read a user's query; raise InputError when it has nothing to look for or is too long.

    The syntax of ``websearch_to_tsquery``: words and ``"quoted phrases"`` must all occur;
    ``-word`` and ``-"a phrase"`` must not; ``OR`` (any case) separates alternatives, so
    ``isis raid OR daesh attack`` finds articles with "isis" and "raid", or "daesh" and "attack".
    """
    if len(text) > MAX_QUERY_CHARS:
        raise InputError(
            f"search query too long: {len(text)} characters (at most {MAX_QUERY_CHARS})"
        )
    # Control characters and unpaired surrogates cannot be stored or sent: they separate words.
    text = "".join(" " if unicodedata.category(c) == "Cs" else c for c in text)
    text = _SPACE_LIKE.sub(" ", text)
    alternatives: list[tuple[list[str], list[str]]] = [([], [])]
    position = 0
    while position < len(text):
        if text[position] == " ":
            position += 1
            continue
        negated = text[position] == "-" and text[position + 1 : position + 2] not in ("", " ")
        if negated:
            position += 1
        if text[position] == '"':
            end = text.find('"', position + 1)
            end = len(text) if end < 0 else end
            value, position = text[position + 1 : end], end + 1
        else:
            end = position
            while end < len(text) and text[end] not in ' "':
                end += 1
            value, position = text[position:end], end
            if not negated and value.lower() == "or":
                if alternatives[-1] != ([], []):
                    alternatives.append(([], []))
                continue
        value = " ".join(fold_arabic(value).split())
        # An item needs a letter or digit: punctuation alone would be an empty phrase.
        if any(c.isalnum() for c in value):
            alternatives[-1][1 if negated else 0].append(value)
    clauses = [Clause(tuple(required), tuple(excluded)) for required, excluded in alternatives]
    clauses = [clause for clause in clauses if clause.required or clause.excluded]
    if not clauses:
        raise InputError("the search query has no words to look for (give letters or digits)")
    if any(not clause.required for clause in clauses):
        where = "the search query" if len(clauses) == 1 else "an alternative (between ORs)"
        raise InputError(f"{where} only excludes words: give at least one word to look for")
    terms = sum(len(clause.required) + len(clause.excluded) for clause in clauses)
    if terms > MAX_QUERY_TERMS:
        raise InputError(
            f"search query has too many words or phrases: {terms} (at most {MAX_QUERY_TERMS})"
        )
    return Query(tuple(clauses))


# Searching -------------------------------------------------------------------------------------


def search(
    session: Session,
    query: str,
    *,
    topic: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 20,
) -> list[SearchHit]:
    """Articles matching ``query``, most relevant first, then newest.

    ``topic`` keeps articles tagged with it; ``since`` (inclusive) and ``until`` (exclusive) are
    time-zone aware and apply to the publication time, or the time first seen when undated.
    Raises InputError for a query with no words, a too long one, naive datetimes or a bad limit.
    """
    parsed = parse_query(query)
    if not 1 <= limit <= MAX_LIMIT:
        raise InputError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InputError(f"{name} needs a time zone: {value.isoformat()}")
    filters = _filters(topic, since, until)
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        page, fragments = _search_sqlite(session, parsed, filters, limit)
    elif dialect == "postgresql":
        page, fragments = _search_postgresql(session, parsed, filters, limit)
    else:
        raise InputError(f"unsupported database dialect {dialect!r}: use SQLite or PostgreSQL")
    if not page:
        return []
    ids = [row.id for row in page]
    topics: dict[int, list[str]] = {article_id: [] for article_id in ids}
    for article_id, name in session.execute(
        select(ArticleTag.article_id, ArticleTag.topic)
        .where(ArticleTag.article_id.in_(ids))
        .order_by(ArticleTag.topic)
    ):
        topics[article_id].append(name)
    return [
        SearchHit(
            id=row.id,
            url=row.canonical_url,
            title=row.title,
            published_at=row.published_at,
            topics=topics[row.id],
            snippet=_snippet(row.text or row.title or "", fragments.get(row.id)),
        )
        for row in page
    ]


def _filters(
    topic: str | None, since: datetime | None, until: datetime | None
) -> list[ColumnElement[bool]]:
    story_time = Article.story_at
    filters: list[ColumnElement[bool]] = []
    if topic:
        filters.append(
            Article.id.in_(select(ArticleTag.article_id).where(ArticleTag.topic == topic))
        )
    if since is not None:
        filters.append(story_time >= since)
    if until is not None:
        filters.append(story_time < until)
    return filters


def _page_columns() -> list[Any]:
    return [Article.id, Article.canonical_url, Article.title, Article.published_at, Article.text]


def _newest_first() -> list[Any]:
    return [Article.story_at.desc(), Article.id.desc()]


def _search_sqlite(
    session: Session, query: Query, filters: list[ColumnElement[bool]], limit: int
) -> tuple[Sequence[Any], dict[int, str]]:
    fts_table = table("articles_fts", column("rowid", Integer))
    fts = literal_column("articles_fts")
    rowid = fts_table.c.rowid
    match = fts.op("MATCH")(bindparam("fts_query", query.fts5(), type_=Text))
    # bm25 is lower for better matches.
    rank = func.bm25(fts, _TITLE_WEIGHT_SQLITE, 1.0).label("rank")
    page = session.execute(
        select(*_page_columns(), rank)
        .select_from(Article)
        .join(fts_table, rowid == Article.id)
        .where(match, *filters)
        .order_by(rank, *_newest_first())
        .limit(limit)
    ).all()
    if not page:
        return page, {}
    # snippet() in a second query, for the page only: the first computes no excerpt it drops.
    no_text = or_(Article.text.is_(None), Article.text == "")
    field = case((no_text, 0), else_=1)
    snippet = func.snippet(fts, field, _DB_START, _DB_END, "", SNIPPET_TOKENS)
    fragments = session.execute(
        select(Article.id, snippet)
        .select_from(Article)
        .join(fts_table, rowid == Article.id)
        .where(match, Article.id.in_([row.id for row in page]))
    ).all()
    return page, {article_id: fragment for article_id, fragment in fragments}


def _search_postgresql(
    session: Session, query: Query, filters: list[ColumnElement[bool]], limit: int
) -> tuple[Sequence[Any], dict[int, str]]:
    vector = literal_column("articles.search_vector", TSVECTOR)
    config = func.marsad_search_config(Article.language, type_=REGCONFIG)
    english = literal_column("'pg_catalog.english'::regconfig", REGCONFIG)
    simple = literal_column("'pg_catalog.simple'::regconfig", REGCONFIG)
    words = bindparam("websearch", query.websearch(), type_=Text)
    # English articles are indexed with stems, the others word for word: each is searched with
    # the query read the same way. Two conditions on the same GIN index (a BitmapOr).
    english_query = func.websearch_to_tsquery(english, words, type_=TSQUERY)
    simple_query = func.websearch_to_tsquery(simple, words, type_=TSQUERY)
    is_english = config == english
    match = or_(
        and_(vector.op("@@")(english_query), is_english),
        and_(vector.op("@@")(simple_query), ~is_english),
    )
    article_query = case((is_english, english_query), else_=simple_query)
    weights = literal_column(f"'{_RANK_WEIGHTS_POSTGRES}'::float4[]")
    rank = func.ts_rank_cd(weights, vector, article_query, type_=Float).label("rank")
    page = session.execute(
        select(*_page_columns(), rank)
        .where(match, *filters)
        .order_by(rank.desc(), *_newest_first())
        .limit(limit)
    ).all()
    if not page:
        return page, {}
    # ts_headline re-parses the document: only for the page shown, in a second query.
    document = func.marsad_fold_arabic(
        func.left(func.coalesce(func.nullif(Article.text, ""), Article.title, ""), INDEXED_CHARS)
    )
    headline = func.ts_headline(config, document, article_query, _POSTGRES_HEADLINE, type_=Text)
    fragments = session.execute(
        select(Article.id, headline).where(Article.id.in_([row.id for row in page]))
    ).all()
    return page, {article_id: fragment for article_id, fragment in fragments}


# Snippets --------------------------------------------------------------------------------------


def _snippet(original: str, fragment: str | None) -> str:
    """The database's excerpt of the folded text, marked, mapped back onto ``original``."""
    if not fragment:
        return ""
    plain = fragment.replace(_DB_START, "").replace(_DB_END, "")
    original = original[:INDEXED_CHARS]
    folded_text = fold_arabic(original)
    # origin[i]: where folded character i is in ``original``. Letters fold one to one, so only
    # texts with removed marks (harakat, tatweel) need the walk.
    origin: Sequence[int] = range(len(original))
    if len(folded_text) != len(original):
        origin = [index for index, char in enumerate(original) if char not in _DELETED]
    start = folded_text.find(plain) if plain else -1
    if start < 0:  # not expected; show the database's excerpt of the folded text as it is
        return _one_line(fragment.replace(_DB_START, MARK_START).replace(_DB_END, MARK_END))

    def at(position: int) -> int:
        # A boundary in the folded text, in the original: removed marks (harakat, tatweel)
        # stay with the character before them.
        return origin[position] if position < len(origin) else len(original)

    pieces: list[str] = []
    position, copied = start, at(start)
    for piece in re.split(f"([{_DB_START}{_DB_END}])", fragment):
        if piece in (_DB_START, _DB_END):
            boundary = at(position)
            pieces += [original[copied:boundary], MARK_START if piece == _DB_START else MARK_END]
            copied = boundary
        else:
            position += len(piece)
    end = at(start + len(plain))
    pieces.append(original[copied:end])
    text = _one_line("".join(pieces))
    if original[: at(start)].strip():
        text = ELLIPSIS + text
    if original[end:].strip():
        text += ELLIPSIS
    return text


def _one_line(text: str) -> str:
    return " ".join(text.split())
