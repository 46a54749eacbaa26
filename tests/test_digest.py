"""The daily digest, end to end against a real SMTP server (aiosmtpd) and both databases."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from datetime import date, datetime, timedelta, timezone
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from digest_data import (
    AMMAN_BAGHDAD,
    ANBAR_AMBUSH,
    CENTCOM_STRIKE,
    HAMRIN_RAID,
    HAMRIN_RAID_COPY,
    HOSTILE,
    WHEAT_PRICES,
    Sample,
    add_article,
    add_feed,
    store_showcase,
)
from smtp import Certificate, SmtpServer, issue_certificate
from sqlalchemy import Engine, func, select

from marsad import delivery
from marsad.config import get_settings, reset_settings
from marsad.db import session_scope
from marsad.digest import check_address
from marsad.errors import InputError
from models import Article, Digest, DigestItem, DigestStatus, Feed

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
    assert "Also reported by: <bdi>Wire &amp; &lt;Co&gt;</bdi>" in html
    # Evidence highlighted in the snippet, in both parts.
    assert "<mark" in html and re.search(r"<mark[^>]*>Islamic State</mark>", html)
    assert "*Islamic State*" in text
    assert "Places:" in text and "Kirkuk" in text
    # The Arabic story reads right to left.
    arabic_block = html[html.index(AMMAN_BAGHDAD.title) - 600 : html.index(AMMAN_BAGHDAD.title)]
    assert 'dir="rtl"' in arabic_block


class _TextNodes(HTMLParser):
    """Every text node of a document with the elements (tag, attributes) it sits in."""

    VOID = frozenset({"br", "meta", "img", "hr", "input", "link"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict[str, str | None]]] = []
        self.nodes: list[tuple[str, list[tuple[str, dict[str, str | None]]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.stack.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        while self.stack and self.stack.pop()[0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.nodes.append((data, list(self.stack)))


def text_nodes(html: str) -> list[tuple[str, list[tuple[str, dict[str, str | None]]]]]:
    parser = _TextNodes()
    parser.feed(html)
    return parser.nodes


def _inside(stack: list[tuple[str, dict[str, str | None]]], tag: str, **attrs: str) -> bool:
    return any(t == tag and all(a.get(k) == v for k, v in attrs.items()) for t, a in stack)


def test_right_to_left_names_are_isolated_so_the_date_and_separators_keep_their_order(
    engine: Engine, newsroom: dict[str, int], smtp_server: SmtpServer
) -> None:
    """An Arabic outlet's name followed by " · 20 Nov 2026, 05:00" used to read "20 · الجسر Nov
    2026": the day pulled next to the name. Each fetched name and title is isolated now: <bdi> in
    HTML, FSI...PDI in the plain part; and a story carries its own language, not always "ar"."""
    with session_scope(engine) as session:
        persian = session.get(Article, newsroom["amman"])
        assert persian is not None
        persian.language = "fa-IR"  # stored as a Persian outlet would label it
        feed = session.scalar(select(Feed).where(Feed.name == "الجسر"))
        add_article(session, feed, ANBAR_AMBUSH, fetched=NOW - timedelta(minutes=30),
                    published=NOW - timedelta(days=3))
    run_digest(engine)
    text, html = (part.replace("\r\n", "\n") for part in parts(smtp_server.sink.messages()[0]))

    # Plain text: the name between isolates; the date and the topic after it, as written.
    assert "\n  \u2068الجسر\u2069 · 20 Nov 2026, 05:00 · also ISIS\n" in text
    assert f"\n* \u2068{AMMAN_BAGHDAD.title}\u2069\n" in text
    assert "Matched: \u2068" in text  # the Arabic terms that tagged it, each isolated
    assert "\u2068Levant Monitor" not in text  # left-to-right names need nothing

    nodes = text_nodes(html)
    title = next(stack for node, stack in nodes if node == AMMAN_BAGHDAD.title)
    assert _inside(title, "bdi") and _inside(title, "div", lang="fa", dir="rtl")
    assert not _inside(title, "div", lang="ar")  # Persian is not marked as Arabic any more
    ambush = next(stack for node, stack in nodes if node == ANBAR_AMBUSH.title)
    assert _inside(ambush, "bdi") and _inside(ambush, "div", lang="ar", dir="rtl")
    # The source line: the name alone in a <bdi>, the separators and the date outside it, in a
    # left-to-right line of the story.
    names = [i for i, (node, _) in enumerate(nodes) if node == "الجسر"]
    assert names
    for i in names:
        assert _inside(nodes[i][1], "bdi") and _inside(nodes[i][1], "div", dir="ltr")
        following = "".join(node for node, _ in nodes[i + 1 : i + 3])
        assert re.match(r"\s*·\s*\d\d \w{3} 2026, \d\d:\d\d", following), following
        assert not any(_inside(stack, "bdi") for _, stack in nodes[i + 1 : i + 3])
    # No fetched string is left bare next to a separator, and dir="auto" on a <b> is gone.
    assert 'dir="auto"' not in html
    for node, stack in nodes:
        if re.search("[\u0600-\u06ff]", node) and _inside(stack, "div", dir="ltr"):
            assert _inside(stack, "bdi"), node


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


def test_long_section_shows_its_top_stories_and_lists_the_rest_with_a_command_that_finds_them(
    engine: Engine, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stories that arrive today may have been published days ago (a late feed, a backfill): the
    suggested `articles list` reads publication days, so it must cover theirs."""
    from test_cli import marsad

    monkeypatch.setenv("MARSAD_DIGEST_MAX_STORIES", "2")
    reset_settings()
    towns = ["Tikrit", "Baiji", "Samarra", "Haditha"]
    with session_scope(engine) as session:
        feed = add_feed(session, "Levant Monitor", "https://levant-monitor.example/feed")
        ids = [
            add_article(session, feed, Sample(
                f"raid-{n}", f"Islamic State cell dismantled near {town}",
                f"Iraqi forces dismantled an Islamic State cell near {town} on day {n}, seizing "
                f"weapons; {n + 2} ISIS suspects were detained, officials said.",
                "en", frozenset({"isis"})), fetched=NOW - timedelta(hours=n + 1),
                published=NOW - timedelta(days=n, hours=1)).id  # 20, 19, 18 and 17 Nov
            for n, town in enumerate(towns)
        ]
    run_digest(engine)
    text, html = parts(smtp_server.sink.messages()[0])
    assert "== ISIS (4) ==" in text
    assert text.count("* Islamic State cell dismantled") == 2
    # The two not shown in full are named, one line each, with their links.
    assert "2 more stories in this section:" in text and "2 more stories in this section:" in html
    assert "  - Islamic State cell dismantled near Samarra (Levant Monitor, 18 Nov)" in text
    assert "  - Islamic State cell dismantled near Haditha (Levant Monitor, 17 Nov)" in text
    assert "https://levant-monitor.example/raid-3" in text and 'href="https://levant-monitor.example/raid-3"' in html
    command = "marsad articles list --topic isis --since 2026-11-17 --until 2026-11-18"
    assert f"All of them, with their ids: {command}" in text and command in html

    code, out, err = marsad(*command.split()[1:], "--format", "json")
    assert code == 0, err
    assert {row["id"] for row in json.loads(out)} == {ids[2], ids[3]}


def test_the_more_command_asks_for_every_row_when_a_screenful_would_cut_it_short(
    engine: Engine, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`articles list` prints 50 rows unless told otherwise: 60 stories' command says --limit 60."""
    from test_cli import marsad

    monkeypatch.setenv("MARSAD_DIGEST_MAX_STORIES", "1")
    reset_settings()
    with session_scope(engine) as session:
        feed = add_feed(session, "Levant Monitor", "https://levant-monitor.example/feed")
        for n in range(60):
            add_article(session, feed, Sample(
                f"attack-{n}", f"ISIS attack number {n} repelled near outpost {n}",
                f"Fighters of the Islamic State attacked army outpost {n} in the desert; soldiers "
                f"repelled the ISIS attack, the army said, and {n} attackers fled toward the border.",
                "en", frozenset({"isis"})), fetched=NOW - timedelta(minutes=n + 1),
                published=NOW - timedelta(days=1, minutes=n))
    run_digest(engine)
    text, _ = parts(smtp_server.sink.messages()[0])
    command = "marsad articles list --topic isis --since 2026-11-19 --until 2026-11-19 --limit 60"
    assert f"All of them, with their ids: {command}" in text
    assert "and 44 more." in text  # 59 not shown in full, 15 named
    code, out, err = marsad(*command.split()[1:])
    assert code == 0, err
    assert "outpost 59" in out and "outpost 1" in out


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


def _isis_attack(slug: str, n: int) -> Sample:
    return Sample(
        slug, f"ISIS attack number {n} repelled",
        f"Fighters of the Islamic State attacked army post {n}; soldiers repelled the ISIS attack.",
        "en", frozenset({"isis"}))


def _strip_line(text: str, label: str) -> list[str]:
    return next(line for line in text.splitlines() if line.strip().startswith(label) and "(" in line).split()


def test_trends_strip_compares_the_day_with_the_weeks_before(engine: Engine, smtp_server: SmtpServer) -> None:
    with session_scope(engine) as session:
        feed = add_feed(session, "Levant Monitor", "https://levant-monitor.example/feed")
        for n in range(3):  # three ISIS stories today
            add_article(session, feed, _isis_attack(f"today-{n}", n),
                        fetched=NOW - timedelta(hours=n + 1), published=NOW - timedelta(hours=n + 2))
        for n in range(14):  # fourteen over the previous week: 2 a day, at 01:00 and 13:00
            add_article(session, feed, _isis_attack(f"week-{n}", 10 + n), fetched=NOW - timedelta(days=2, hours=n),
                        published=NOW - timedelta(days=1, hours=6 + n * 12))
    run_digest(engine)
    text, html = parts(smtp_server.sink.messages()[0])
    # 19 Nov 01:00 back to 12 Nov 13:00: the last of them is 8 days before the 20th.
    assert _strip_line(text, "ISIS") == ["ISIS", "3", "(1.9,", "0.5)"]
    assert "TRENDS: articles published on Fri 20 Nov until 07:00 (UTC)" in text
    assert "Articles published on Friday 20 Nov until 07:00 (UTC)" in html and ">Fri 20 Nov</td>" in html
    assert 'bgcolor="#b91c1c"' in html  # drawn with table cells, no images
    assert "<img" not in html and "<script" not in html


def test_trends_strip_counts_the_calendar_day_in_the_analysts_zone_as_marsad_trends_does(
    engine: Engine, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the 24 hours before the digest: an article of last night belongs to yesterday, one
    published just after midnight (Baghdad time) to today, whatever the hour in UTC."""
    from marsad.trends import trends

    monkeypatch.setenv("MARSAD_TIMEZONE", "Asia/Baghdad")  # UTC+3: NOW is 10:00 on the 20th
    reset_settings()
    baghdad = ZoneInfo("Asia/Baghdad")
    with session_scope(engine) as session:
        feed = add_feed(session, "Levant Monitor", "https://levant-monitor.example/feed")
        published = [
            datetime(2026, 11, 19, 23, 30, tzinfo=baghdad),  # yesterday, 10.5 hours before NOW
            datetime(2026, 11, 20, 0, 30, tzinfo=baghdad),  # today
            datetime(2026, 11, 20, 9, 0, tzinfo=baghdad),  # today
            datetime(2026, 11, 13, 12, 0, tzinfo=baghdad),  # 7 days before: in both averages
            datetime(2026, 11, 12, 12, 0, tzinfo=baghdad),  # 8 days before: the 28-day one only
        ]
        for n, when in enumerate(published):
            add_article(session, feed, _isis_attack(f"a-{n}", n), fetched=NOW - timedelta(minutes=n + 1),
                        published=when)
        add_article(session, feed, HAMRIN_RAID_COPY, fetched=NOW - timedelta(minutes=30),
                    published=datetime(2026, 11, 20, 1, 0, tzinfo=baghdad))
        add_article(session, feed, HAMRIN_RAID, fetched=NOW - timedelta(minutes=40),
                    published=datetime(2026, 11, 20, 2, 0, tzinfo=baghdad), url="https://other.example/raid")
    run_digest(engine)
    text, html = parts(smtp_server.sink.messages()[0])
    # Today: two attacks and both copies of the raid (one story in the ISIS section, two articles).
    assert _strip_line(text, "ISIS") == ["ISIS", "4", "(0.3,", "0.1)"]
    assert "TRENDS: articles published on Fri 20 Nov until 10:00 (Asia/Baghdad)" in text
    with session_scope(engine) as session:
        rows = trends(session, topics=["isis"], by="day", since=DAY - timedelta(days=28), until=DAY, tz=baghdad)
    by_day = {row["period"]: row["count"] for row in rows}
    assert by_day[DAY] == 4 and sum(by_day[DAY - timedelta(days=k)] for k in range(1, 8)) == 2
    assert sum(by_day.values()) - by_day[DAY] == 3  # the 28-day average: 3 / 28


def test_trend_counts_of_a_past_day_cover_that_whole_day(engine: Engine, smtp_server: SmtpServer) -> None:
    """A digest built late for yesterday counts yesterday, all of it, and says nothing of "until"."""
    with session_scope(engine) as session:
        feed = add_feed(session, "Levant Monitor", "https://levant-monitor.example/feed")
        for n, hour in enumerate((1, 12, 23)):
            add_article(session, feed, _isis_attack(f"y-{n}", n),
                        fetched=datetime(2026, 11, 19, hour, 30, tzinfo=timezone.utc),
                        published=datetime(2026, 11, 19, hour, 0, tzinfo=timezone.utc))
        add_article(session, feed, _isis_attack("today", 9), fetched=NOW - timedelta(hours=2),
                    published=NOW - timedelta(hours=2))
    run_digest(engine, day=DAY - timedelta(days=1))
    text, _ = parts(smtp_server.sink.messages()[0])
    assert _strip_line(text, "ISIS") == ["ISIS", "3", "(0.0,", "0.0)"]
    assert "TRENDS: articles published on Thu 19 Nov (UTC)" in text


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

        # An operator fixes the password and resends.
        monkeypatch.setenv("MARSAD_SMTP_PASSWORD", "s3cret-pass")
        reset_settings()
        summary = delivery.resend(engine, get_settings(), NOW + timedelta(hours=1))
        assert [r.status for r in summary.reports] == ["sent"]
        assert server.sink.auth[-1] == ("marsad", "s3cret-pass")


def test_a_failed_digest_is_sent_again_by_resend_once_with_the_same_message(
    engine: Engine, newsroom: dict[str, int], smtp_server: SmtpServer
) -> None:
    """550 fails the digest for good: later runs leave it (and its articles) alone until an operator
    fixes the cause and runs `marsad digest --resend`, which sends the stored message once."""
    from test_cli import marsad

    smtp_server.sink.mode = "reject"
    assert [r.status for r in run_digest(engine)] == ["failed"]
    failed = digest_rows(engine)[0]
    assert failed.status == DigestStatus.FAILED and "550" in (failed.last_error or "")

    smtp_server.sink.mode = "accept"  # the mailbox is created
    assert run_digest(engine, now=NOW + timedelta(hours=1)) == []  # a plain run does not retry it
    code, _out, err = marsad("digest", "--resend")
    assert code == 0, err
    assert "1 failed digest requeued, 1 sent" in err and "2026-11-20 analyst@newsroom.test: sent" in err
    (received,) = smtp_server.sink.received
    assert received.message["Message-ID"] == failed.message_id and received.raw.replace(b"\r\n", b"\n").rstrip() == (
        failed.message or b"").replace(b"\r\n", b"\n").rstrip()
    row = digest_rows(engine)[0]
    assert (row.id, row.status, row.transport, row.last_error) == (failed.id, DigestStatus.SENT, "smtp", None)

    code, _out, err = marsad("digest", "--resend")
    assert code == 0 and "0 failed digests requeued" in err
    assert len(smtp_server.sink.received) == 1  # nothing sent twice
    assert run_digest(engine, now=NOW + timedelta(hours=2)) == []


def test_resend_takes_the_date_and_recipients_given_and_sends_unknown_twice_once_more(
    engine: Engine, newsroom: dict[str, int], smtp_server: SmtpServer
) -> None:
    from test_cli import marsad

    smtp_server.sink.mode = "drop_after_data"  # unknown, then unknown again: failed
    run_digest(engine)
    run_digest(engine, now=NOW + timedelta(minutes=20))
    assert digest_rows(engine)[0].status == DigestStatus.FAILED
    assert len(smtp_server.sink.received) == 2
    smtp_server.sink.mode = "accept"

    code, _out, err = marsad("digest", "--resend", "--date", "2026-11-19")  # another day: nothing
    assert code == 0 and "0 failed digests requeued" in err
    code, _out, err = marsad("digest", "--resend", "--to", "someone@else.test")
    assert code == 0 and "0 failed digests requeued" in err
    code, _out, err = marsad("digest", "--resend", "--dry-run")
    assert code == 1 and "cannot be combined" in err
    assert len(smtp_server.sink.received) == 2

    code, _out, err = marsad("digest", "--resend", "--date", "2026-11-20", "--to", "analyst@newsroom.test")
    assert code == 0 and "1 sent" in err, err
    ids = {m["Message-ID"] for m in smtp_server.sink.messages()}
    assert len(smtp_server.sink.received) == 3 and len(ids) == 1  # a receiver can drop the copies
    assert digest_rows(engine)[0].status == DigestStatus.SENT


# --- TLS ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return issue_certificate(tmp_path_factory.mktemp("tls"))


def _use_tls_server(monkeypatch: pytest.MonkeyPatch, server: SmtpServer, security: str, password: str) -> None:
    for name, value in {
        "HOST": "127.0.0.1", "PORT": str(server.port), "SECURITY": security, "TIMEOUT": "10",
        "USERNAME": "marsad", "PASSWORD": password,
    }.items():
        monkeypatch.setenv(f"MARSAD_SMTP_{name}", value)
    monkeypatch.setenv("MARSAD_DIGEST_FROM", "marsad@observatory.test")
    monkeypatch.setenv("MARSAD_DIGEST_TO", "analyst@newsroom.test")
    reset_settings()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_tls_verifies_the_certificate_and_trusts_the_ca_file_given(
    engine: Engine,
    newsroom: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
    certificate: Certificate,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    security: str,
) -> None:
    """A server whose certificate no trusted CA signed gets nothing (not even the login), and the
    digest says why; with its CA in MARSAD_SMTP_CA_FILE it goes out, logged in over TLS only."""
    caplog.set_level("DEBUG")
    with SmtpServer(require_auth=True, tls=security, certificate=certificate) as server:  # type: ignore[arg-type]
        _use_tls_server(monkeypatch, server, security, "s3cret-pass")
        reports = run_digest(engine)
        assert [r.status for r in reports] == ["pending"]
        reason = f"TLS certificate of 127.0.0.1:{server.port} not trusted: unable to get local issuer certificate"
        assert reports[0].detail.startswith(reason) and "MARSAD_SMTP_CA_FILE" in reports[0].detail
        row = digest_rows(engine)[0]
        assert row.status == DigestStatus.PENDING and (row.last_error or "").startswith(reason)
        assert "Traceback" not in (row.last_error or "") and "\n" not in (row.last_error or "")
        assert server.sink.auth == [] and server.sink.received == []

        monkeypatch.setenv("MARSAD_SMTP_CA_FILE", str(certificate.ca_file))
        reset_settings()
        reports = run_digest(engine, now=NOW + timedelta(minutes=30))
        assert [r.status for r in reports] == ["sent"], reports[0].detail
        (received,) = server.sink.received
        assert received.tls in ("TLSv1.2", "TLSv1.3")  # the message and the login were encrypted
        assert server.sink.auth == [("marsad", "s3cret-pass")]
        assert received.message["Message-ID"] == row.message_id

    captured = capsys.readouterr()
    recorded = [r.detail for r in reports] + [str(value) for value in vars(digest_rows(engine)[0]).values()]
    for where in (caplog.text, captured.out, captured.err, repr(get_settings()), *recorded):
        assert "s3cret-pass" not in where


def test_a_password_never_crosses_the_network_in_clear_text(engine: Engine, newsroom: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """Security "none" with a login is refused for any host but this machine: nothing connects."""
    monkeypatch.setenv("MARSAD_SMTP_HOST", "192.0.2.25")  # TEST-NET-1: would hang if dialled
    monkeypatch.setenv("MARSAD_SMTP_SECURITY", "none")
    monkeypatch.setenv("MARSAD_SMTP_USERNAME", "marsad")
    monkeypatch.setenv("MARSAD_SMTP_PASSWORD", "s3cret-pass")
    monkeypatch.setenv("MARSAD_DIGEST_TO", "analyst@newsroom.test")
    reset_settings()
    reports = run_digest(engine)
    assert [r.status for r in reports] == ["pending"]
    assert "without TLS" in reports[0].detail and "s3cret-pass" not in reports[0].detail


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
        dead = add_feed(session, "Dead Wire", "https://dead-wire.example/rss")
        dead.active, dead.error_count, dead.last_status = False, 20, "error"
        dead.last_error = "set inactive after 20 failed polls in a row; last error: HTTP 410"
        dead.last_fetched_at = NOW - timedelta(days=2)
    run_digest(engine)
    text, html = parts(smtp_server.sink.messages()[0])
    assert "Failing: Broken Feed: error: HTTP 503 (3 failures in a row)" in text
    assert re.search(r"Silent: Quiet Daily: nothing new for 5 days", text)
    assert re.search(r"Switched off: Dead Wire: set inactive after 20 failed polls .*HTTP 410.*"
                     r"marsad feeds enable https://dead-wire.example/rss", text)
    assert "<bdi>Dead Wire</bdi>" in html and "Every feed answered" not in html
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
def test_digest_renders_in_headless_chromium(engine: Engine, smtp_server: SmtpServer, tmp_path: Path) -> None:
    """Render a realistic morning's digest (tests/digest_data.py: store_showcase) at 900 pixels and
    check there is a page on it. UPDATE_DIGEST_SCREENSHOT=1 also keeps the picture as
    docs/digest.png, the one the README shows."""
    from PIL import Image, ImageChops

    assert CHROMIUM, "CI must have Chromium to render the digest"
    with session_scope(engine) as session:
        store_showcase(session, NOW)
    assert [r.status for r in run_digest(engine)] == ["sent"]
    text, html = parts(smtp_server.sink.messages()[0])
    assert "SPIKE" in _strip_line(text, "ISIS") and "Also reported by: Regional Wire, The Euphrates Post" in text
    assert "Furat Voice" in text.split("SOURCE HEALTH")[1] and "<script" not in html
    html_file = tmp_path / "digest.html"
    html_file.write_text(html, encoding="utf-8")
    png = tmp_path / "digest.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--force-device-scale-factor=1", "--window-size=900,3000", f"--screenshot={png}",
         html_file.resolve().as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    image = Image.open(png).convert("RGB")
    assert image.size == (900, 3000)
    background = Image.new("RGB", image.size, image.getpixel((2, image.height - 2)))
    content = ImageChops.difference(image, background).getbbox()
    assert content is not None, "the page is blank"
    left, top, right, bottom = content
    assert right - left > 600 and bottom - top > 1200, content  # a full digest, not a stub
    assert bottom < image.height - 24, "the digest no longer fits the picture: make the window taller"
    colours = image.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 200  # text, highlights, bars and section colours, anti-aliased
    # The evidence highlight (#fde68a), the ISIS bars and SPIKE mark (#b91c1c), the coalition's
    # (#1d4ed8) and cooperation's (#047857) colours are on the page.
    present = {colour for _count, colour in colours}
    for colour in ((0xFD, 0xE6, 0x8A), (0xB9, 0x1C, 0x1C), (0x1D, 0x4E, 0xD8), (0x04, 0x78, 0x57)):
        assert colour in present, colour
    if os.environ.get("UPDATE_DIGEST_SCREENSHOT"):
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        image.crop((0, 0, image.width, bottom + 24)).save(DOCS_SCREENSHOT, optimize=True)


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
