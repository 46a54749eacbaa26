"""The markdown artifact every flow run leaves on its Prefect flow run: what it did, as tables, and
how long it took, also when it failed.

A flow wraps its body in ``flow_artifact`` and hands it its summary as soon as it has one; the
artifact is written when the body ends, however it ends. Rendering is plain Python, testable
without Prefect (imported only to publish). Tables are bounded: a run over 500 feeds shows the
rows worth reading first (failures, then the feeds that brought the most) and how many more there
were, so the page stays readable in the UI.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import Engine, select

from marsad.db import session_scope
from marsad.text import one_line
from models import Feed, FetchEvent

if TYPE_CHECKING:
    from marsad.delivery import DigestSummary
    from marsad.retag import RetagReport

MAX_ROWS = 50  # rows per table; the rest are counted in a last row
ERROR_CHARS = 300


def cell(value: object) -> str:
    """A value as one markdown table cell: one line, pipes escaped."""
    text = one_line(value if isinstance(value, str) else ("" if value is None else str(value))) or ""
    return text.replace("|", "\\|")


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    numeric: Collection[int] = (),
    limit: int = MAX_ROWS,
    what: str = "rows",
) -> list[str]:
    """A markdown table of at most ``limit`` rows, then one saying how many ``what`` were left out;
    the columns in ``numeric`` are right-aligned."""
    lines = [
        "| " + " | ".join(cell(header) for header in headers) + " |",
        "|" + "|".join("---:" if i in numeric else "---" for i in range(len(headers))) + "|",
    ]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"| … {len(rows) - limit} more {what} |" + " |" * (len(headers) - 1))
    return lines


# The run of any flow -----------------------------------------------------------------------------


@dataclass
class RunReport:
    """What a flow run says about itself. ``summary`` renders the flow's own tables; set it as soon
    as there is something to show, so a run that fails later still shows how far it got."""

    title: str
    summary: Callable[[], str] | None = None
    description: str | None = None

    def show(self, summary: Callable[[], str], description: str | None = None) -> None:
        self.summary, self.description = summary, description

    def as_markdown(self, status: str, started: datetime, seconds: float, error: str | None) -> str:
        body = f"# {self.title}"
        if self.summary is not None:
            try:
                body = self.summary()
            except Exception as exc:  # noqa: BLE001 - the database may be what failed the run
                body += f"\n\nThe run's summary could not be read: {cell(f'{type(exc).__name__}: {exc}')}"
        lines = [
            body,
            "",
            *table(
                ["status", "started (UTC)", "seconds"],
                [[status, started.strftime("%Y-%m-%d %H:%M:%S"), f"{seconds:.1f}"]],
                numeric={2},
            ),
        ]
        if error:
            lines += ["", f"Error: {cell(one_line(error, ERROR_CHARS))}"]
        return "\n".join(lines)


@contextmanager
def flow_artifact(key: str, title: str) -> Iterator[RunReport]:
    """Run the block, then leave its report as the markdown artifact ``key`` of the current flow
    run, with its status and duration: completed, failed (with the error) or interrupted."""
    report = RunReport(title)
    started, clock = datetime.now(UTC), time.monotonic()
    status, error = "completed", None
    try:
        yield report
    except Exception as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        raise
    except BaseException as exc:  # cancelled, terminated, Ctrl-C
        status, error = "interrupted", type(exc).__name__
        raise
    finally:
        seconds = time.monotonic() - clock
        _publish(
            key,
            report.as_markdown(status, started, seconds, error),
            f"{report.description or report.title} ({status}, {seconds:.1f} s)",
        )


def _publish(key: str, markdown: str, description: str) -> None:
    from prefect import get_run_logger
    from prefect.artifacts import create_markdown_artifact

    try:
        create_markdown_artifact(key=key, markdown=markdown, description=description)
    except Exception:  # noqa: BLE001 - a report must not fail the run, nor hide the run's own error
        get_run_logger().warning("the run's %s artifact could not be written", key, exc_info=True)


# The flows' own tables --------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedRow:
    url: str
    status: str
    new: int
    seconds: float
    failure: str | None = None  # reason: error, for a failed poll


def feed_rows(engine: Engine, run_id: int) -> list[FeedRow]:
    """Each feed polled by ingest run ``run_id``, from its fetch events: failures first, then the
    feeds that brought the most articles, then the slowest."""
    query = (
        select(Feed.url, FetchEvent.status, FetchEvent.items_new, FetchEvent.duration_ms,
               FetchEvent.reason, FetchEvent.error)
        .join(Feed, Feed.id == FetchEvent.feed_id)
        .where(FetchEvent.run_id == run_id)
    )
    with session_scope(engine) as session:
        rows = [
            FeedRow(
                url, status, new or 0, (ms or 0) / 1000,
                (": ".join(p for p in (reason, error) if p) or "error") if status == "failed" else None,
            )
            for url, status, new, ms, reason, error in session.execute(query)
        ]
    return sorted(rows, key=lambda r: (r.status != "failed", -r.new, -r.seconds, r.url))


def feed_table(rows: Sequence[FeedRow], limit: int = MAX_ROWS) -> list[str]:
    return table(
        ["feed", "status", "new articles", "seconds", "failure"],
        [[r.url, r.status, r.new, f"{r.seconds:.2f}", one_line(r.failure, ERROR_CHARS)] for r in rows],
        numeric={2, 3},
        limit=limit,
        what="feeds",
    )


def retag_markdown(report: RetagReport, taxonomy_version: str) -> str:
    return "\n".join([
        f"# Retag with taxonomy {cell(taxonomy_version)}",
        "",
        *table(
            ["articles checked", "articles changed", "tags added", "tags updated", "tags removed"],
            [[report.articles_checked, report.articles_changed, report.tags_added,
              report.tags_updated, report.tags_removed]],
            numeric=range(5),
        ),
    ])


def delivery_markdown(title: str, summary: DigestSummary, prepared: str) -> str:
    """The digest's or the spike alert's run: how many were prepared, then each delivery."""
    statuses = ("sent", "empty", "pending", "unknown", "failed", "skipped")
    lines = [
        f"# {title}",
        "",
        *table([prepared, *statuses], [[summary.prepared, *map(summary.count, statuses)]],
               numeric=range(len(statuses) + 1)),
    ]
    if summary.reports:
        lines += ["", *table(
            ["day", "kind", "recipient", "status", "detail"],
            [[r.day, r.kind, r.recipient, r.status, one_line(r.detail, ERROR_CHARS)]
             for r in sorted(summary.reports, key=lambda r: r.status in ("sent", "empty"))],
            what="deliveries",
        )]
    return "\n".join(lines)
