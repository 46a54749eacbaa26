"""full-text search over article titles and texts

SQLite: an FTS5 table ``articles_fts`` whose external content is the view ``articles_fts_source``:
the articles' title and text with Arabic spelling variants folded (below), by replace() calls
spread over a chain of views (``articles_fts_fold1``, ``articles_fts_fold2``). snippet() therefore
reads the folded text; marsad/search.py maps its excerpt back onto the original. Triggers on
``articles`` keep the index in step with every INSERT, DELETE and UPDATE of the title or text, so
ingest, extraction and retag need no code for it; they take the values from the view, so the
folding is written once. Tokenizer ``unicode61 remove_diacritics 2``: case and Latin accents
folded, no stemming.

PostgreSQL: a stored generated ``articles.search_vector`` (title weight A, text weight B) with the
``english`` configuration for English articles and ``simple`` for the others, folded the same way,
and a GIN index on it. Two immutable SQL functions hold the folding and the choice of configuration,
so the column, the queries and the snippets (marsad/search.py) use one definition.

Folding, as marsad.search.fold_arabic does for queries (keep the two identical): alef forms
أ إ آ ٱ ٲ ٳ -> ا, ة -> ه, ى ی ئ -> ي, ؤ -> و, ک -> ك; harakat, Quranic marks, superscript alef,
tatweel and invisible characters (soft hyphen, zero-width joiners, BOM) deleted. Only the first
100,000 characters of a text are indexed (a tsvector holds at most 1 MB).

Neither the FTS tables nor the search_vector column are in the models: alembic/env.py keeps
autogenerate away from them. On SQLite a later batch migration that copies ``articles`` must drop
the three views first (the rename fails otherwise, alembic issue #1207) and create the views and
the triggers again after (the copy loses the triggers); tests/test_search.py notices missing
triggers.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21 03:00:00

"""
from typing import Sequence, Union

from alembic import op


revision: str = '0006'
down_revision: Union[str, None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

INDEXED_CHARS = 100_000

# A frozen copy of marsad.search's folding: this migration must build the same index forever.
LETTER_FOLD = {
    "\u0623": "\u0627", "\u0625": "\u0627", "\u0622": "\u0627", "\u0671": "\u0627",
    "\u0672": "\u0627", "\u0673": "\u0627",  # alef forms -> ا
    "\u0629": "\u0647",  # ة -> ه
    "\u0649": "\u064a", "\u06cc": "\u064a", "\u0626": "\u064a",  # ى ی ئ -> ي
    "\u0624": "\u0648",  # ؤ -> و
    "\u06a9": "\u0643",  # ک -> ك
}  # fmt: skip
DELETE_RANGES = (
    (0x0610, 0x061A), (0x064B, 0x065F), (0x0670, 0x0670), (0x06D6, 0x06DC), (0x06DF, 0x06E8),
    (0x06EA, 0x06ED), (0x0640, 0x0640),  # harakat, Quranic marks, superscript alef, tatweel
    (0x00AD, 0x00AD), (0x200B, 0x200D), (0x2060, 0x2060), (0xFEFF, 0xFEFF),  # invisible
)  # fmt: skip
DELETED = "".join(chr(c) for lo, hi in DELETE_RANGES for c in range(lo, hi + 1))

SQLITE_TRIGGERS = (
    "articles_fts_insert",
    "articles_fts_delete",
    "articles_fts_update_remove",
    "articles_fts_update_add",
)


def _sqlite_fold_views() -> dict[str, str]:
    """Views that fold titles and texts with nested replace() calls, the last one for the index.

    SQLite's parser takes about 35 nested calls, so the replacements are spread over a chain of
    views, at most 25 in each.
    """
    pairs = [*LETTER_FOLD.items(), *((char, "") for char in DELETED)]
    chunks = [pairs[first : first + 25] for first in range(0, len(pairs), 25)]
    views: dict[str, str] = {}
    source = (
        f"(SELECT id, substr(title, 1, {INDEXED_CHARS}) AS title, "
        f"substr(text, 1, {INDEXED_CHARS}) AS text FROM articles)"
    )
    for number, chunk in enumerate(chunks, 1):
        columns = []
        for column in ("title", "text"):
            expression = column
            for char, replacement in chunk:
                expression = f"replace({expression}, '{char}', '{replacement}')"
            columns.append(f"{expression} AS {column}")
        name = "articles_fts_source" if number == len(chunks) else f"articles_fts_fold{number}"
        views[name] = f"SELECT id, {', '.join(columns)} FROM {source}"
        source = name
    return views


def _upgrade_sqlite() -> None:
    for name, query in _sqlite_fold_views().items():
        op.execute(f"CREATE VIEW {name} AS {query}")
    op.execute(
        "CREATE VIRTUAL TABLE articles_fts USING fts5(title, text, "
        "content='articles_fts_source', content_rowid='id', "
        "tokenize='unicode61 remove_diacritics 2')"
    )
    # The index is given the view's values: the folding is written once, in the view. With an
    # external content table, the index removes a row given the values it indexed for it, so rows
    # leave the index before the change (BEFORE triggers, reading the row as it still is) and
    # enter it after.
    add = (
        "INSERT INTO articles_fts(rowid, title, text) "
        "SELECT id, title, text FROM articles_fts_source WHERE id = new.id;"
    )
    remove = (
        "INSERT INTO articles_fts(articles_fts, rowid, title, text) "
        "SELECT 'delete', id, title, text FROM articles_fts_source WHERE id = old.id;"
    )
    op.execute(f"CREATE TRIGGER articles_fts_insert AFTER INSERT ON articles BEGIN {add} END")
    op.execute(f"CREATE TRIGGER articles_fts_delete BEFORE DELETE ON articles BEGIN {remove} END")
    # Only writes of the title or text: page leases and retag bookkeeping update articles often.
    op.execute(
        "CREATE TRIGGER articles_fts_update_remove BEFORE UPDATE OF title, text ON articles "
        f"BEGIN {remove} END"
    )
    op.execute(
        "CREATE TRIGGER articles_fts_update_add AFTER UPDATE OF title, text ON articles "
        f"BEGIN {add} END"
    )
    op.execute("INSERT INTO articles_fts(articles_fts) VALUES ('rebuild')")


def _upgrade_postgresql() -> None:
    # regexp_replace for the marks and replace() for the letters: ten times faster than one
    # translate() (which scans its list for every character) on a 3 kB text, the same result.
    expression = f"pg_catalog.regexp_replace(value, '[{DELETED}]', '', 'g')"
    for source, target in LETTER_FOLD.items():
        expression = f"pg_catalog.replace({expression}, '{source}', '{target}')"
    op.execute(
        "CREATE FUNCTION marsad_fold_arabic(value text) RETURNS text "
        f"LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ SELECT {expression} $$"
    )
    op.execute(
        "CREATE FUNCTION marsad_search_config(language text) RETURNS regconfig "
        "LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT CASE "
        "WHEN lower(language) = 'en' OR lower(language) LIKE 'en-%' "
        "THEN 'pg_catalog.english'::regconfig ELSE 'pg_catalog.simple'::regconfig END $$"
    )

    def vector(column: str, weight: str) -> str:
        return (
            "setweight(to_tsvector(marsad_search_config(language), marsad_fold_arabic("
            f"left(coalesce({column}, ''), {INDEXED_CHARS}))), '{weight}')"
        )

    op.execute(
        "ALTER TABLE articles ADD COLUMN search_vector tsvector GENERATED ALWAYS AS "
        f"({vector('title', 'A')} || {vector('text', 'B')}) STORED"
    )
    op.execute("CREATE INDEX ix_articles_search_vector ON articles USING gin (search_vector)")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        _upgrade_sqlite()
    elif dialect == "postgresql":
        _upgrade_postgresql()


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS articles_fts")
        for name in reversed(_sqlite_fold_views()):
            op.execute(f"DROP VIEW IF EXISTS {name}")
    elif dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_articles_search_vector")
        op.execute("ALTER TABLE articles DROP COLUMN IF EXISTS search_vector")
        op.execute("DROP FUNCTION IF EXISTS marsad_search_config(text)")
        op.execute("DROP FUNCTION IF EXISTS marsad_fold_arabic(text)")
