"""Full-text search over article titles and texts, in English and Arabic, on SQLite and PostgreSQL.

The index lives in the database and follows every write to ``articles`` by itself (migration
0006): on SQLite an FTS5 table kept in step by triggers, on PostgreSQL a generated ``tsvector``
column with a GIN index. Ingest, extraction and retag need no code for it.

Queries are read as PostgreSQL's ``websearch_to_tsquery`` reads them: words and ``"quoted
phrases"`` (all must occur), ``-word`` or ``-"a phrase"`` to exclude, and ``OR`` between
alternatives (``isis raid OR daesh attack``: both of the first two words, or both of the last two).
Every other character is only a word separator, and ``AND``, ``NOT`` and ``NEAR`` are words: there
is no prefix search (``*``), no column filter, no grouping with parentheses. The query is parsed
here once and handed to the database as bound values (an FTS5 expression of quoted strings, or one
websearch text of quoted words per item), so nothing the user types reaches SQL and no input can
cause a query syntax error.

Both the index and the queries fold Arabic spelling variants (``fold_arabic``): أ إ آ ٱ -> ا,
ة -> ه, ى ئ -> ي, ؤ -> و; harakat, tatweel and invisible characters are removed.

Arabic writes the article and some particles as prefixes of the word (``والعراق``: "and Iraq",
``للجيش``: "for the army"). A single Arabic word in a query therefore also matches the word with
those prefixes, and without them (``arabic_forms``): ``سوريا`` finds ``وسوريا``, ``عراق`` finds
``العراق`` and ``والعراق``, ``والعراق`` finds ``عراق``. The query is expanded, not the index: each
such word becomes an OR of its forms, which the same whole-word index answers on both backends
(PostgreSQL's ``arabic`` configuration would stem suffixes too, which SQLite cannot follow). A
prefix is taken off only when at least ``MIN_STEM`` letters remain, and only the longest prefix the
word starts with, so ``الله`` never finds ``له``, nor ``والي`` ``إلى``. Quoted phrases of several
words match as written (folded): a phrase cannot hold alternatives in FTS5. Case is folded
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
from functools import lru_cache
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
    true,
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
# Whether a text has anything to fold: most have not, and a search is faster than translate().
_FOLDABLE = re.compile("[" + re.escape("".join(sorted({*_LETTER_FOLD, *_DELETED}))) + "]")

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
    return text.translate(_FOLD_TABLE) if _FOLDABLE.search(text) else text


# Prefixes Arabic attaches to a word: the conjunctions و and ف, the prepositions ب ل ك, the article
# ال, and their combinations (ل + ال is written لل). Folded spellings, longest first.
CLITIC_PREFIXES = (
    "وبال", "وكال", "ولل", "وال", "فال", "بال", "كال", "لل", "ال", "و", "ف", "ب", "ل", "ك",
)  # fmt: skip
# The shortest word a prefix is added to or left after taking one off: Arabic roots have three
# letters, and shorter remainders (له from الله, م from ألم) are other words or none.
MIN_STEM = 3
_ARABIC_LETTERS = re.compile("[\u0621-\u063a\u0641-\u064a]+")


def arabic_forms(word: str) -> tuple[str, ...]:
    """The forms a query word matches: itself, and for one Arabic word of ``MIN_STEM`` letters or
    more, its stem (the word without the longest prefix it starts with, when ``MIN_STEM`` letters
    remain) and the word and the stem with every prefix.

    ``word`` is folded. Anything but one Arabic word (a phrase, Latin, digits) is returned as it is.
    """
    tokens = re.findall(r"\w+", word)
    if len(tokens) != 1 or not _ARABIC_LETTERS.fullmatch(tokens[0]):
        return (word,)
    token = tokens[0]
    if len(token) < MIN_STEM:
        return (token,)
    stems = [token]
    prefix = next((p for p in CLITIC_PREFIXES if token.startswith(p)), "")
    if prefix and len(token) - len(prefix) >= MIN_STEM:
        stems.append(token[len(prefix) :])
    forms = [
        p + stem
        for stem in stems
        for p in ("", *CLITIC_PREFIXES)
        if not (stem.startswith("ال") and p.endswith(("ال", "لل")))  # no article on an article
    ]
    return tuple(dict.fromkeys(forms))


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
        """The query in FTS5 syntax: every item an FTS5 string, so its characters are literal;
        an Arabic word the OR of its forms (``arabic_forms``)."""

        def item(value: str) -> str:
            forms = ['"' + form.replace('"', '""') + '"' for form in arabic_forms(value)]
            return forms[0] if len(forms) == 1 else "(" + " OR ".join(forms) + ")"

        def joined(items: Sequence[str], operator: str) -> str:
            return "(" + f" {operator} ".join(item(value) for value in items) + ")"

        alternatives = []
        for clause in self.clauses:
            expression = joined(clause.required, "AND")
            if clause.excluded:
                expression = f"({expression} NOT {joined(clause.excluded, 'OR')})"
            alternatives.append(expression)
        return " OR ".join(alternatives)

    @property
    def shape(self) -> tuple[tuple[int, int], ...]:
        """How many required and excluded items each clause has: the form of the SQL."""
        return tuple((len(clause.required), len(clause.excluded)) for clause in self.clauses)

    def websearch_items(self) -> dict[str, str]:
        """Per item, in the order of ``_tsquery``'s parameters: a ``websearch_to_tsquery`` text
        of its forms, every form quoted (``"a" or "b"``), so nothing typed is syntax."""
        items = [value for clause in self.clauses for value in (*clause.required, *clause.excluded)]
        return {
            f"item_{number}": " or ".join(f'"{form}"' for form in arabic_forms(value))
            for number, value in enumerate(items, 1)
        }


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

    One statement, which finds the page of matches and then, for that page alone, their topics
    and the excerpts the database marks (an excerpt re-reads the text: never for a match that is
    not shown).
    """
    parsed = parse_query(query)
    if not 1 <= limit <= MAX_LIMIT:
        raise InputError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InputError(f"{name} needs a time zone: {value.isoformat()}")
    filters = (bool(topic), since is not None, until is not None)
    params: dict[str, Any] = {"topic": topic, "since": since, "until": until, "limit": limit}
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        statement = _sqlite_statement(*filters)
        params["fts_query"] = parsed.fts5()
    elif dialect == "postgresql":
        statement = _postgresql_statement(parsed.shape, *filters)
        params |= parsed.websearch_items()
    else:
        raise InputError(f"unsupported database dialect {dialect!r}: use SQLite or PostgreSQL")
    rows = session.connection().execute(statement, params).all()
    return [
        SearchHit(
            id=row.id,
            url=row.canonical_url,
            title=row.title,
            published_at=row.published_at,
            topics=sorted(row.topics.split(",")) if row.topics else [],
            snippet=_snippet(row.text or row.title or "", row.fragment),
        )
        for row in rows
    ]


def _filters(topic: bool, since: bool, until: bool) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = []
    if topic:
        tagged = select(ArticleTag.article_id).where(ArticleTag.topic == bindparam("topic"))
        filters.append(Article.id.in_(tagged))
    if since:
        filters.append(Article.story_at >= bindparam("since"))
    if until:
        filters.append(Article.story_at < bindparam("until"))
    return filters


def _hit_columns() -> list[Any]:
    topics = (
        select(func.aggregate_strings(ArticleTag.topic, ","))
        .where(ArticleTag.article_id == Article.id)
        .scalar_subquery()
    )
    return [
        Article.id, Article.canonical_url, Article.title, Article.published_at, Article.text,
        topics.label("topics"),
    ]  # fmt: skip


@lru_cache(maxsize=8)
def _sqlite_statement(topic: bool, since: bool, until: bool) -> Any:
    fts_table = table("articles_fts", column("rowid", Integer))
    fts = literal_column("articles_fts")
    match = fts.op("MATCH")(bindparam("fts_query", type_=Text))
    # bm25 is lower for better matches.
    rank = func.bm25(fts, _TITLE_WEIGHT_SQLITE, 1.0).label("rank")
    page = (
        select(Article.id, rank, Article.story_at)
        .select_from(Article)
        .join(fts_table, fts_table.c.rowid == Article.id)
        .where(match, *_filters(topic, since, until))
        .order_by(rank, Article.story_at.desc(), Article.id.desc())
        .limit(bindparam("limit", type_=Integer))
        .subquery("page")
    )
    # SQLite computes every column before sorting: the page is chosen first, and the excerpts
    # (snippet() needs the full-text table matched again) and topics found for its rows only.
    no_text = or_(Article.text.is_(None), Article.text == "")
    field = case((no_text, 0), else_=1)
    fragment = func.snippet(fts, field, _DB_START, _DB_END, "", SNIPPET_TOKENS, type_=Text)
    return (
        select(*_hit_columns(), fragment.label("fragment"))
        .select_from(page)
        .join(Article, Article.id == page.c.id)
        .join(fts_table, fts_table.c.rowid == page.c.id)
        .where(match)
        .order_by(page.c.rank, page.c.story_at.desc(), page.c.id.desc())
    )


@lru_cache(maxsize=64)
def _postgresql_statement(
    shape: tuple[tuple[int, int], ...], topic: bool, since: bool, until: bool
) -> Any:
    vector = literal_column("articles.search_vector", TSVECTOR)
    english = literal_column("'pg_catalog.english'::regconfig", REGCONFIG)
    simple = literal_column("'pg_catalog.simple'::regconfig", REGCONFIG)
    config = func.marsad_search_config(Article.language, type_=REGCONFIG)
    is_english = config == english
    # English articles are indexed with stems, the others word for word: each is searched with
    # the query read the same way. A one-row subquery, which PostgreSQL folds in.
    found = select(
        _tsquery(english, shape).label("english"), _tsquery(simple, shape).label("simple")
    ).subquery("query")
    # Two conditions on the same GIN index (a BitmapOr).
    match = or_(
        and_(vector.op("@@")(found.c.english), is_english),
        and_(vector.op("@@")(found.c.simple), ~is_english),
    )
    article_query = case((is_english, found.c.english), else_=found.c.simple)
    weights = literal_column(f"'{_RANK_WEIGHTS_POSTGRES}'::float4[]")
    rank = func.ts_rank_cd(weights, vector, article_query, type_=Float)
    document = func.marsad_fold_arabic(
        func.left(func.coalesce(func.nullif(Article.text, ""), Article.title, ""), INDEXED_CHARS)
    )
    # ts_headline re-parses the document, and the topics are a subquery: PostgreSQL computes
    # such costly columns after the sort and the limit, for the page's rows only.
    headline = func.ts_headline(config, document, article_query, _POSTGRES_HEADLINE, type_=Text)
    return (
        select(*_hit_columns(), headline.label("fragment"))
        .select_from(Article)
        .join(found, true())
        .where(match, *_filters(topic, since, until))
        .order_by(rank.desc(), Article.story_at.desc(), Article.id.desc())
        .limit(bindparam("limit", type_=Integer))
    )


def _tsquery(config: ColumnElement[Any], shape: tuple[tuple[int, int], ...]) -> ColumnElement[Any]:
    """A query of this ``shape`` as a ``tsquery`` for a text search configuration.

    Each item is read by ``websearch_to_tsquery`` from its parameter (``Query.websearch_items``);
    the items are combined with tsquery_and, tsquery_or and tsquery_not (``&&``, ``||``, ``!!``),
    which leave out an item that the configuration drops entirely (an English stop word).
    """
    numbers = iter(range(1, 1 + sum(required + excluded for required, excluded in shape)))

    def item() -> ColumnElement[Any]:
        parameter = bindparam(f"item_{next(numbers)}", type_=Text)
        return func.websearch_to_tsquery(config, parameter, type_=TSQUERY)

    alternatives = []
    for required, excluded in shape:
        expression = item()
        for _ in range(required - 1):
            expression = func.tsquery_and(expression, item(), type_=TSQUERY)
        for _ in range(excluded):
            excluding = func.tsquery_not(item(), type_=TSQUERY)
            expression = func.tsquery_and(expression, excluding, type_=TSQUERY)
        alternatives.append(expression)
    query = alternatives[0]
    for expression in alternatives[1:]:
        query = func.tsquery_or(query, expression, type_=TSQUERY)
    return query


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
