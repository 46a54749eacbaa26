"""The models and the migrations agree, on SQLite and PostgreSQL, and there is one head."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from marsad.db import ALEMBIC_DIR, VERSION_TABLE, _alembic_config, current_revision, ensure_schema, make_engine

REPO = Path(__file__).resolve().parent.parent


def test_models_and_flows_are_this_repositorys() -> None:
    # `models` and `flows` are generic names: make sure no other installed package shadows them.
    import flows
    import models

    assert Path(models.__file__).resolve().is_relative_to(REPO)
    assert Path(flows.__file__).resolve().is_relative_to(REPO)
    assert ALEMBIC_DIR == REPO / "alembic"
    assert not (ALEMBIC_DIR / "__init__.py").exists()


def test_upgrade_builds_the_schema_with_no_drift_and_one_head(engine: Engine) -> None:
    config = _alembic_config(engine)
    heads = ScriptDirectory.from_config(config).get_heads()
    assert len(heads) == 1
    assert current_revision(engine) == heads[0]
    command.check(config)  # raises when the models differ from the migrations
    tables = set(inspect(engine).get_table_names())
    assert {"feeds", "fetch_events", "articles", "article_tags", "ingest_runs", VERSION_TABLE} <= tables


def test_downgrade_and_upgrade_again(engine: Engine) -> None:
    config = _alembic_config(engine)
    command.downgrade(config, "base")
    assert "articles" not in inspect(engine).get_table_names()
    command.upgrade(config, "head")
    assert "articles" in inspect(engine).get_table_names()


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'wal.db'}")
    ensure_schema(engine)
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() >= 5000
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_each_feeds_newest_article_is_one_index_seek(engine: Engine) -> None:
    # Source health (`marsad status`, the digest's footer) asks every feed for its newest article.
    indexes = {ix["name"]: ix["column_names"] for ix in inspect(engine).get_indexes("articles")}
    assert indexes["ix_articles_feed_id_discovered_at"] == ["feed_id", "discovered_at"]
