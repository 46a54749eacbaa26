"""Sources: the starter list, OPML/YAML export and import with outlet details, `feeds check`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Engine, select

from loopback import LoopbackServer
from test_cli import marsad
from marsad.db import session_scope
from marsad.feeds import SOURCE_TYPES, starter_feed_list
from models import Feed
from webdata import Item, rss

STARTER = Path(__file__).parent.parent / "marsad" / "sources" / "starter.yaml"


def feeds(engine: Engine) -> list[tuple[str, str | None, str | None, str | None, str | None, str | None]]:
    with session_scope(engine) as session:
        return [
            (f.url, f.name, f.language, f.country, f.source_type, f.homepage)
            for f in session.scalars(select(Feed).order_by(Feed.url))
        ]


def test_every_starter_source_is_complete_and_marked_unverified() -> None:
    raw = yaml.safe_load(STARTER.read_text(encoding="utf-8"))["feeds"]
    specs = starter_feed_list()
    assert len(specs) == len(raw) >= 30
    assert len({spec.url for spec in specs}) == len(specs)  # no source twice
    for entry, spec in zip(raw, specs, strict=True):
        assert entry["verified"] is False, entry["url"]  # nothing could be checked offline
        assert spec.name and spec.homepage and spec.country, entry
        assert spec.language in ("en", "ar"), entry
        assert spec.source_type in SOURCE_TYPES, entry
    assert {spec.source_type for spec in specs} == set(SOURCE_TYPES)
    by_language = {lang: sum(spec.language == lang for spec in specs) for lang in ("en", "ar")}
    assert by_language["ar"] >= 10 and by_language["en"] >= 10, by_language
    assert {"SY", "IQ", "JO", "TR"} <= {spec.country for spec in specs}


def test_importing_the_starter_list_twice_adds_it_once(engine: Engine) -> None:
    code, _out, err = marsad("feeds", "import", "--starter")
    assert code == 0, err
    count = len(starter_feed_list())
    assert f"{count} feeds added, 0 already monitored" in err
    assert "marsad status" in err  # says the URLs are unverified and where failures show

    code, _out, err = marsad("feeds", "import", "--starter")
    assert code == 0 and f"0 feeds added, {count} already monitored" in err
    stored = feeds(engine)
    assert len(stored) == count
    centcom = next(row for row in stored if "centcom.mil" in row[0])
    assert centcom[3:5] == ("US", "official")


def test_import_needs_a_file_or_starter_not_both(db_url: str, tmp_path: Path) -> None:
    for args in (["feeds", "import"], ["feeds", "import", str(STARTER), "--starter"]):
        code, _out, err = marsad(*args)
        assert code == 1 and "give a FILE to import, or --starter" in err


@pytest.mark.parametrize("format", ["opml", "yaml"])
def test_export_then_import_gives_the_same_feeds(engine: Engine, tmp_path: Path, format: str) -> None:
    source = tmp_path / "mine.yaml"
    source.write_text(
        "feeds:\n"
        "  - url: https://levant.example/rss\n    name: 'Levant <Monitor> & \"Co\"'\n"
        "    language: ar\n    country: sy\n    type: Independent\n"
        "    homepage: https://levant.example/\n"
        "  - url: https://wire.example/atom\n",
        encoding="utf-8",
    )
    assert marsad("feeds", "import", str(source))[0] == 0
    before = feeds(engine)
    assert before[0][3:5] == ("SY", "independent")  # normalised on the way in

    code, exported, err = marsad("feeds", "export", "--format", format)
    assert code == 0, err
    if format == "opml":
        assert exported.startswith("<?xml") and 'sourceType="independent"' in exported
        assert "&lt;Monitor&gt; &amp;" in exported  # escaped, not broken
    exported_file = tmp_path / f"exported.{format}"
    exported_file.write_text(exported, encoding="utf-8")

    with session_scope(engine) as session:
        session.execute(Feed.__table__.delete())
    assert marsad("feeds", "import", str(exported_file))[0] == 0
    assert feeds(engine) == before
    assert marsad("feeds", "export", "--format", format)[1] == exported  # a fixed point

    code, _out, err = marsad("feeds", "import", str(exported_file))
    assert code == 0 and "0 feeds added, 2 already monitored" in err


def test_import_fills_outlet_details_a_known_feed_lacks_and_keeps_the_rest(engine: Engine, tmp_path: Path) -> None:
    assert marsad("feeds", "add", "https://wire.example/atom", "--name", "My name")[0] == 0
    details = tmp_path / "details.yaml"
    details.write_text(
        "- url: https://wire.example/atom\n  name: Their name\n  country: TR\n  type: wire\n",
        encoding="utf-8",
    )
    assert marsad("feeds", "import", str(details))[0] == 0
    assert feeds(engine) == [("https://wire.example/atom", "My name", None, "TR", "wire", None)]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("type: tabloid", "feeds[0]: type 'tabloid' is not one of independent, state, wire"),
        ("country: Syria", "feeds[0]: country 'Syria' is not a two-letter code"),
        ("homepage: javascript:alert(1)", "feeds[0] homepage"),
    ],
)
def test_bad_outlet_details_are_refused_naming_the_entry(db_url: str, tmp_path: Path, entry: str, message: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"- url: https://a.example/rss\n  {entry}\n", encoding="utf-8")
    code, _out, err = marsad("feeds", "import", str(bad))
    assert code == 1 and message in err, err


def test_opml_with_entity_declarations_is_refused(db_url: str, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.opml"
    bomb.write_text(
        '<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
        '<opml version="2.0"><body><outline text="&b;" xmlUrl="https://a.example/rss"/></body></opml>',
        encoding="utf-8",
    )
    code, _out, err = marsad("feeds", "import", str(bomb))
    assert code == 1 and "entity declarations" in err


@pytest.mark.usefixtures("allow_loopback")
def test_feeds_check_shows_the_newest_items_and_stores_nothing(engine: Engine, http_server: LoopbackServer) -> None:
    items = [
        Item("Older raid near Deir ez-Zor", http_server.url("/a/1.html"), "g1", "Summary one.",
             pub_date="Mon, 02 Nov 2026 08:00:00 +0000"),
        Item("Newest border talks", http_server.url("/a/2.html"), "g2", "Summary two.",
             pub_date="Tue, 10 Nov 2026 08:00:00 +0000"),
    ]
    http_server.add("/feed.xml", rss("Wire", items), content_type="application/rss+xml")
    code, out, err = marsad("feeds", "check", http_server.url("/feed.xml"), "--limit", "1", "--format", "json")
    assert code == 0, err
    assert "Wire: HTTP 200" in err and "2 items" in err
    rows = json.loads(out)
    assert [row["title"] for row in rows] == ["Newest border talks"]
    assert feeds(engine) == []  # a check records nothing


@pytest.mark.usefixtures("allow_loopback")
def test_feeds_check_says_why_a_feed_cannot_be_read(db_url: str, http_server: LoopbackServer) -> None:
    http_server.add("/page.html", "<html><body><p>Not a feed.</p></body></html>")
    http_server.add("/gone.xml", "gone", status=410)
    cases = [
        (http_server.url("/page.html"), "not an RSS or Atom feed"),
        (http_server.url("/gone.xml"), "HTTP 410"),
        # 127.0.0.2 is outside the test allowlist (127.0.0.1): refused before any connection.
        (f"http://127.0.0.2:{http_server.port}/feed.xml", "127.0.0.2"),
    ]
    for url, reason in cases:
        code, _out, err = marsad("feeds", "check", url)
        assert code == 1, url
        assert err.startswith(f"marsad: error: {url}: ") and reason in err, err
        assert len(err.strip().splitlines()) == 1


# --- outlet types downstream: trends, article filters, the digest ---------------------------------


@pytest.fixture
def typed_outlets(engine: Engine) -> Engine:
    """The same ISIS raid from an independent outlet and (a copy) from a state agency, and a
    CENTCOM strike from an official source."""
    from datetime import timedelta

    from digest_data import CENTCOM_STRIKE, HAMRIN_RAID, HAMRIN_RAID_COPY, add_article, add_feed
    from test_digest import NOW

    with session_scope(engine) as session:
        monitor = add_feed(session, "Levant Monitor", "https://levant-monitor.example/feed")
        agency = add_feed(session, "State Agency", "https://agency.example/rss")
        centcom = add_feed(session, "CENTCOM", "https://centcom.example/rss")
        monitor.source_type, agency.source_type, centcom.source_type = "independent", "state", "official"
        add_article(session, agency, HAMRIN_RAID, fetched=NOW - timedelta(hours=3), published=NOW - timedelta(hours=4))
        add_article(session, monitor, HAMRIN_RAID_COPY, fetched=NOW - timedelta(hours=2),
                    published=NOW - timedelta(hours=3))
        add_article(session, centcom, CENTCOM_STRIKE, fetched=NOW - timedelta(hours=5),
                    published=NOW - timedelta(hours=6))
    return engine


def test_trends_count_per_outlet_type(typed_outlets: Engine) -> None:
    by_option = marsad("trends", "--topic", "isis", "--by", "source-type", "--since", "2026-11-20",
                       "--until", "2026-11-20", "--format", "json")
    assert by_option[0] == 0, by_option[2]
    rows = json.loads(by_option[1])
    assert {(r["source_type"], r["count"]) for r in rows} == {("independent", 1), ("state", 1), ("official", 1)}
    assert {r["period"] for r in rows} == {"2026-11-20"}
    breakdown = marsad("trends", "--topic", "isis", "--breakdown", "source-type", "--since", "2026-11-20",
                       "--until", "2026-11-20", "--format", "json")
    assert json.loads(breakdown[1]) == rows
    code, _out, err = marsad("trends", "--by", "source-type", "--breakdown", "place")
    assert code == 1 and "drop --breakdown" in err


def test_articles_list_and_export_filter_by_outlet_type(typed_outlets: Engine) -> None:
    code, out, err = marsad("articles", "list", "--source-type", "official", "--format", "json")
    assert code == 0, err
    listed = json.loads(out)
    assert [(a["source"], a["source_type"]) for a in listed] == [("CENTCOM", "official")]
    code, out, _ = marsad("articles", "export", "--source-type", "state")
    assert [json.loads(line)["source"] for line in out.splitlines()] == ["State Agency"]
    code, _out, err = marsad("articles", "list", "--source-type", "tabloid")
    assert code == 1 and "unknown source type 'tabloid'" in err


def test_the_digest_labels_state_and_official_sources(typed_outlets: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from email import message_from_bytes, policy

    from marsad.config import reset_settings
    from test_digest import run_digest

    monkeypatch.setenv("MARSAD_DIGEST_TO", "analyst@newsroom.test")
    reset_settings()
    (report,) = run_digest(typed_outlets)
    message = message_from_bytes(report.files[0].read_bytes(), policy=policy.default)
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    # The raid's lead is the state agency's (it ran first); the copy is "also reported by".
    assert "State Agency</bdi></b> <span" in html and ">state media</span>" in html
    assert ">official</span>" in html
    assert "State Agency (state media)" in text and "CENTCOM (official)" in text
    assert "Levant Monitor (" not in text  # independent outlets carry no label


@pytest.mark.usefixtures("allow_loopback", "prefect_harness")
def test_backfill_command_stores_a_sitemaps_pages_in_range(
    engine: Engine, http_server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from marsad.config import reset_settings
    from models import Article
    from webdata import ENGLISH_PARAGRAPHS, article_page

    monkeypatch.setenv("MARSAD_BACKFILL_HOST_INTERVAL", "0")
    reset_settings()
    entries = []
    for n, day in enumerate(["2026-10-30", "2026-11-02", "2026-11-05"]):
        path = f"/2026/story-{n}.html"
        http_server.add(path, article_page(f"Archive story {n}", ENGLISH_PARAGRAPHS))
        entries.append(
            f"<url><loc>{http_server.url(path)}</loc><news:news><news:publication_date>{day}"
            "</news:publication_date><news:title>t</news:title></news:news></url>"
        )
    http_server.add(
        "/sitemap.xml",
        '<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9" '
        'xmlns:news="http://www.google.com/schemas/sitemap-news/0.9">' + "".join(entries) + "</urlset>",
        content_type="application/xml",
    )
    args = ["backfill", http_server.url("/sitemap.xml"), "--since", "2026-11-01", "--until", "2026-11-30"]
    code, _out, err = marsad(*args)
    assert code == 0, err
    assert "2 new" in err and "1 out of range" in err and "2 pages stored" in err
    with session_scope(engine) as session:
        stored = sorted(session.scalars(select(Article.url)))
    assert stored == [http_server.url("/2026/story-1.html"), http_server.url("/2026/story-2.html")]

    code, _out, err = marsad(*args)  # again: nothing new, nothing stored twice
    assert code == 0 and "0 new, 2 already known" in err
    code, _out, err = marsad("backfill", f"http://127.0.0.2:{http_server.port}/sitemap.xml")
    # Above it, Prefect's own log of the failed run (the UI shows the same); last, the reason.
    last = err.strip().splitlines()[-1]
    assert code == 1 and last.startswith("marsad: error: ") and "refusing 127.0.0.2" in last
