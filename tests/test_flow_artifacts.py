"""Every flow run leaves a markdown artifact on its Prefect flow run: its own tables and the run's
status and duration, also when the run fails. Flows run under Prefect's harness and the artifact
is read back from its API; the rendering is tested on its own."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect import task
from sqlalchemy import Engine

from marsad import ingest as stages
from marsad.artifacts import FeedRow, feed_rows, feed_table, table
from marsad.config import reset_settings
from marsad.db import make_engine, session_scope, upgrade
from marsad.feeds import FeedSpec
from marsad.store import add_feeds, record_fetch_event

RUN_TABLE = "| status | started (UTC) | seconds |"


@pytest.fixture
def sqlite_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'marsad.db'}"
    engine = make_engine(url)
    upgrade(engine)
    monkeypatch.setenv("MARSAD_DATABASE_URL", url)
    reset_settings()
    yield engine
    engine.dispose()
    from marsad.db import get_engine

    get_engine.cache_clear()


def artifact_of(state) -> str:  # noqa: ANN001 - a Prefect State
    """The flow run's markdown artifact (a failed run also has Prefect's own result artifacts)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterType,
    )

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
                type=ArtifactFilterType(any_=["markdown"]),
            )
        )
    assert len(artifacts) == 1, [(a.key, a.type) for a in artifacts]
    return artifacts[0].data


def run_row(markdown: str) -> list[str]:
    """The cells of the row under the run's status-and-duration table."""
    lines = markdown.splitlines()
    row = lines[lines.index(RUN_TABLE) + 2]
    return [cell.strip() for cell in row.strip("|").split("|")]


# Rendering ---------------------------------------------------------------------------------------


def test_a_table_is_bounded_says_how_many_rows_it_left_out_and_escapes_its_cells() -> None:
    rows = [[f"https://example.org/{i}|x", i] for i in range(120)]
    lines = table(["feed", "new"], rows, numeric={1}, limit=50, what="feeds")
    assert lines[:2] == ["| feed | new |", "|---|---:|"]
    assert len(lines) == 2 + 50 + 1
    assert lines[2] == "| https://example.org/0\\|x | 0 |"
    assert lines[-1] == "| … 70 more feeds | |"
    assert table(["a"], [["one\nline"]]) == ["| a |", "|---|", "| one line |"]


def test_the_ingest_feed_table_lists_failures_first_then_the_busiest_within_fifty_rows(
    sqlite_engine: Engine,
) -> None:
    """A 500-feed run stays readable: the feeds worth a look first, the rest counted."""
    urls = [f"https://feeds.example/{i:03d}.xml" for i in range(500)]
    with session_scope(sqlite_engine) as session:
        add_feeds(session, [FeedSpec(url) for url in urls])
    run_id = stages.open_run(sqlite_engine)
    with session_scope(sqlite_engine) as session:
        for feed_id, url in enumerate(urls, start=1):
            i = int(url[-7:-4])
            failed = i % 100 == 7
            record_fetch_event(
                session, run_id=run_id, feed_id=feed_id, status="failed" if failed else "ok",
                reason="http_error" if failed else None, error="HTTP 503" if failed else None,
                items_new=0 if failed else i % 10, duration_ms=1000 + i,
            )
    rows = feed_rows(sqlite_engine, run_id)
    assert len(rows) == 500
    # Failures first (slowest first), then the most new articles (slowest first).
    assert [r.url[-7:-4] for r in rows[:7]] == ["407", "307", "207", "107", "007", "499", "489"]
    assert all(r.status == "failed" for r in rows[:5]) and rows[0].failure == "http_error: HTTP 503"
    assert rows[5].new == 9 and rows[5].failure is None

    lines = feed_table(rows)
    assert lines[0] == "| feed | status | new articles | seconds | failure |"
    assert len(lines) == 2 + 50 + 1 and lines[-1].startswith("| … 450 more feeds |")
    assert lines[2].endswith("| failed | 0 | 1.41 | http_error: HTTP 503 |")


def test_the_ingest_summary_without_a_feed_table_bounds_its_failed_feeds() -> None:
    summary = stages.RunSummary(
        run_id=1, status="completed", feeds_polled=80, feeds_ok=0, feeds_unchanged=0,
        feeds_failed=80, articles_new=0, articles_stored=0, failures={"feed:http_error": 80},
        failed_feeds=[(f"https://f.example/{i}", "HTTP 500") for i in range(80)], duration_s=3.0,
    )
    markdown = summary.as_markdown()
    assert "| … 30 more feeds | |" in markdown and "https://f.example/49 " in markdown
    assert "https://f.example/50 " not in markdown
    with_table = summary.as_markdown(feed_table([FeedRow("https://f.example/0", "failed", 0, 0.5, "x")]))
    assert "| failed feed |" not in with_table and "| https://f.example/0 | failed | 0 | 0.50 | x |" in with_table


# Under Prefect -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize(
    ("module", "name", "kwargs", "expected"),
    [
        ("flows.retag", "retag", {}, "| articles checked | articles changed | tags added |"),
        ("flows.digest", "digest", {}, "| digests prepared | sent | empty |"),
        ("flows.spike_alert", "spike_alert", {}, "| alerts prepared | sent | empty |"),
    ],
)
def test_every_flow_leaves_a_table_and_its_duration(
    sqlite_engine: Engine, module: str, name: str, kwargs: dict, expected: str
) -> None:
    flow = getattr(importlib.import_module(module), name)
    state = flow(**kwargs, return_state=True)
    assert state.is_completed(), state.message
    markdown = artifact_of(state)
    assert expected in markdown
    status, started, seconds = run_row(markdown)
    assert status == "completed" and started[:2] == "20" and float(seconds) >= 0
    assert "Error:" not in markdown


@task
def _unplugged(*args: object, **kwargs: object) -> None:
    raise RuntimeError("database unplugged")


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize(
    ("module", "name", "first_task", "kwargs", "heading"),
    [
        ("flows.ingest", "ingest", "poll_feeds", {}, "# Ingest run 1: failed"),
        ("flows.digest", "digest", "prepare_digests", {}, "# Digest of "),
        ("flows.spike_alert", "spike_alert", "prepare_alerts", {}, "# Spike alert"),
        ("flows.retag", "retag", "retag_batch", {}, "# Retag with taxonomy "),
        ("flows.backfill", "backfill", "discover", {"source": "https://a.example/sitemap.xml"},
         "# Backfill of https://a.example/sitemap.xml"),
    ],
)
def test_a_flow_run_that_fails_still_leaves_its_artifact_with_the_error_and_duration(
    sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch,
    module: str, name: str, first_task: str, kwargs: dict, heading: str,
) -> None:
    flows_module = importlib.import_module(module)
    monkeypatch.setattr(flows_module, first_task, _unplugged)
    state = getattr(flows_module, name)(**kwargs, return_state=True)
    assert state.is_failed()
    markdown = artifact_of(state)
    assert markdown.startswith(heading)
    status, _, seconds = run_row(markdown)
    assert status == "failed" and float(seconds) >= 0
    assert "Error: RuntimeError: database unplugged" in markdown
