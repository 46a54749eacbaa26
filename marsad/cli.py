"""The ``marsad`` command. Domain errors become one line on stderr and exit code 1 here, nowhere else.

Prefect is imported only by the commands that run flows: it costs seconds to import.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import date, datetime, time, timedelta, timezone
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from typer.core import TyperGroup

from marsad.config import get_settings, reset_settings
from marsad.errors import InputError, MarsadError
from marsad.serve import PREFECT_LOG_LEVELS

# Offline by default: Prefect's telemetry would fail (and log errors) on closed networks.
for _name, _value in {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # Prefect's internals quiet, each flow run's summary kept (marsad/serve.py says how).
    **PREFECT_LOG_LEVELS,
    # The temporary server's 20 s default is too short on a busy small machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}.items():
    os.environ.setdefault(_name, _value)

stderr = Console(stderr=True, soft_wrap=True)


def _stdout() -> Console:
    # Built per use so it writes to the current sys.stdout; piped tables get room instead of
    # folding every URL at 80 columns.
    return Console(width=None if sys.stdout.isatty() else 160)


class _MarsadGroup(TyperGroup):
    """Turns domain errors into one friendly line and exit code 1, for every subcommand."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MarsadError as exc:
            _fail(ctx, str(exc))
        except OperationalError as exc:
            _fail(ctx, _database_error(exc))
        except SQLAlchemyError as exc:
            _fail(ctx, f"database error: {' '.join(str(exc).split())[:300]}")


def _database_error(exc: OperationalError) -> str:
    first = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
    if first == "database is locked":
        from marsad.db import SQLITE_BUSY_TIMEOUT_MS

        return (
            f"database error: database is locked: another process kept the SQLite database busy "
            f"for more than {SQLITE_BUSY_TIMEOUT_MS / 1000:g} s (another marsad run, or a tool "
            "holding a transaction open); try again when it is done"
        )
    return f"database error: {first}"


def _fail(ctx: click.Context, message: str) -> None:
    click.echo(f"marsad: error: {message}", err=True)
    ctx.exit(1)


def _typer(help_text: str) -> typer.Typer:
    return typer.Typer(
        cls=_MarsadGroup,
        help=help_text,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )


app = _typer("Marsad: monitor news on ISIS, the anti-ISIS coalition and regional security cooperation.")
feeds_app = _typer("Manage the monitored feeds.")
articles_app = _typer("Read stored articles.")
app.add_typer(feeds_app, name="feeds")
subscriptions_app = _typer("Manage digest recipients and the topics each follows.")
app.add_typer(articles_app, name="articles")
app.add_typer(subscriptions_app, name="subscriptions")


class ListFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


class ShowFormat(StrEnum):
    table = "table"
    json = "json"


class ExportFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"


class DataFormat(StrEnum):
    json = "json"
    jsonl = "jsonl"


class FeedListFormat(StrEnum):
    opml = "opml"
    yaml = "yaml"


# Shared pieces -------------------------------------------------------------------------------


def _engine() -> Any:
    from marsad.db import ensure_schema, get_engine

    engine = get_engine(get_settings().database_url)
    ensure_schema(engine)
    return engine


@contextmanager
def _session() -> Iterator[Any]:
    from marsad.db import session_scope

    with session_scope(_engine()) as session:
        yield session


def _parse_day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InputError(f"{option} must be a date as YYYY-MM-DD, not {value!r}") from None


def _day_start(day: date | None) -> datetime | None:
    """Midnight of ``day`` in the analysts' time zone."""
    if day is None:
        return None
    return datetime.combine(day, time(), tzinfo=get_settings().tz)


def _period(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """``--since`` and ``--until`` as a half-open range; ``--until`` includes its whole day."""
    start = _day_start(_parse_day(since, "--since"))
    until_day = _parse_day(until, "--until")
    end = _day_start(until_day + timedelta(days=1)) if until_day else None
    return start, end


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(get_settings().tz).isoformat() if value else None


def _write_json(value: Any) -> None:
    json.dump(value, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")


def _write_jsonl(rows: Iterable[dict[str, Any]]) -> None:
    for row in rows:
        sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")


def _write_csv(rows: Iterable[dict[str, Any]], fields: Sequence[str]) -> None:
    writer = csv.DictWriter(sys.stdout, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                key: json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else value
                for key, value in row.items()
            }
        )


def _write_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str) -> None:
    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(column)) for column in columns))
    _stdout().print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _emit(
    rows: Sequence[dict[str, Any]], fmt: str, *, columns: Sequence[str], title: str
) -> None:
    if fmt == "json":
        _write_json(list(rows))
    elif fmt == "csv":
        _write_csv(rows, list(rows[0]) if rows else columns)
    else:
        _write_table(rows, columns, title)


@contextmanager
def _progress_bar() -> Iterator[None]:
    """A Rich progress bar on stderr while long work reports progress (terminals only)."""
    from marsad.progress import set_progress_listener

    if not stderr.is_terminal:
        yield
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
        transient=True,
    ) as progress:
        tasks: dict[str, Any] = {}

        def listener(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done, total=total)

        set_progress_listener(listener)
        try:
            yield
        finally:
            set_progress_listener(None)


# init ------------------------------------------------------------------------------------------


@app.command()
def init() -> None:
    """Create or upgrade the database to the newest schema."""
    from marsad.db import current_revision, get_engine, upgrade

    engine = get_engine(get_settings().database_url)
    upgrade(engine)
    stderr.print(f"database ready at schema {current_revision(engine)}: {engine.url.render_as_string()}")


# feeds -----------------------------------------------------------------------------------------


@feeds_app.command("add")
def feeds_add(
    url: str,
    name: Annotated[str | None, typer.Option(help="A display name for the feed.")] = None,
    language: Annotated[str | None, typer.Option(help="The feed's language code, e.g. en or ar.")] = None,
) -> None:
    """Record a feed to monitor. Fetches nothing."""
    from marsad.feeds import FeedSpec, validate_feed_url, validate_language
    from marsad.store import add_feeds

    spec = FeedSpec(url=validate_feed_url(url), name=name, language=validate_language(language))
    with _session() as session:
        added, _ = add_feeds(session, [spec])
    stderr.print(f"added {spec.url}" if added else f"already monitored: {spec.url}")


@feeds_app.command("import")
def feeds_import(
    file: Annotated[Path | None, typer.Argument(help="An OPML file or a YAML list of feeds.")] = None,
    starter: Annotated[
        bool, typer.Option("--starter", help="Import Marsad's curated starter sources instead.")
    ] = False,
) -> None:
    """Import feeds from an OPML file or a YAML list, or the starter sources; idempotent.

    Feeds already known keep their settings; only outlet details they lack (country, type,
    homepage) are filled in.
    """
    from marsad.feeds import load_feed_list, starter_feed_list
    from marsad.store import add_feeds

    if (file is None) == (not starter):
        raise InputError("give a FILE to import, or --starter (not both)")
    specs = starter_feed_list() if starter else load_feed_list(file)  # type: ignore[arg-type]
    with _session() as session:
        added, known = add_feeds(session, specs)
    stderr.print(f"{added} feeds added, {known} already monitored")
    if starter and added:
        stderr.print(
            "The starter URLs could not be checked when Marsad was packaged: the next "
            "`marsad ingest` tries each, and `marsad status` lists those that fail.",
            markup=False,
            highlight=False,
        )


@feeds_app.command("export")
def feeds_export(
    format: Annotated[FeedListFormat, typer.Option("--format", help="OPML or YAML.")] = FeedListFormat.opml,
) -> None:
    """Print every feed as OPML or YAML, in the form `marsad feeds import` reads back."""
    from marsad.feeds import dump_feed_list
    from marsad.store import list_feeds

    with _session() as session:
        text = dump_feed_list(list_feeds(session), format.value)
    sys.stdout.write(text)


@feeds_app.command("check")
def feeds_check(
    url: Annotated[str, typer.Argument(help="A feed URL; it need not be registered.")],
    limit: Annotated[int, typer.Option(help="How many of the newest items to show.")] = 5,
    format: Annotated[ListFormat, typer.Option("--format", help="Output format.")] = ListFormat.table,
) -> None:
    """Fetch and parse one feed now and show its newest items, or why it cannot be read.

    Uses the same address policy, limits and parser as an ingest; stores nothing.
    """
    from marsad.feeds import validate_feed_url
    from marsad.ingest import check_feed

    check = check_feed(get_settings(), validate_feed_url(url))
    if check.error:
        raise MarsadError(f"{url}: {check.error}")
    stderr.print(check.describe(), markup=False, highlight=False)
    rows = [
        {"published_at": _iso(item.published_at), "title": item.title, "url": item.link}
        for item in check.newest(limit)
    ]
    _emit(rows, format, columns=("published_at", "title", "url"), title=check.title or url)


FEED_FIELDS = (
    "id", "url", "name", "language", "active", "error_count", "last_status", "last_error",
    "last_fetched_at",
)


@feeds_app.command("list")
def feeds_list(
    format: Annotated[ListFormat, typer.Option("--format", help="Output format.")] = ListFormat.table,
) -> None:
    """List the monitored feeds with their health."""
    from marsad.store import list_feeds

    with _session() as session:
        rows = [
            {
                "id": feed.id,
                "url": feed.url,
                "name": feed.name,
                "language": feed.language,
                "active": feed.active,
                "error_count": feed.error_count,
                "last_status": feed.last_status,
                "last_error": feed.last_error,
                "last_fetched_at": _iso(feed.last_fetched_at),
                "next_poll_at": _iso(feed.next_poll_at),
                "poll_interval_minutes": feed.poll_interval_minutes,
                "country": feed.country,
                "type": feed.source_type,
                "homepage": feed.homepage,
            }
            for feed in list_feeds(session)
        ]
    _emit(
        rows,
        format,
        columns=(
            "id", "name", "url", "language", "type", "active", "last_status", "error_count", "last_error",
        ),
        title="Feeds",
    )


@feeds_app.command("enable")
def feeds_enable(url: Annotated[str, typer.Argument(help="The feed's URL.")]) -> None:
    """Poll a feed again (one set inactive after failing, or disabled): due at the next ingest."""
    from marsad.store import set_feed_active

    with _session() as session:
        set_feed_active(session, url, active=True)
    stderr.print(f"{url}: enabled", markup=False, highlight=False)


@feeds_app.command("disable")
def feeds_disable(url: Annotated[str, typer.Argument(help="The feed's URL.")]) -> None:
    """Stop polling a feed; its articles stay."""
    from marsad.store import set_feed_active

    with _session() as session:
        set_feed_active(session, url, active=False)
    stderr.print(f"{url}: disabled", markup=False, highlight=False)


# ingest ----------------------------------------------------------------------------------------


@app.command()
def ingest(
    feed: Annotated[
        list[str] | None, typer.Option("--feed", help="Poll only this feed URL (repeatable).")
    ] = None,
) -> None:
    """Run one ingest now: poll feeds, fetch new articles, extract, tag and store them.

    Exits 0 when the run completed, even if some feeds or pages failed (they are recorded and
    retried later).
    """
    from marsad.ingest import check_feeds_registered
    from marsad.store import has_feeds

    if feed:
        check_feeds_registered(_engine(), feed)
    with _session() as session:
        if not has_feeds(session):
            stderr.print(
                "no feeds to poll: add one with `marsad feeds add URL` "
                "or a list with `marsad feeds import FILE`"
            )
            return
    summary = _run_ingest(feed or None)
    _print_summary(summary)


def _run_ingest(feed_urls: list[str] | None) -> Any:
    _engine()  # a database problem is reported before Prefect starts its server
    from flows.ingest import ingest as ingest_flow

    return _run_flow(ingest_flow, feed_urls=feed_urls)


def _run_flow(flow: Any, **parameters: Any) -> Any:
    """Run a Prefect flow in this process with a progress bar; its failure is one line.

    The flow's return value comes straight from the engine: a final state read back from Prefect's
    API can lack its data (a retried state update on a busy server), and the run's work is done.
    """
    with _progress_bar():
        try:
            return flow(**parameters)
        except MarsadError:
            raise
        except OperationalError as exc:
            raise MarsadError(f"the {flow.name} run failed: {_database_error(exc)}") from exc
        except Exception as exc:  # the run failed, or Prefect itself could not run
            raise MarsadError(
                f"the {flow.name} run failed: {exc} (PREFECT_LOGGING_LEVEL=DEBUG shows more)"
            ) from exc


def _print_summary(summary: Any) -> None:
    stderr.print(summary.as_log_line())
    for url, error in summary.failed_feeds:
        stderr.print(f"  failed: {url}: {error}", markup=False, highlight=False)


# articles --------------------------------------------------------------------------------------

TABLE_LIMIT = 50
ARTICLE_LIST_FIELDS = ("id", "url", "title", "published_at", "language", "source", "topics", "cluster_id")


def _article_row(article: Any, sources: dict[int, str], types: dict[int, str]) -> dict[str, Any]:
    return {
        "id": article.id,
        "url": article.canonical_url,
        "title": article.title,
        "published_at": _iso(article.published_at),
        "language": article.language,
        "source": sources.get(article.feed_id) if article.feed_id else article.site_name,
        "topics": [tag.topic for tag in article.tags],
        "cluster_id": article.cluster_id,
        "source_type": types.get(article.feed_id) if article.feed_id else None,
    }


def _article_detail(article: Any, sources: dict[int, str], types: dict[int, str]) -> dict[str, Any]:
    return _article_row(article, sources, types) | {
        "text": article.text,
        "author": article.author,
        "site_name": article.site_name,
        "fetched_at": _iso(article.fetched_at),
        "tags": [
            {"topic": tag.topic, "score": tag.score, "evidence": tag.evidence,
             "tagger_version": tag.tagger_version}
            for tag in article.tags
        ],
        "tagged_with": article.tagged_with,
        "places": article.places or [],
        "actors": article.actors or [],
        "date_source": article.date_source,
        "extraction_status": article.extraction_status,
    }


def _filters(
    topic: str | None, since: str | None, until: str | None, limit: int | None,
    source_type: str | None = None,
) -> Any:
    from marsad.feeds import SOURCE_TYPES
    from marsad.store import ArticleFilter
    from marsad.tagging import TOPICS

    if topic is not None and topic not in TOPICS:
        raise InputError(f"unknown topic {topic!r}; topics are {', '.join(TOPICS)}")
    if source_type is not None and source_type not in SOURCE_TYPES:
        raise InputError(f"unknown source type {source_type!r}; types are {', '.join(SOURCE_TYPES)}")
    if limit is not None and limit < 1:
        raise InputError("--limit must be at least 1")
    start, end = _period(since, until)
    return ArticleFilter(topic=topic, since=start, until=end, limit=limit, source_type=source_type)


TopicOption = Annotated[str | None, typer.Option(help="isis, coalition or regional_cooperation.")]
SinceOption = Annotated[str | None, typer.Option(help="First day, YYYY-MM-DD (MARSAD_TIMEZONE).")]
UntilOption = Annotated[str | None, typer.Option(help="Last day included, YYYY-MM-DD.")]
SourceTypeOption = Annotated[
    str | None,
    typer.Option("--source-type", help="Only from feeds of this outlet type (independent, state, wire, official, research)."),
]


@articles_app.command("list")
def articles_list(
    topic: TopicOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    limit: Annotated[
        int | None, typer.Option(help="At most this many, newest first (table: 50 by default).")
    ] = None,
    source_type: SourceTypeOption = None,
    format: Annotated[ListFormat, typer.Option("--format", help="Output format.")] = ListFormat.table,
) -> None:
    """List stored articles, newest first."""
    from marsad.store import feed_names, feed_types, list_articles

    if limit is None and format == ListFormat.table:
        limit = TABLE_LIMIT  # a screenful; json and csv list everything unless told otherwise
    filters = _filters(topic, since, until, limit, source_type)
    with _session() as session:
        sources, types = feed_names(session), feed_types(session)
        rows = [_article_row(article, sources, types) for article in list_articles(session, filters)]
    _emit(
        rows,
        format,
        columns=("id", "published_at", "source", "language", "topics", "cluster_id", "title"),
        title="Articles",
    )


@articles_app.command("show")
def articles_show(
    article_id: Annotated[int, typer.Argument(metavar="ID")],
    format: Annotated[ShowFormat, typer.Option("--format", help="Output format.")] = ShowFormat.table,
) -> None:
    """Show one article: its metadata, text and the evidence behind each tag."""
    from marsad.store import feed_names, feed_types, get_article

    with _session() as session:
        detail = _article_detail(get_article(session, article_id), feed_names(session), feed_types(session))
    if format == "json":
        _write_json(detail)
        return
    _show_article(detail)


def _show_article(detail: dict[str, Any]) -> None:
    from rich.panel import Panel
    from rich.text import Text

    meta = Table.grid(padding=(0, 2))
    for key in ("id", "url", "source", "site_name", "author", "published_at", "date_source",
                "fetched_at", "language", "extraction_status", "cluster_id"):
        meta.add_row(key, _cell(detail.get(key)))
    meta.add_row("places", _cell(detail["places"]))
    meta.add_row("actors", _cell(detail["actors"]))
    out = _stdout()
    out.print(Panel(meta, title=Text(detail["title"] or "(no title)"), title_align="left"))
    for tag in detail["tags"]:
        out.print(Text(
            f"{tag['topic']}  score {tag['score']:.2f}  taxonomy {tag['tagger_version']}", style="bold"
        ))
        for evidence in tag["evidence"]:
            field_text = (detail["title"] if evidence.get("field") == "title" else detail["text"]) or ""
            out.print(Text("  ") + _in_context(field_text, evidence))
    out.print()
    out.print(Text(detail["text"] or ""))


def _in_context(text: str, evidence: dict[str, Any], width: int = 60) -> Any:
    from rich.text import Text

    start, end = int(evidence.get("start", 0)), int(evidence.get("end", 0))
    before = text[max(0, start - width):start].replace("\n", " ")
    after = text[end:end + width].replace("\n", " ")
    matched = text[start:end]
    # The guillemets keep the match visible where the highlight is lost (a pipe, a file).
    line = Text(f"{evidence.get('field')}: {evidence.get('term') or matched!s}  …{before}«")
    line.append(matched, style="reverse")
    line.append(f"»{after}…")
    return line


@articles_app.command("export")
def articles_export(
    topic: TopicOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    source_type: SourceTypeOption = None,
    format: Annotated[ExportFormat, typer.Option("--format", help="Output format.")] = ExportFormat.jsonl,
) -> None:
    """Export articles with their text, tags and evidence (streams; fit for large exports)."""
    from marsad.store import feed_names, feed_types, iter_articles

    filters = _filters(topic, since, until, None, source_type)
    with _session() as session:
        sources, types = feed_names(session), feed_types(session)
        rows = (_article_detail(a, sources, types) for a in iter_articles(session, filters))
        if format == "csv":
            _write_csv(rows, [*ARTICLE_LIST_FIELDS, "text", "author", "site_name", "fetched_at",
                              "tags", "places", "actors", "source_type"])
        else:
            _write_jsonl(rows)


@app.command()
def retag(since: SinceOption = None) -> None:
    """Re-tag stored articles with the current taxonomy; only changed tags are rewritten."""
    start, _ = _period(since, None)
    _engine()  # a database problem is reported before Prefect starts its server
    from flows.retag import retag as retag_flow

    report = _run_flow(retag_flow, since=start)
    from marsad.tagging import get_tagger

    stderr.print(report.as_log_line(get_tagger().version))


@app.command()
def backfill(
    source: Annotated[
        str, typer.Argument(help="A news sitemap or sitemap index URL, or a file of article URLs.")
    ],
    since: SinceOption = None,
    until: UntilOption = None,
) -> None:
    """Bring in a site's history through the normal pipeline (a flow): the pages its sitemap (or
    the file) lists, between --since and --until, fetched politely, extracted, tagged and stored.

    Articles already stored are skipped; an interrupted backfill continues where it stopped when
    run again.
    """
    since_day, until_day = _parse_day(since, "--since"), _parse_day(until, "--until")
    _engine()  # a database problem is reported before Prefect starts its server
    from flows.backfill import backfill as backfill_flow

    summary = _run_flow(backfill_flow, source=source, since=since_day, until=until_day)
    stderr.print(summary.as_log_line(), markup=False, highlight=False)


# extract and tag: tools on files ---------------------------------------------------------------


@app.command()
def extract(
    files: Annotated[list[Path], typer.Argument(metavar="FILE...", help="Saved HTML pages.")],
    url: Annotated[str | None, typer.Option(help="The URL the page(s) came from.")] = None,
    format: Annotated[DataFormat, typer.Option("--format", help="Output format.")] = DataFormat.json,
) -> None:
    """Extract article text and metadata from pages saved on disk."""
    from marsad.extract import ExtractorPool

    readable: list[tuple[int, bytes]] = []
    rows: list[dict[str, Any]] = [{"path": str(path), "url": url} for path in files]
    for index, path in enumerate(files):
        try:
            readable.append((index, path.read_bytes()))
        except OSError as exc:
            rows[index]["error"] = f"cannot read {path}: {exc.strerror or exc}"
    settings = get_settings()
    with _progress_bar(), ExtractorPool(
        workers=settings.extract_workers if len(readable) > 4 else 1,
        timeout=settings.extract_timeout,
        max_bytes=settings.extract_max_bytes,
    ) as pool:
        pages = pool.extract_many([(url, body) for _, body in readable])
    for (index, _), page in zip(readable, pages, strict=True):
        if page.status in ("failed", "empty", "timeout", "too_large") and not page.text:
            rows[index]["error"] = page.error or f"extraction {page.status}"
            continue
        rows[index] |= {
            "title": page.title,
            "text": page.text,
            "author": page.author,
            "published_at": page.published_at.isoformat() if page.published_at else None,
            "language": page.language,
            "site_name": page.site_name,
        }
    if format == "jsonl":
        _write_jsonl(rows)
    else:
        _write_json(rows)


@app.command()
def tag(
    file: Annotated[
        Path | None, typer.Argument(help="A text file to tag ('-' for standard input).")
    ] = None,
    title: Annotated[str | None, typer.Option(help="The title of the text.")] = None,
    input: Annotated[
        Path | None, typer.Option("--input", help="JSONL lines {id, title, text[, language]}.")
    ] = None,
    format: Annotated[DataFormat, typer.Option("--format", help="Output format.")] = DataFormat.json,
) -> None:
    """Tag texts for isis, coalition and regional_cooperation, with the evidence for each tag."""
    from marsad.tagging import get_tagger

    tagger = get_tagger()
    if input is not None:
        if file is not None:
            raise InputError("give either FILE or --input, not both")
        rows = _tag_lines(tagger, input)
        if format == "json":
            _write_json(list(rows))
        else:
            _write_jsonl(rows)  # streamed: a large file is tagged line by line
        return
    if file is None and title is None:
        raise InputError("give a FILE, --title or --input FILE.jsonl")
    text = _read_text(file) if file is not None else ""
    result = tagger.tag(title, text).to_dict()
    if format == "jsonl":
        _write_jsonl([result])
    else:
        _write_json(result)


def _read_text(path: Path) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text") from exc


def _tag_lines(tagger: Any, path: Path) -> Iterator[dict[str, Any]]:
    """One output record per input line, in order; a bad line gets an ``error`` record."""
    try:
        handle = sys.stdin.buffer if str(path) == "-" else path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            record: Any = None
            try:
                record = json.loads(raw.decode("utf-8"))
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
                title, text = record.get("title"), record.get("text")
                if not isinstance(title, (str, type(None))) or not isinstance(text, (str, type(None))):
                    raise ValueError("title and text must be strings")
            except ValueError as exc:  # includes UnicodeDecodeError and JSONDecodeError
                known_id = record.get("id") if isinstance(record, dict) else None
                yield {"id": known_id, "line": number, "error": f"line {number}: {exc}"}
                continue
            yield {"id": record.get("id")} | tagger.tag(title, text, record.get("language")).to_dict()


# status ----------------------------------------------------------------------------------------


@app.command()
def status(
    format: Annotated[ShowFormat, typer.Option("--format", help="Output format.")] = ShowFormat.table,
) -> None:
    """Feeds (ok, failing, silent), the last runs, the last digests, and counts per topic today
    and over the last 7 days."""
    from marsad.health import ENABLE_HINT
    from marsad.status import collect

    with _session() as session:
        state = collect(session, get_settings(), datetime.now(timezone.utc))
    if format == "json":
        _write_json(json.loads(json.dumps(state.to_dict(), default=_json_default)))
        return
    out = _stdout()
    out.print(
        f"[bold]Feeds[/bold]: {state.feeds_active} active ({state.feeds_ok} ok, "
        f"{len(state.health.failing)} failing, {len(state.health.silent)} silent), "
        f"{state.feeds_inactive} inactive; {state.pages_waiting} pages waiting to be fetched"
    )
    for kind, problems in (("failing", state.health.failing), ("silent", state.health.silent)):
        for problem in problems:
            out.print(f"  {kind}: {problem.name} ({problem.url}): {problem.detail}", markup=False, highlight=False)
    for problem in state.health.switched_off:
        when = f" (last poll {problem.since.astimezone(get_settings().tz):%Y-%m-%d %H:%M})" if problem.since else ""
        out.print(
            f"  switched off: {problem.name} ({problem.url}): {problem.detail}{when}; "
            + ENABLE_HINT.format(url=problem.url),
            markup=False, highlight=False, soft_wrap=True,
        )
    _write_table(
        [
            {"run": r.id, "started": f"{r.started_at.astimezone(get_settings().tz):%Y-%m-%d %H:%M}", "status": r.status,
             "feeds": r.feeds_polled, "failed": r.feeds_failed, "new": r.articles_new,
             "stored": r.articles_stored,
             "failures": ", ".join(f"{k}={v}" for k, v in sorted(r.failures.items())) or r.error}
            for r in state.runs
        ],
        ("run", "started", "status", "feeds", "failed", "new", "stored", "failures"),
        "Last ingest runs",
    )
    if state.digests:
        _write_table(
            [asdict(d) for d in state.digests],
            ("recipient", "day", "status", "stories", "detail"),
            "Last digest per recipient",
        )
    _write_table(
        [{"topic": c["topic"], "today": c["today"], "last 7 days": c["last_7_days"]} for c in state.topics],
        ("topic", "today", "last 7 days"),
        f"Articles per topic ({get_settings().timezone})",
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# trends and search -----------------------------------------------------------------------------


class Granularity(StrEnum):
    day = "day"
    week = "week"
    month = "month"
    # Not a period: `--by source-type` counts per outlet type, per day (the same as
    # `--breakdown source-type`), as analysts asked for it by that name.
    source_type = "source-type"


class Breakdown(StrEnum):
    source = "source"
    source_type = "source-type"
    language = "language"
    place = "place"


@app.command()
def trends(
    topic: Annotated[
        list[str] | None, typer.Option("--topic", help="isis, coalition or regional_cooperation (repeatable; default all).")
    ] = None,
    by: Annotated[Granularity, typer.Option("--by", help="Periods: day, ISO week or month.")] = Granularity.day,
    since: SinceOption = None,
    until: UntilOption = None,
    breakdown: Annotated[
        Breakdown | None,
        typer.Option("--breakdown", help="Count per source, source type, language or place too."),
    ] = None,
    format: Annotated[ListFormat, typer.Option("--format", help="Output format.")] = ListFormat.table,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also draw a line chart to this PNG file.")] = None,
    spikes: Annotated[
        bool, typer.Option("--spikes", help="Only the periods unusually high against their recent baseline.")
    ] = False,
) -> None:
    """Articles per topic per day, ISO week or month, in MARSAD_TIMEZONE: an article counts on the
    day it was published (or first seen, when undated)."""
    from marsad import trends as analysis

    since_day, until_day = _parse_day(since, "--since"), _parse_day(until, "--until")
    if by is Granularity.source_type:
        if breakdown not in (None, Breakdown.source_type):
            raise InputError("--by source-type is a breakdown already: drop --breakdown")
        by, breakdown = Granularity.day, Breakdown.source_type
    key = breakdown.value.replace("-", "_") if breakdown else None
    with _session() as session:
        rows = analysis.trends(
            session, topics=topic or None, by=by.value, since=since_day, until=until_day, breakdown=key
        )
        flagged = analysis.find_spikes(
            session, topics=topic or None, by=by.value, since=since_day, until=until_day, breakdown=key
        ) if spikes or plot else []
    if plot is not None:
        path = analysis.plot(rows, plot, by=by.value, spikes=flagged, since=since_day, until=until_day)
        stderr.print(f"chart written to {path}", markup=False, highlight=False)
    shown = flagged if spikes else rows
    columns = ["period", "topic", *([key] if key else []), "count"]
    if spikes:
        columns += ["baseline", "z"]
    out = [{c: _plain(r.get(c)) for c in columns} for r in shown]
    if format == "table" and not spikes and not key:
        out = _pivot(out)
        columns = ["period", *dict.fromkeys(r["topic"] for r in shown)]
        _write_table(out, columns, f"Articles per {by.value} ({get_settings().timezone})")
        return
    _emit(out, format.value, columns=columns, title=f"{'Spikes' if spikes else 'Articles'} per {by.value}")


def _plain(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 2)
    return value


def _pivot(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per period, one column per topic: how analysts read a trend table."""
    table: dict[str, dict[str, Any]] = {}
    for row in rows:
        table.setdefault(row["period"], {"period": row["period"]})[row["topic"]] = row["count"]
    return list(table.values())


@app.command()
def search(
    query: Annotated[
        str,
        typer.Argument(
            help='Words, "a phrase", OR, -excluded; English or Arabic. To start with -excluded, '
            'put -- before the query: marsad search -- "-wheat flour".'
        ),
    ],
    topic: TopicOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    limit: Annotated[int, typer.Option(help="Most results shown.")] = 20,
    format: Annotated[ShowFormat, typer.Option("--format", help="Output format.")] = ShowFormat.table,
) -> None:
    """Full-text search over titles and texts, most relevant first, with snippets.

    An Arabic word is found with or without attached prefixes (و ف ب ل ك ال لل وال بال ...).

    A quoted phrase of several words matches as written.

    A query that starts with a minus goes after --: marsad search -- "-wheat flour".
    """
    from marsad.search import MARK_END, MARK_START
    from marsad.search import search as run_search

    filters = _filters(topic, since, until, limit)
    with _session() as session:
        hits = run_search(
            session, query, topic=filters.topic, since=filters.since, until=filters.until, limit=limit
        )
    rows = [
        {"id": h.id, "url": h.url, "title": h.title, "published_at": _iso(h.published_at),
         "topics": h.topics, "snippet": h.snippet}
        for h in hits
    ]
    if format == "json":
        _write_json(rows)
        return
    if not rows:
        stderr.print("no matches", markup=False, highlight=False)
        return
    out = _stdout()
    for row in rows:
        out.print(f"[bold]{row['id']}[/bold] {escape(row['title'] or row['url'])}", highlight=False)
        out.print(f"    {row['published_at'] or 'undated'} · {', '.join(row['topics']) or 'no topic'} · {escape(row['url'])}", highlight=False)
        marked = escape(row["snippet"]).replace(MARK_START, "[reverse]").replace(MARK_END, "[/reverse]")
        out.print(f"    {marked}", highlight=False)


# digest ----------------------------------------------------------------------------------------


@app.command()
def digest(
    date_: Annotated[
        str | None, typer.Option("--date", help="The digest's day, YYYY-MM-DD (default: today).")
    ] = None,
    to: Annotated[
        list[str] | None, typer.Option("--to", help="Send only to this address (repeatable).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Write the digest files and print their paths; send and record nothing.")
    ] = False,
    resend: Annotated[
        bool,
        typer.Option(
            "--resend",
            help="Send failed digests again (refused by the server, login refused, delivery unknown "
            "twice), as stored, with the same Message-ID: those of --date and --to, or all. Builds nothing new.",
        ),
    ] = False,
) -> None:
    """Build and deliver the daily digest: by SMTP when MARSAD_SMTP_HOST is set, and always as
    files in MARSAD_OUTBOX_DIR. Running it again the same day sends nothing twice. A digest that
    failed for good waits for --resend."""
    if resend and dry_run:
        raise InputError("--resend and --dry-run cannot be combined")
    engine = _engine()
    if resend:
        from marsad.delivery import resend as resend_failed

        day = _parse_day(date_, "--date")
        summary = resend_failed(engine, get_settings(), datetime.now(timezone.utc), day, to or None)
    else:
        day = _parse_day(date_, "--date") or datetime.now(get_settings().tz).date()
        if dry_run:
            from marsad.delivery import preview

            for path in preview(engine, get_settings(), day, datetime.now(timezone.utc), to or None):
                print(path)
            return
        from flows.digest import digest as digest_flow

        summary = _run_flow(digest_flow, day=day, to=to or None)
    stderr.print(summary.as_log_line(), markup=False, highlight=False)
    for report in summary.reports:
        where = f" -> {report.files[0]}" if report.files else ""
        detail = f": {report.detail}" if report.detail and report.status != "sent" else where
        stderr.print(f"  {report.day} {report.recipient}: {report.status}{detail}", markup=False, highlight=False)


@app.command()
def alert(
    to: Annotated[
        list[str] | None, typer.Option("--to", help="Alert only this address (repeatable).")
    ] = None,
) -> None:
    """Check every topic for a spike today and mail an alert at once to those who follow it
    (once per topic and day; MARSAD_SPIKE_THRESHOLD and MARSAD_SPIKE_MIN_ARTICLES set the bar)."""
    _engine()
    from flows.spike_alert import spike_alert

    summary = _run_flow(spike_alert, to=to or None)
    stderr.print(summary.as_log_line().replace("digests prepared", "alerts prepared"), markup=False, highlight=False)
    for report in summary.reports:
        stderr.print(f"  {report.day} {report.kind} {report.recipient}: {report.status}", markup=False, highlight=False)


@subscriptions_app.command("add")
def subscriptions_add(
    address: Annotated[str, typer.Argument(help="The recipient's e-mail address.")],
    topic: Annotated[
        list[str] | None, typer.Option("--topic", help="A topic to follow (repeatable; default: all).")
    ] = None,
) -> None:
    """Subscribe an address to the digest, for some topics or all; run again to change them."""
    from marsad.delivery import subscribe

    with _session() as session:
        subscription = subscribe(session, address, topic)
        topics = ", ".join(subscription.topics or ["all topics"])
    stderr.print(f"{subscription.address}: {topics}", markup=False, highlight=False)


@subscriptions_app.command("remove")
def subscriptions_remove(
    address: Annotated[str, typer.Argument(help="The recipient's e-mail address.")],
) -> None:
    """Stop sending the digest to an address (its past digests stay recorded)."""
    from marsad.delivery import unsubscribe

    with _session() as session:
        removed = unsubscribe(session, address)
    if not removed:
        raise InputError(f"{address} has no active subscription")
    stderr.print(f"{address}: unsubscribed", markup=False, highlight=False)


@subscriptions_app.command("list")
def subscriptions_list(
    format: Annotated[ListFormat, typer.Option("--format", help="Output format.")] = ListFormat.table,
) -> None:
    """Subscribed addresses and their topics."""
    from sqlalchemy import select

    from marsad.tagging import TOPICS
    from models import Subscription

    with _session() as session:
        rows = [
            {"address": s.address, "topics": s.topics or list(TOPICS), "active": s.active,
             "created_at": _iso(s.created_at)}
            for s in session.scalars(select(Subscription).order_by(Subscription.address))
        ]
    _emit(rows, format, columns=("address", "topics", "active", "created_at"), title="Subscriptions")


# serve -----------------------------------------------------------------------------------------


@app.command()
def serve() -> None:
    """Run the schedules in this process until Ctrl-C: ingest every MARSAD_SERVE_INGEST_MINUTES,
    the digest daily at MARSAD_SERVE_DIGEST_TIME, the spike alert every MARSAD_SERVE_ALERT_MINUTES
    (and retag on demand). Uses the Prefect server in PREFECT_API_URL (or the Prefect profile's),
    or starts a local one."""
    from marsad.serve import Schedules, configured_api_url, prefect_server

    settings = get_settings()
    _engine()  # a database problem is reported before anything starts
    schedules = Schedules.from_settings(settings)
    stderr.print(
        f"[bold]Marsad serve[/bold]: ingest every {schedules.ingest_minutes} min, digest daily at "
        f"{schedules.digest_time}, spike alert every {schedules.alert_minutes} min ({schedules.timezone}); "
        f"database {_safe_url(settings.database_url)}"
    )
    api_url = configured_api_url()
    if api_url:
        _serve(schedules, api_url)
        return
    home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect"))
    log = home / "marsad-serve-server.log"
    stderr.print(f"starting a local Prefect server (log: {log}) …")
    with prefect_server(home, log) as local_url:
        os.environ["PREFECT_API_URL"] = local_url  # for the flow runs' own Prefect clients
        _serve(schedules, local_url)


def _serve(schedules: Any, api_url: str) -> None:
    from prefect import serve as prefect_serve
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from marsad.serve import deployments

    ui = api_url.removesuffix("/api")
    with temporary_settings({PREFECT_API_URL: api_url}):
        served = deployments(schedules)
        stderr.print(f"runs, logs and artifacts: {ui} · stop with Ctrl-C", markup=False, highlight=False)
        try:
            prefect_serve(*served, print_starting_message=False)
        except KeyboardInterrupt:
            pass
    stderr.print("stopped", markup=False, highlight=False)


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# demo ------------------------------------------------------------------------------------------


@app.command()
def demo(
    database: Annotated[
        Path, typer.Option(help="SQLite file for the demo (recreated on every run).")
    ] = Path("marsad-demo.db"),
) -> None:
    """Run the whole pipeline offline on a bundled sample web and show what was stored."""
    from marsad.demo.server import SampleWeb
    from marsad.feeds import FeedSpec
    from marsad.store import add_feeds, feed_names, list_articles, ArticleFilter

    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    with SampleWeb() as web:
        host = web.base_url.split("//", 1)[1].split(":", 1)[0]
        os.environ["MARSAD_DATABASE_URL"] = f"sqlite:///{database}"
        # The sample web lives on loopback, which the fetcher refuses unless allowed.
        os.environ["MARSAD_ALLOW_HOSTS"] = ",".join(filter(None, [os.environ.get("MARSAD_ALLOW_HOSTS"), host]))
        os.environ["MARSAD_SMTP_HOST"] = ""  # the demo's digest goes to the outbox, never to a mailbox
        reset_settings()
        with _session() as session:
            add_feeds(session, [FeedSpec(**feed) for feed in web.feeds()])
        stderr.print(f"[bold]Sample web[/bold] at {web.base_url}; database {database}")
        stderr.print("[bold]First run[/bold]: every article is new")
        _print_summary(_run_ingest(None))
        stderr.print("[bold]Second run[/bold]: conditional requests, nothing stored twice")
        # Named explicitly: adaptive polling would otherwise wait before polling them again.
        _print_summary(_run_ingest([feed["url"] for feed in web.feeds()]))
    from flows.digest import digest as digest_flow

    summary = _run_flow(digest_flow, day=datetime.now(get_settings().tz).date())
    for report in summary.reports:
        if report.files:
            stderr.print(f"[bold]Digest[/bold] written to {report.files[1]} and {report.files[0]}")
    with _session() as session:
        sources = feed_names(session)
        rows = [_article_row(a, sources, {}) for a in list_articles(session, ArticleFilter(limit=100))]
    _write_table(
        rows,
        ("id", "published_at", "source", "language", "topics", "cluster_id", "title"),
        "Stored articles",
    )
    stderr.print(
        f"Explore: MARSAD_DATABASE_URL=sqlite:///{database} marsad articles show {rows[0]['id'] if rows else 1}"
    )


def main() -> None:  # pragma: no cover - `python -m marsad.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
