"""The daily digest, end to end against a real SMTP server (aiosmtpd) and both databases."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from datetime import date, datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path

import pytest
from digest_data import (
    AMMAN_BAGHDAD,
    CENTCOM_STRIKE,
    HAMRIN_RAID,
    HAMRIN_RAID_COPY,
    HOSTILE,
    WHEAT_PRICES,
    Sample,
    add_article,
    add_feed,
)
from smtp import SmtpServer
from sqlalchemy import Engine, func, select

from marsad import delivery
from marsad.config import get_settings, reset_settings
from marsad.db import session_scope
from marsad.digest import check_address
from marsad.errors import InputError
from models import Digest, DigestItem, DigestStatus, Feed

NOW = datetime(2026, 11, 20, 7, 0, tzinfo=timezone.utc)
DAY = date(2026, 11, 20)


def run_digest(engine: Engine, now: datetime = NOW, day: date = DAY, to: list[str] | None = None) -> list[delivery.DeliveryReport]:
    """What one run of the digest flow does, without Prefect."""
    settings = get_settings()
    delivery.prepare(engine, settings, day, now, to)
    return [delivery.deliver(engine, settings, i, now) for i in delivery.undelivered(engine, to)]


@pytest.fixture
def newsroom(engine: Engine) -> dict[str, int]:
    """Two outlets; an ISIS story carried by both, a coalition story, an Arabic cooperation story,
    one off-topic story and one whose title and text try to inject HTML."""
    with session_scope(engine) as session:
        monitor = add_feed(session, "Levant Monitor", "https://levant-monitor.example/feed")
        wire = add_feed(session, "Wire & <Co>", "https://wire.example/rss")
        jisr = add_feed(session, "الجسر", "https://jisr.example/atom")
        ids = {
            "raid": add_article(session, monitor, HAMRIN_RAID, fetched=NOW - timedelta(hours=3),
                                published=NOW - timedelta(hours=4)).id,
            "raid_copy": add_article(session, wire, HAMRIN_RAID_COPY, fetched=NOW - timedelta(hours=2),
                                     published=NOW - timedelta(hours=3)).id,
            "strike": add_article(session, monitor, CENTCOM_STRIKE, fetched=NOW - timedelta(hours=5),
                                  published=NOW - timedelta(hours=6)).id,
            "amman": add_article(session, jisr, AMMAN_BAGHDAD, fetched=NOW - timedelta(hours=1),
                                 published=NOW - timedelta(hours=2)).id,
            "wheat": add_article(session, monitor, WHEAT_PRICES, fetched=NOW - timedelta(hours=1)).id,
            "hostile": add_article(session, wire, HOSTILE, fetched=NOW - timedelta(hours=1),
                                   url="javascript:alert(3)//wire.example/x").id,
        }
    return ids


def parts(message: EmailMessage) -> tuple[str, str]:
    return (
        message.get_body(("plain",)).get_content(),  # type: ignore[union-attr]
        message.get_body(("html",)).get_content(),  # type: ignore[union-attr]
    )


def digest_rows(engine: Engine) -> list[Digest]:
    with session_scope(engine) as session:
        return list(session.scalars(select(Digest).order_by(Digest.id)))


# --- content ------------------------------------------------------------------------------------


def test_digest_arrives_once_well_formed_and_grouped_by_topic(
    engine: Engine, newsroom: dict[str, int], smtp_server: SmtpServer
) -> None:
    reports = run_digest(engine)
    assert [r.status for r in reports] == ["sent"]
    assert len(smtp_server.sink.received) == 1
    received = smtp_server.sink.received[0]
    assert received.sender == "marsad@observatory.test"
    assert received.recipients == ["analyst@newsroom.test"]
    message = received.message
    assert message.get_content_type() == "multipart/alternative"
    assert message["To"] == "analyst@newsroom.test"
    assert message["Date"] and re.fullmatch(r"<[^<>@\s]+@observatory\.test>", message["Message-ID"])
    # Four stories: the raid once (its copy is "also reported by"), strike, Amman, hostile.
    assert message["Subject"] == (
        "Marsad digest, Fri 20 Nov 2026: 4 stories (ISIS 2, coalition 1, regional cooperation 1)"
    )
    text, html = parts(message)
    for body in (text, html):
        assert body.count(HAMRIN_RAID.title) == 1
        assert HAMRIN_RAID_COPY.title not in body  # one story, shown once
        assert "Wheat prices" not in body  # no topic, no place in the digest
    # Sections in topic order, each story in its strongest topic's section.
    isis_at, coalition_at, regional_at = (
        text.index("== ISIS (2) =="),
        text.index("== THE ANTI-ISIS COALITION (1) =="),
        text.index("== REGIONAL COOPERATION (1) =="),
    )
    assert isis_at < text.index(HAMRIN_RAID.title) < coalition_at < text.index(CENTCOM_STRIKE.title) < regional_at
    assert text.index(AMMAN_BAGHDAD.title) > regional_at
    assert "Also reported by: Wire & <Co>" in text
    assert "Also reported by: <span dir=\"auto\">Wire &amp; &lt;Co&gt;</span>" in html
    # Evidence highlighted in the snippet, in both parts.
    assert "<mark" in html and re.search(r"<mark[^>]*>Islamic State</mark>", html)
    assert "*Islamic State*" in text
    assert "Places:" in text and "Kirkuk" in text
    # The Arabic story reads right to left.
    arabic_block = html[html.index(AMMAN_BAGHDAD.title) - 600 : html.index(AMMAN_BAGHDAD.title)]
    assert 'dir="rtl"' in arabic_block


def test_fetched_text_is_escaped_and_unsafe_links_are_not_clickable(
    engine: Engine, newsroom: dict[str, int], smtp_server: SmtpServer
) -> None:
    run_digest(engine)
    message = smtp_server.sink.messages()[0]
    text, html = parts(message)
    assert "<script" not in html and "onerror=" not in html.replace("onerror=alert(1)&gt;", "")
    assert "&lt;script&gt;alert(&#34;title&#34;)&lt;/script&gt;" in html
    assert "<img" not in html and "<b onmouseover" not in html
    assert 'href="javascript:' not in html.lower()
    assert "javascript:" not in text  # not offered as a link in the plain part either
    # The plain part shows the title as text, as written.
    assert '<script>alert("title")</script> ISIS cell' in text
    # Headers carry no fetched text.
    for name, value in message.items():
        assert "<script" not in str(value), name


def test_second_run_sends_nothing_and_next_day_carries_only_what_is_new(
    engine: Engine, newsroom: dict[str, int], smtp_server: SmtpServer
) -> None:
    run_digest(engine)
    assert [r.status for r in run_digest(engine, now=NOW + timedelta(hours=2))] == []
    assert len(smtp_server.sink.received) == 1

    # A story fetched just before the first digest's cut-off but stored after it (a batch
    # committed late) must not be lost, and nothing already sent comes back.
    with session_scope(engine) as session:
        feed = session.scalar(select(Feed).where(Feed.name == "Levant Monitor"))
        late = add_article(session, feed, Sample(
            "late-strike", "Coalition aircraft strike ISIS hideouts in Anbar desert",
            "Aircraft of the U.S.-led coalition struck ISIS hideouts in the Anbar desert overnight, "
            "the Iraqi Joint Operations Command said, killing several militants of the group.",
            "en", frozenset({"coalition", "isis"})), fetched=NOW - timedelta(minutes=1)).id
    next_day = NOW + timedelta(days=1)
    reports = run_digest(engine, now=next_day, day=DAY + timedelta(days=1))
    assert [r.status for r in reports] == ["sent"]
    text, _ = parts(smtp_server.sink.messages()[1])
    assert "Coalition aircraft strike ISIS hideouts" in text
    assert HAMRIN_RAID.title not in text and CENTCOM_STRIKE.title not in text
    rows = digest_rows(engine)
    assert rows[1].period_start == rows[0].period_end  # no gap between two digests
    with session_scope(engine) as session:
        carried = session.scalars(select(DigestItem.article_id).where(DigestItem.digest_id == rows[1].id)).all()
    assert carried == [late]


def test_late_copy_of_a_story_already_sent_is_not_shown_again(
    engine: Engine, newsroom: dict[str, int], smtp_server: SmtpServer
) -> None:
    run_digest(engine)
    with session_scope(engine) as session:
        feed = add_feed(session, "Third Outlet", "https://third.example/feed")
        add_article(session, feed, HAMRIN_RAID_COPY, fetched=NOW + timedelta(hours=5),
                    url="https://third.example/raid")
    next_day = run_digest(engine, now=NOW + timedelta(days=1), day=DAY + timedelta(days=1))
    assert next_day == []  # only a late copy: nothing new
    assert digest_rows(engine)[1].status == DigestStatus.EMPTY

    with session_scope(engine) as session:
        feed = session.scalar(select(Feed).where(Feed.name == "Third Outlet"))
        add_article(session, feed, CENTCOM_STRIKE, fetched=NOW + timedelta(days=1, hours=5),
                    url="https://third.example/strike")
        add_article(session, feed, Sample(
            "camp-transfer", "Hundreds of ISIS detainees' relatives leave al-Hol camp",
            "Some three hundred Iraqi women and children left al-Hol camp on Thursday, the camp "
            "administration said, in the latest return of relatives of Islamic State fighters.",
            "en", frozenset({"isis"})), fetched=NOW + timedelta(days=1, hours=6))
    run_digest(engine, now=NOW + timedelta(days=2), day=DAY + timedelta(days=2))
    text, _ = parts(smtp_server.sink.messages()[1])
    assert "leave al-Hol camp" in text
    assert "Three ISIS militants" not in text and CENTCOM_STRIKE.title not in text
    assert "1 later copy of stories sent in earlier digests not shown again." in text  # the strike


def test_long_section_shows_its_top_stories_and_counts_the_rest(
    engine: Engine, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARSAD_DIGEST_MAX_STORIES", "2")
    reset_settings()
    with session_scope(engine) as session:
        feed = add_feed(session, "Levant Monitor", "https://levant-monitor.example/feed")
        for n, town in enumerate(["Tikrit", "Baiji", "Samarra", "Haditha"]):
            add_article(session, feed, Sample(
                f"raid-{n}", f"Islamic State cell dismantled near {town}",
                f"Iraqi forces dismantled an Islamic State cell near {town} on day {n}, seizing "
                f"weapons; {n + 2} ISIS suspects were detained, officials said.",
                "en", frozenset({"isis"})), fetched=NOW - timedelta(hours=n + 1))
    run_digest(engine)
    text, html = parts(smtp_server.sink.messages()[0])
    assert "== ISIS (4) ==" in text
    assert text.count("* Islamic State cell dismantled") == 2
    assert "2 more stories: marsad articles list --topic isis --since 2026-11-19" in text
    assert "2 more stories in this section" in html


def test_subscription_topics_filter_a_recipient_digest(engine: Engine, newsroom: dict[str, int], smtp_server: SmtpServer) -> None:
    with session_scope(engine) as session:
        delivery.subscribe(session, "cooperation@desk.test", ["regional_cooperation"])
    reports = run_digest(engine)
    assert sorted(r.recipient for r in reports) == ["analyst@newsroom.test", "cooperation@desk.test"]
    by_recipient = {r.recipients[0]: r.message for r in smtp_server.sink.received}
    text, _ = parts(by_recipient["cooperation@desk.test"])
    assert AMMAN_BAGHDAD.title in text
    assert HAMRIN_RAID.title not in text and CENTCOM_STRIKE.title not in text
    assert "1 story (regional cooperation 1)" in by_recipient["cooperation@desk.test"]["Subject"]


def test_trends_strip_compares_the_day_with_the_weeks_before(engine: Engine, smtp_server: SmtpServer) -> None:
    with session_scope(engine) as session:
        feed = add_feed(session, "Levant Monitor", "https://levant-monitor.example/feed")
        for n in range(3):  # three ISIS stories today
            add_article(session, feed, Sample(
                f"today-{n}", f"ISIS attack number {n} repelled",
                f"Fighters of the Islamic State attacked army post {n}; soldiers repelled the ISIS attack.",
                "en", frozenset({"isis"})), fetched=NOW - timedelta(hours=n + 1), published=NOW - timedelta(hours=n + 2))
        for n in range(14):  # fourteen over the previous week: 2 a day
            add_article(session, feed, Sample(
                f"week-{n}", f"ISIS attack {n} last week",
                f"Fighters of the Islamic State attacked army post {n}; soldiers repelled the ISIS attack.",
                "en", frozenset({"isis"})), fetched=NOW - timedelta(days=2, hours=n),
                published=NOW - timedelta(days=1, hours=6 + n * 12))
    run_digest(engine)
    text, html = parts(smtp_server.sink.messages()[0])
    isis_line = next(line for line in text.splitlines() if line.strip().startswith("ISIS") and "(" in line)
    assert isis_line.split() == ["ISIS", "3", "(2.0,", "0.5)"]
    assert 'bgcolor="#b91c1c"' in html  # drawn with table cells, no images
    assert "<img" not in html and "<script" not in html


# --- delivery -----------------------------------------------------------------------------------


def test_server_down_keeps_the_digest_pending_until_the_next_run(
    engine: Engine, newsroom: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = SmtpServer()
    monkeypatch.setenv("MARSAD_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("MARSAD_SMTP_PORT", str(server.port))  # nothing listens there yet
    monkeypatch.setenv("MARSAD_SMTP_SECURITY", "none")
    monkeypatch.setenv("MARSAD_DIGEST_TO", "analyst@newsroom.test")
    reset_settings()
    reports = run_digest(engine)
    assert [r.status for r in reports] == ["pending"]
    assert "connection refused" in reports[0].detail
    row = digest_rows(engine)[0]
    assert row.status == DigestStatus.PENDING and row.attempts == 1 and "refused" in (row.last_error or "")
    assert reports[0].files[0].exists()  # the outbox always has it

    with server:
        reports = run_digest(engine, now=NOW + timedelta(minutes=30))
        assert [r.status for r in reports] == ["sent"]
        assert len(server.sink.received) == 1
        assert server.sink.received[0].message["Message-ID"] == row.message_id
        assert run_digest(engine, now=NOW + timedelta(hours=1)) == []
    assert len(server.sink.received) == 1


@pytest.mark.parametrize(("mode", "status"), [("tempfail", "pending"), ("busy", "pending"), ("reject", "failed")])
def test_smtp_replies_decide_between_retry_and_failure(
    engine: Engine, newsroom: dict[str, int], smtp_server: SmtpServer, mode: str, status: str
) -> None:
    smtp_server.sink.mode = mode
    reports = run_digest(engine)
    assert [r.status for r in reports] == [status]
    assert re.search(r"\b(451|421|550)\b", reports[0].detail)
    smtp_server.sink.mode = "accept"
    later = run_digest(engine, now=NOW + timedelta(hours=1))
    if status == "pending":  # a temporary refusal goes out on the next run
        assert [r.status for r in later] == ["sent"]
        assert len(smtp_server.sink.received) == 1
    else:  # a permanent one waits for an operator
        assert later == [] and smtp_server.sink.received == []


def test_connection_dropped_after_data_is_unknown_and_retried_once_with_the_same_message_id(
    engine: Engine, newsroom: dict[str, int], smtp_server: SmtpServer
) -> None:
    smtp_server.sink.mode = "drop_after_data"
    first = run_digest(engine)
    assert [r.status for r in first] == ["unknown"]
    assert len(smtp_server.sink.received) == 1

    smtp_server.sink.mode = "accept"
    assert [r.status for r in run_digest(engine, now=NOW + timedelta(minutes=20))] == ["sent"]
    ids = [m["Message-ID"] for m in smtp_server.sink.messages()]
    assert len(ids) == 2 and ids[0] == ids[1]
    assert smtp_server.sink.received[0].raw == smtp_server.sink.received[1].raw
    assert run_digest(engine, now=NOW + timedelta(hours=1)) == []


def test_unknown_twice_stops_retrying(engine: Engine, newsroom: dict[str, int], smtp_server: SmtpServer) -> None:
    smtp_server.sink.mode = "drop_after_data"
    run_digest(engine)
    second = run_digest(engine, now=NOW + timedelta(minutes=20))
    assert [r.status for r in second] == ["failed"]
    assert run_digest(engine, now=NOW + timedelta(hours=1)) == []
    assert len(smtp_server.sink.received) == 2
    assert "unknown twice" in (digest_rows(engine)[0].last_error or "")


def test_two_runs_delivering_at_once_send_one_digest(
    engine: Engine, newsroom: dict[str, int], smtp_server: SmtpServer
) -> None:
    settings = get_settings()
    delivery.prepare(engine, settings, DAY, NOW)
    delivery.prepare(engine, settings, DAY, NOW)  # a second run prepares nothing new
    assert len(digest_rows(engine)) == 1
    digest_id = digest_rows(engine)[0].id
    barrier = threading.Barrier(4)
    results: list[str] = []

    def deliver() -> None:
        barrier.wait()
        results.append(delivery.deliver(engine, settings, digest_id, NOW).status)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results).count("sent") == 1
    assert len(smtp_server.sink.received) == 1


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_password_is_used_and_never_reported(
    engine: Engine, newsroom: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    with SmtpServer(require_auth=True) as server:
        for name, value in {
            "HOST": "127.0.0.1", "PORT": str(server.port), "SECURITY": "none",
            "USERNAME": "marsad", "PASSWORD": "wrong-pass",
        }.items():
            monkeypatch.setenv(f"MARSAD_SMTP_{name}", value)
        monkeypatch.setenv("MARSAD_DIGEST_TO", "analyst@newsroom.test")
        reset_settings()
        reports = run_digest(engine)
        assert [r.status for r in reports] == ["failed"]
        assert "authentication" in reports[0].detail and "wrong-pass" not in reports[0].detail
        assert "wrong-pass" not in repr(delivery.smtp_server(get_settings()))
        assert "wrong-pass" not in repr(get_settings())

        with session_scope(engine) as session:  # an operator fixes the password and requeues
            session.get(Digest, digest_rows(engine)[0].id).status = DigestStatus.PENDING
        monkeypatch.setenv("MARSAD_SMTP_PASSWORD", "s3cret-pass")
        reset_settings()
        assert [r.status for r in run_digest(engine, now=NOW + timedelta(hours=1))] == ["sent"]
        assert server.sink.auth[-1] == ("marsad", "s3cret-pass")


# --- outbox, empty periods, addresses ----------------------------------------------------------


def test_without_smtp_the_digest_goes_to_the_outbox_once(engine: Engine, newsroom: dict[str, int]) -> None:
    reports = run_digest(engine)
    assert [r.status for r in reports] == ["sent"]
    eml, html = reports[0].files
    assert eml == Path("outbox") / "marsad-digest-2026-11-20-marsad@localhost.eml"
    assert html.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert b"Subject: Marsad digest, Fri 20 Nov 2026: 4 stories" in eml.read_bytes()
    row = digest_rows(engine)[0]
    assert row.transport == "outbox" and row.recipient == "marsad@localhost"
    assert run_digest(engine, now=NOW + timedelta(hours=1)) == []


def test_empty_period_sends_nothing_unless_asked(
    engine: Engine, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_digest(engine) == []
    assert smtp_server.sink.received == []
    assert digest_rows(engine)[0].status == DigestStatus.EMPTY

    monkeypatch.setenv("MARSAD_DIGEST_SEND_EMPTY", "true")
    reset_settings()
    reports = run_digest(engine, now=NOW + timedelta(days=1), day=DAY + timedelta(days=1))
    assert [r.status for r in reports] == ["sent"]
    message = smtp_server.sink.messages()[0]
    assert message["Subject"] == "Marsad digest, Sat 21 Nov 2026: nothing new"
    assert "Nothing new on isis, coalition, regional cooperation" in parts(message)[0]


@pytest.mark.parametrize(
    "bad",
    ["analyst@newsroom.test\r\nBcc: spy@elsewhere.test", "a@b.test, c@d.test", "no-at-sign", "x@y.test\n"],
)
def test_addresses_that_could_add_headers_or_recipients_are_refused(bad: str) -> None:
    with pytest.raises(InputError):
        check_address(bad)


def test_day_boundaries_follow_the_analysts_time_zone(
    engine: Engine, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARSAD_TIMEZONE", "Asia/Baghdad")  # UTC+3
    reset_settings()
    with session_scope(engine) as session:
        feed = add_feed(session, "Levant Monitor", "https://levant-monitor.example/feed")
        # 22:30 UTC on the 18th is 01:30 on the 19th in Baghdad: inside a first digest of the
        # 20th, which starts at midnight of the 19th, Baghdad time.
        add_article(session, feed, HAMRIN_RAID, fetched=datetime(2026, 11, 18, 22, 30, tzinfo=timezone.utc))
        # 20:30 UTC on the 18th is 23:30 on the 18th in Baghdad: too early (and beyond the look-back).
        add_article(session, feed, CENTCOM_STRIKE, fetched=datetime(2026, 11, 18, 14, 30, tzinfo=timezone.utc))
    run_digest(engine)
    row = digest_rows(engine)[0]
    assert row.period_start == datetime(2026, 11, 18, 21, 0, tzinfo=timezone.utc)
    text, _ = parts(smtp_server.sink.messages()[0])
    assert HAMRIN_RAID.title in text and CENTCOM_STRIKE.title not in text
    assert "(Asia/Baghdad)" in text


def test_an_earlier_date_than_the_last_digest_is_refused(engine: Engine, newsroom: dict[str, int]) -> None:
    run_digest(engine)
    with pytest.raises(InputError, match="only move forward"):
        run_digest(engine, day=DAY - timedelta(days=2))


def test_a_future_date_is_refused_and_records_nothing(engine: Engine, newsroom: dict[str, int]) -> None:
    with pytest.raises(InputError, match="in the future"):
        run_digest(engine, day=DAY + timedelta(days=1))
    assert digest_rows(engine) == []
    assert [r.status for r in run_digest(engine)] == ["sent"]  # today's digest is not held back


def test_source_health_lists_failing_and_silent_feeds(engine: Engine, smtp_server: SmtpServer) -> None:
    with session_scope(engine) as session:
        broken = add_feed(session, "Broken Feed", "https://broken.example/rss")
        broken.error_count, broken.last_status, broken.last_error = 3, "error", "HTTP 503"
        quiet = add_feed(session, "Quiet Daily", "https://quiet.example/rss")
        for n in range(20):  # a feed that used to publish daily, silent for five days
            add_article(session, quiet, WHEAT_PRICES, fetched=NOW - timedelta(days=5 + n),
                        url=f"https://quiet.example/{n}")
        live = add_feed(session, "Levant Monitor", "https://levant-monitor.example/feed")
        add_article(session, live, HAMRIN_RAID, fetched=NOW - timedelta(hours=1))
    run_digest(engine)
    text, _html = parts(smtp_server.sink.messages()[0])
    assert "Failing: Broken Feed: error: HTTP 503 (3 failures in a row)" in text
    assert re.search(r"Silent: Quiet Daily: nothing new for 5 days", text)
    assert "Levant Monitor:" not in text.split("SOURCE HEALTH")[1]


def test_items_record_every_article_carried(engine: Engine, newsroom: dict[str, int], smtp_server: SmtpServer) -> None:
    run_digest(engine)
    with session_scope(engine) as session:
        carried = set(session.scalars(select(DigestItem.article_id)))
        count = session.scalar(select(func.count()).select_from(DigestItem))
    expected = {newsroom[k] for k in ("raid", "raid_copy", "strike", "amman", "hostile")}
    assert carried == expected and count == len(expected)


# --- the command and the flow --------------------------------------------------------------------


@pytest.mark.usefixtures("prefect_harness")
def test_marsad_digest_command_runs_the_flow_and_a_second_call_sends_nothing(
    engine: Engine, newsroom: dict[str, int], smtp_server: SmtpServer
) -> None:
    from typer.testing import CliRunner

    from marsad.cli import app

    runner = CliRunner()
    # The articles were stored "today" (NOW); the command uses the real clock, so date them now.
    with session_scope(engine) as session:
        from models import Article

        for article in session.scalars(select(Article)):
            article.fetched_at = datetime.now(timezone.utc) - timedelta(minutes=30)
    first = runner.invoke(app, ["digest"])
    assert first.exit_code == 0, first.output
    assert "1 sent" in first.stderr and "analyst@newsroom.test: sent" in first.stderr
    second = runner.invoke(app, ["digest"])
    assert second.exit_code == 0, second.output
    assert "0 digests prepared" in second.stderr
    assert len(smtp_server.sink.received) == 1
    state = digest_rows(engine)[0]
    assert state.status == DigestStatus.SENT and state.transport == "smtp"


def test_dry_run_writes_files_and_records_nothing(engine: Engine, newsroom: dict[str, int], smtp_server: SmtpServer) -> None:
    from typer.testing import CliRunner

    from marsad.cli import app

    result = CliRunner().invoke(app, ["digest", "--dry-run", "--date", "2026-11-20", "--to", "desk@newsroom.test"])
    assert result.exit_code == 0, result.output
    paths = [Path(line) for line in result.stdout.split()]
    assert [p.suffix for p in paths] == [".eml", ".html"]
    assert all(p.exists() and p.name.startswith("preview-") for p in paths)
    assert b"To: desk@newsroom.test" in paths[0].read_bytes()
    assert digest_rows(engine) == [] and smtp_server.sink.received == []


def test_digest_command_refuses_a_header_injection_in_to(db_url: str) -> None:
    from typer.testing import CliRunner

    from marsad.cli import app

    result = CliRunner().invoke(app, ["digest", "--dry-run", "--to", "a@b.test\r\nBcc: c@d.test"])
    assert result.exit_code == 1
    assert result.stderr.startswith("marsad: error: not a plain e-mail address")


def test_subscriptions_commands(db_url: str) -> None:
    import json

    from typer.testing import CliRunner

    from marsad.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["subscriptions", "add", "desk@newsroom.test", "--topic", "coalition"]).exit_code == 0
    assert runner.invoke(app, ["subscriptions", "add", "all@newsroom.test"]).exit_code == 0
    rows = json.loads(runner.invoke(app, ["subscriptions", "list", "--format", "json"]).stdout)
    assert [(r["address"], r["topics"]) for r in rows] == [
        ("all@newsroom.test", ["isis", "coalition", "regional_cooperation"]),
        ("desk@newsroom.test", ["coalition"]),
    ]
    bad = runner.invoke(app, ["subscriptions", "add", "desk@newsroom.test", "--topic", "football"])
    assert bad.exit_code == 1 and "unknown topic" in bad.stderr
    assert runner.invoke(app, ["subscriptions", "remove", "desk@newsroom.test"]).exit_code == 0
    again = runner.invoke(app, ["subscriptions", "remove", "desk@newsroom.test"])
    assert again.exit_code == 1 and "no active subscription" in again.stderr


# --- what analysts see ---------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DOCS_SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "digest.png"


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="headless Chromium is not installed (Debian: apt-get install chromium)",
)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_digest_renders_in_headless_chromium(
    engine: Engine, newsroom: dict[str, int], tmp_path: Path
) -> None:
    """Render a realistic digest to PNG and check there is a page on it. UPDATE_DIGEST_SCREENSHOT=1
    also keeps the picture as docs/digest.png, the one the README shows."""
    from PIL import Image, ImageChops

    assert CHROMIUM, "CI must have Chromium to render the digest"
    with session_scope(engine) as session:  # a month of earlier coverage for the trends strip
        feed = add_feed(session, "Archive", "https://archive.example/feed")
        for n in range(40):
            sample = (HAMRIN_RAID, CENTCOM_STRIKE, AMMAN_BAGHDAD)[n % 3]
            when = NOW - timedelta(days=2 + (n * 7) % 27, hours=n % 5)
            add_article(session, feed, sample, fetched=when, published=when,
                        url=f"https://archive.example/{n}")
    run_digest(engine)
    html_file = next(Path("outbox").glob("*.html"))
    png = tmp_path / "digest.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--force-device-scale-factor=1", "--window-size=760,2200", f"--screenshot={png}",
         html_file.resolve().as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    image = Image.open(png).convert("RGB")
    assert image.size == (760, 2200)
    background = Image.new("RGB", image.size, image.getpixel((2, image.height - 2)))
    content = ImageChops.difference(image, background).getbbox()
    assert content is not None, "the page is blank"
    left, top, right, bottom = content
    assert right - left > 500 and bottom - top > 800, content  # a full digest, not a stub
    colours = image.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 200  # text, highlights, bars and section colours, anti-aliased
    # The evidence highlight colour (#fde68a) and the ISIS bar colour (#b91c1c) are on the page.
    present = {colour for _count, colour in colours}
    assert (0xFD, 0xE6, 0x8A) in present and (0xB9, 0x1C, 0x1C) in present
    if os.environ.get("UPDATE_DIGEST_SCREENSHOT"):
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        image.crop((0, 0, image.width, min(image.height, bottom + 24))).save(DOCS_SCREENSHOT, optimize=True)


# --- spikes --------------------------------------------------------------------------------------


def store_isis_spike(engine: Engine, now: datetime) -> None:
    """One ISIS story a day for four weeks, then eight earlier today (UTC): a spike."""
    midnight = datetime.combine(now.date(), datetime.min.time(), tzinfo=timezone.utc)
    with session_scope(engine) as session:
        feed = add_feed(session, "Levant Monitor", "https://levant-monitor.example/feed")
        for n in range(28):
            when = now - timedelta(days=n + 1)
            add_article(session, feed, Sample(
                f"quiet-{n}", f"Army repels ISIS attack on post {n}",
                f"Soldiers repelled an attack by Islamic State fighters on army post {n}, officials said.",
                "en", frozenset({"isis"})), fetched=when, published=when)
        for n in range(8):
            when = now - (now - midnight) * (n + 1) / 9
            add_article(session, feed, Sample(
                f"surge-{n}", f"ISIS cells strike checkpoint {n} in coordinated attacks",
                f"Islamic State cells attacked checkpoint {n} overnight in one of several coordinated "
                "ISIS assaults across the province, security sources said.",
                "en", frozenset({"isis"})), fetched=when, published=when)


@pytest.fixture
def isis_spike(engine: Engine) -> None:
    store_isis_spike(engine, NOW)


@pytest.mark.usefixtures("isis_spike")
def test_spike_alert_is_sent_once_and_the_digest_still_carries_the_stories(
    engine: Engine, smtp_server: SmtpServer
) -> None:
    settings = get_settings()
    assert delivery.prepare_alerts(engine, settings, NOW) == 1
    reports = [delivery.deliver(engine, settings, i, NOW) for i in delivery.undelivered(engine)]
    assert [(r.kind, r.status) for r in reports] == [("spike:isis", "sent")]
    alert = smtp_server.sink.messages()[0]
    assert alert["Subject"] == "Marsad alert, 20 Nov: ISIS spike, 8 articles today (usually 1.0)"
    text, html = parts(alert)
    assert "ISIS IS SPIKING: 8 articles today" in text and "is spiking:" in html
    assert "ISIS cells strike checkpoint 0" in text

    assert delivery.prepare_alerts(engine, settings, NOW + timedelta(hours=1)) == 0  # once a day
    # The daily digest still brings the day's stories, and marks the spike.
    run_digest(engine, now=NOW + timedelta(hours=1))
    assert len(smtp_server.sink.received) == 2
    text, html = parts(smtp_server.sink.messages()[1])
    assert "ISIS cells strike checkpoint 0" in text
    assert "SPIKE" in next(line for line in text.splitlines() if line.strip().startswith("ISIS "))
    assert ">SPIKE</span>" in html


def test_no_alert_without_a_spike(engine: Engine, newsroom: dict[str, int], smtp_server: SmtpServer) -> None:
    assert delivery.prepare_alerts(engine, get_settings(), NOW) == 0
    assert delivery.undelivered(engine) == []


@pytest.mark.usefixtures("prefect_harness")
def test_marsad_alert_command_runs_the_spike_alert_flow(engine: Engine, smtp_server: SmtpServer) -> None:
    from typer.testing import CliRunner

    from marsad.cli import app

    store_isis_spike(engine, datetime.now(timezone.utc))  # the command reads the real clock
    first = CliRunner().invoke(app, ["alert"])
    assert first.exit_code == 0, first.output
    assert "spike:isis analyst@newsroom.test: sent" in first.stderr
    second = CliRunner().invoke(app, ["alert"])
    assert second.exit_code == 0 and "0 alerts prepared" in second.stderr
    assert len(smtp_server.sink.received) == 1
