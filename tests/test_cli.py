"""The `marsad` command end to end: the contract's commands, options and output fields."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loopback import LoopbackServer
from marsad.cli import app
from webdata import ARABIC_PARAGRAPHS, CHROME, ENGLISH_PARAGRAPHS, Item, article_page, rss

runner = CliRunner()


def marsad(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), input=input)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_user_mistakes_give_one_line_and_a_nonzero_exit(db_url: str, tmp_path: Path) -> None:
    cases = [
        (["feeds", "add", "ftp://example.org/feed"], "not an http(s) URL"),
        (["feeds", "import", str(tmp_path / "missing.opml")], "cannot read"),
        (["articles", "show", "999"], "no article with id 999"),
        (["articles", "list", "--since", "yesterday"], "--since must be a date"),
        (["articles", "list", "--topic", "football"], "unknown topic"),
        (["ingest", "--feed", "https://unknown.example/rss"], "feed not registered"),
    ]
    for args, message in cases:
        code, _out, err = marsad(*args)
        assert code == 1, args
        assert err.startswith("marsad: error: ") and message in err, err
        assert len(err.strip().splitlines()) == 1, err


def test_an_unreachable_database_is_a_friendly_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from marsad.config import reset_settings

    # Port 9 on loopback: nothing listens there, so the connection is refused at once.
    monkeypatch.setenv("MARSAD_DATABASE_URL", "postgresql+psycopg://marsad@127.0.0.1:9/marsad")
    reset_settings()
    code, _out, err = marsad("feeds", "list")
    assert code == 1
    assert err.startswith("marsad: error: cannot reach the database") and "Traceback" not in err


def test_feeds_add_import_and_list(db_url: str, tmp_path: Path) -> None:
    feeds_file = tmp_path / "feeds.yaml"
    feeds_file.write_text(
        "feeds:\n  - url: https://a.example/rss\n    name: A\n    language: ar\n"
        "  - url: https://b.example/atom\n",
        encoding="utf-8",
    )
    assert marsad("feeds", "add", "https://c.example/feed", "--name", "C", "--language", "en")[0] == 0
    assert marsad("feeds", "add", "https://c.example/feed")[0] == 0  # idempotent
    code, _, err = marsad("feeds", "import", str(feeds_file))
    assert code == 0 and "2 feeds added" in err
    code, _, err = marsad("feeds", "import", str(feeds_file))
    assert "0 feeds added, 2 already monitored" in err

    code, out, _ = marsad("feeds", "list", "--format", "json")
    feeds = json.loads(out)
    assert [f["url"] for f in feeds] == ["https://c.example/feed", "https://a.example/rss", "https://b.example/atom"]
    # The contract's fields, and the adaptive polling state and outlet details besides.
    assert set(feeds[0]) == {
        "id", "url", "name", "language", "active", "error_count", "last_status", "last_error", "last_fetched_at",
        "next_poll_at", "poll_interval_minutes", "country", "type", "homepage",
    }
    assert feeds[1]["language"] == "ar" and feeds[0]["active"] is True

    code, out, _ = marsad("feeds", "list", "--format", "csv")
    assert out.splitlines()[0].startswith("id,url,name,language,active")
    code, out, _ = marsad("feeds", "list")
    assert code == 0 and "c.example" in out


@pytest.mark.usefixtures("prefect_harness", "allow_loopback")
def test_ingest_then_read_articles(db_url: str, http_server: LoopbackServer) -> None:
    http_server.add("/news/raid.html", article_page("Four suspects held after desert raid", ENGLISH_PARAGRAPHS))
    http_server.add("/ar/border.html", article_page("اتفاق أمني بين العراق والأردن", ARABIC_PARAGRAPHS, lang="ar"))
    http_server.add("/feed.xml", rss("Frontier Wire", [
        Item("Four suspects held after desert raid", http_server.url("/news/raid.html") + "?utm_source=rss", "1"),
        Item("اتفاق أمني بين العراق والأردن", http_server.url("/ar/border.html"), "2"),
    ]))
    assert marsad("feeds", "add", http_server.url("/feed.xml"), "--name", "Frontier Wire")[0] == 0

    code, _, err = marsad("ingest")
    assert code == 0, err
    assert "2 new articles" in err

    code, out, _ = marsad("articles", "list", "--format", "json")
    listed = json.loads(out)
    # Canonical URLs: the tracking parameter is gone.
    assert sorted(a["url"] for a in listed) == [http_server.url("/ar/border.html"), http_server.url("/news/raid.html")]
    assert set(listed[0]) == {
        "id", "url", "title", "published_at", "language", "source", "topics", "cluster_id", "source_type",
    }
    raid = next(a for a in listed if a["url"].endswith("raid.html"))
    assert raid["source"] == "Frontier Wire" and "isis" in raid["topics"]
    assert raid["published_at"].endswith("+00:00")

    code, out, _ = marsad("articles", "list", "--topic", "regional_cooperation", "--format", "json")
    assert [a["language"] for a in json.loads(out)] == ["ar"]
    code, out, _ = marsad("articles", "list", "--since", "2030-01-01", "--format", "json")
    assert json.loads(out) == []

    code, out, _ = marsad("articles", "show", str(raid["id"]), "--format", "json")
    shown = json.loads(out)
    assert ENGLISH_PARAGRAPHS[0] in shown["text"]
    isis = next(tag for tag in shown["tags"] if tag["topic"] == "isis")
    evidence = isis["evidence"][0]
    field_text = shown["title"] if evidence["field"] == "title" else shown["text"]
    assert 0 <= evidence["start"] < evidence["end"] <= len(field_text)
    assert field_text[evidence["start"]:evidence["end"]].casefold() == evidence["term"].casefold()
    assert {"text", "author", "site_name", "fetched_at", "tags", "places", "actors"} <= set(shown)

    code, out, _ = marsad("articles", "show", str(raid["id"]))
    assert code == 0 and "isis" in out and "Four suspects" in out
    matched = field_text[evidence["start"]:evidence["end"]]
    assert f"«{matched}»" in out  # the match stays visible without a terminal's highlight

    code, out, _ = marsad("articles", "export", "--format", "jsonl")
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 2 and all("text" in line and "tags" in line for line in lines)
    code, out, _ = marsad("articles", "export", "--format", "csv", "--topic", "isis")
    assert out.splitlines()[0].startswith("id,url,title,published_at")

    # A rerun stores nothing new.
    code, _, err = marsad("ingest")
    assert code == 0 and "0 new articles" in err


def test_extract_files_in_order_with_errors_inline(tmp_path: Path) -> None:
    english = tmp_path / "en.html"
    english.write_bytes(article_page("Four suspects held after desert raid", ENGLISH_PARAGRAPHS))
    arabic = tmp_path / "ar.html"
    arabic.write_bytes(article_page("اتفاق أمني بين العراق والأردن", ARABIC_PARAGRAPHS, lang="ar"))
    missing = tmp_path / "missing.html"

    code, out, _ = marsad("extract", str(english), str(missing), str(arabic), "--url", "https://wire.example/x", "--format", "jsonl")

    assert code == 0
    first, second, third = (json.loads(line) for line in out.splitlines())
    assert first["path"] == str(english) and first["url"] == "https://wire.example/x"
    assert first["title"] == "Four suspects held after desert raid"
    assert ENGLISH_PARAGRAPHS[2] in first["text"]
    assert not any(chrome in first["text"] for chrome in CHROME)
    assert first["language"] == "en" and first["author"] == "Rana Haddad"
    assert "error" in second and second["path"] == str(missing)
    assert third["language"] == "ar"
    assert set(first) == {"path", "url", "title", "text", "author", "published_at", "language", "site_name"}


def test_tag_input_jsonl_keeps_order_and_reports_bad_lines(tmp_path: Path) -> None:
    lines = tmp_path / "in.jsonl"
    lines.write_bytes(
        json.dumps({"id": "a", "title": "ISIS cell attacks checkpoint", "text": " ".join(ENGLISH_PARAGRAPHS)}).encode()
        + b"\n{not json\n"
        + b"\xff\xfe not utf-8\n"
        + json.dumps({"id": 7, "title": "Football", "text": "The derby ended in a draw."}).encode()
        + b"\n"
        + json.dumps({"id": "b", "title": ["not", "a", "string"]}).encode()
        + b"\n"
    )
    code, out, _ = marsad("tag", "--input", str(lines), "--format", "jsonl")
    assert code == 0
    first, bad_json, bad_bytes, fourth, bad_title = (json.loads(line) for line in out.splitlines())
    assert first["id"] == "a" and [t["topic"] for t in first["topics"]] == ["isis"]
    evidence = first["topics"][0]["evidence"][0]
    assert set(evidence) == {"term", "field", "start", "end"}
    assert bad_json["line"] == 2 and "error" in bad_json
    assert bad_bytes["line"] == 3 and "utf-8" in bad_bytes["error"]
    assert fourth == {"id": 7, "topics": [], "places": [], "actors": []}
    assert bad_title["id"] == "b" and bad_title["line"] == 5 and "strings" in bad_title["error"]


def test_tag_a_text_file(tmp_path: Path) -> None:
    text_file = tmp_path / "article.txt"
    text_file.write_text(" ".join(ENGLISH_PARAGRAPHS), encoding="utf-8")
    code, out, _ = marsad("tag", str(text_file), "--title", "Raid in the desert")
    assert code == 0
    result = json.loads(out)
    assert "isis" in [t["topic"] for t in result["topics"]]


def test_the_installed_command_runs(tmp_path: Path) -> None:
    """The console script itself, as a user types it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARSAD_")}
    env["MARSAD_DATABASE_URL"] = f"sqlite:///{tmp_path / 'cli.db'}"
    marsad_bin = Path(sys.executable).parent / "marsad"
    command = [str(marsad_bin)] if marsad_bin.exists() else ["marsad"]
    ok = subprocess.run([*command, "init"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([*command, "feeds", "add", "javascript:alert(1)"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == ["marsad: error: not an http(s) URL: 'javascript:alert(1)'"]


def test_days_are_read_in_the_analysts_time_zone(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import datetime, timezone

    from marsad.config import reset_settings
    from marsad.db import make_engine, session_scope
    from models import Article

    engine = make_engine(db_url)
    with session_scope(engine) as session:  # 01:30 on 10 November in Baghdad, still the 9th in UTC
        session.add(Article(canonical_url="https://wire.example/late", url="https://wire.example/late",
                            title="Late story", published_at=datetime(2026, 11, 9, 22, 30, tzinfo=timezone.utc)))
    engine.dispose()

    def listed(*args: str) -> list[dict]:
        code, out, err = marsad("articles", "list", "--format", "json", *args)
        assert code == 0, err
        return json.loads(out)

    assert listed("--since", "2026-11-10") == []
    assert [a["published_at"] for a in listed("--until", "2026-11-09")] == ["2026-11-09T22:30:00+00:00"]
    monkeypatch.setenv("MARSAD_TIMEZONE", "Asia/Baghdad")
    reset_settings()
    assert [a["published_at"] for a in listed("--since", "2026-11-10", "--until", "2026-11-10")] == [
        "2026-11-10T01:30:00+03:00"
    ]
    assert listed("--until", "2026-11-09") == []


@pytest.mark.usefixtures("prefect_harness")
def test_demo_runs_the_pipeline_on_the_sample_web(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's first command: the whole pipeline on the bundled sample web."""
    code, out, err = marsad("demo", "--database", str(tmp_path / "demo.db"))
    assert code == 0, err
    first, second = (line for line in err.splitlines() if line.startswith("run "))
    assert "3 feeds polled (3 ok" in first and "10 new articles" in first
    assert "page:http_404=1" in first  # the sample web's missing page keeps its feed summary
    assert "(0 ok, 3 unchanged, 0 failed), 0 new articles" in second
    assert "CENTCOM" in out and "regional_cooperation" in out
    # The digest of what was just stored, in the outbox since no SMTP server is set.
    from email import message_from_bytes, policy

    digest = message_from_bytes(next(Path("outbox").glob("marsad-digest-*.eml")).read_bytes(), policy=policy.default)
    assert digest["Subject"].startswith("Marsad digest, ")
    assert "Also reported by: The Euphrates Post" in digest.get_body(("plain",)).get_content()
    assert "Digest written to outbox/" in err

    from marsad.config import reset_settings

    monkeypatch.setenv("MARSAD_DATABASE_URL", f"sqlite:///{tmp_path / 'demo.db'}")
    reset_settings()
    code, out, _ = marsad("articles", "list", "--format", "json")
    listed = json.loads(out)
    assert len(listed) == 10 and len({a["url"] for a in listed}) == 10
    assert {a["language"] for a in listed} == {"en", "ar"}
    assert not any("utm_" in a["url"] for a in listed)
    # The Euphrates Post republishes Levant Monitor's raid story: one story cluster, two outlets.
    raid = [a for a in listed if "CENTCOM" in a["title"]]
    assert len(raid) == 2 and raid[0]["cluster_id"] == raid[1]["cluster_id"]
    assert {a["source"] for a in raid} == {"Levant Monitor", "The Euphrates Post"}
    assert len({a["cluster_id"] for a in listed}) == 9
