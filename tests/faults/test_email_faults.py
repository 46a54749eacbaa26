"""Hostile text and misbehaving mail servers: nothing escapes into an email, nothing is sent twice,
nothing is lost. Real aiosmtpd servers (or a bare socket where the point is silence) on loopback,
both databases. What tests/test_digest.py already covers (451 on RCPT, 421 on MAIL, 550, a drop
after DATA, --to with CRLF, a server that is down) is not repeated here.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP
from digest_data import HAMRIN_RAID, Sample, add_article, add_feed
from smtp import Received, SmtpServer, SmtpSink, issue_certificate
from sqlalchemy import Engine, select
from test_digest import DAY, NOW, digest_rows, parts, run_digest

import marsad
from marsad import delivery
from marsad.config import get_settings, reset_settings
from marsad.db import session_scope
from marsad.errors import ConfigError, InputError
from models import Digest, DigestStatus, Subscription

HEADERS = ["From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted", "Content-Type", "MIME-Version"]


def isis_story(slug: str, title: str, text: str | None = None) -> Sample:
    return Sample(
        slug,
        title,
        text or "Iraqi forces said an Islamic State cell was dismantled near Tikrit and three ISIS "
        "suspects were detained, officials said.",
        "en",
        frozenset({"isis"}),
    )


# --- hostile text -------------------------------------------------------------------------------


class _Elements(HTMLParser):
    """Every start tag of a document with its attributes, as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


# Elements the digest template itself writes: anything else in a digest came from fetched text.
TEMPLATE = Path(marsad.__file__).parent / "templates" / "digest.html"
SAFE_TAGS = set(re.findall(r"<([a-z][a-z0-9]*)", TEMPLATE.read_text(encoding="utf-8")))

HOSTILE_FEED = 'Wire "><svg onload=alert(1)>'
HOSTILE_SAMPLES = [
    isis_story("svg", '<svg/onload=alert(1)> ISIS cell dismantled near Tikrit'),
    isis_story("attr", 'ISIS "><iframe src=javascript:alert(2)></iframe> cell dismantled'),
    isis_story("style", "ISIS cell <style>body{display:none}</style> dismantled</mark></td></table>",
               "Islamic State <a href='javascript:alert(4)' onclick=alert(5)>fighters</a> were detained; "
               "ISIS <body onload=alert(6)> suspects <!-- --><script>alert(7)</script> held."),
]
HOSTILE_URLS = [
    'https://wire.example/x"onmouseover="alert(8)',
    " JaVaScRiPt:alert(9)",
    "data:text/html,<script>alert(10)</script>",
    "https://wire.example/a b\"onclick=alert(11)",
]


def test_markup_in_titles_texts_feed_names_and_links_never_becomes_markup(engine: Engine, smtp_server: SmtpServer) -> None:
    with session_scope(engine) as session:
        feed = add_feed(session, HOSTILE_FEED, "https://wire.example/rss")
        other = add_feed(session, "<b onmouseover=alert(12)>Other</b>", "https://other.example/rss")
        for sample, url in zip(HOSTILE_SAMPLES, HOSTILE_URLS, strict=False):
            add_article(session, feed, sample, fetched=NOW - timedelta(hours=1), url=url)
        add_article(session, feed, HAMRIN_RAID, fetched=NOW - timedelta(hours=2), url=HOSTILE_URLS[3])
        add_article(session, other, HAMRIN_RAID, fetched=NOW - timedelta(hours=2), url="https://other.example/raid")

    assert [r.status for r in run_digest(engine)] == ["sent"]
    text, html = parts(smtp_server.sink.messages()[0])

    parser = _Elements()
    parser.feed(html)
    assert {"script", "svg", "iframe", "style", "body"} & SAFE_TAGS <= {"style", "body"}
    assert sum(tag == "body" for tag, _ in parser.tags) == 1
    for tag, attrs in parser.tags:
        assert tag in SAFE_TAGS, tag
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        if tag == "a" and "href" in attrs:
            assert (attrs.get("href") or "").startswith(("https://", "http://", "#")), attrs
            assert not any(c.isspace() for c in attrs["href"] or ""), attrs
    # The quote in a link stayed inside its attribute: no element gained an event handler above.
    assert "<script" not in html.lower() and "<svg" not in html.lower() and "<iframe" not in html.lower()
    # Every hostile story is in the digest, as text the reader can see.
    assert "&lt;svg/onload=alert(1)&gt; ISIS cell dismantled" in html
    assert "<svg/onload=alert(1)> ISIS cell dismantled near Tikrit" in text
    assert html.count("&lt;style&gt;") == 1 and text.count("<style>body{display:none}</style>") == 1
    assert "Wire &#34;&gt;&lt;svg onload=alert(1)&gt;" in html or "Wire &quot;&gt;&lt;svg onload=alert(1)&gt;" in html
    # The style-breaking title could not end the document's table early: the sections all follow.
    assert html.rstrip().endswith("</html>")
    for bad in HOSTILE_URLS[1:3]:
        assert bad.strip() not in text  # not offered as a link in the plain part either


# --- CR and LF on the way to a header ---------------------------------------------------------------


def test_newlines_in_feed_names_and_titles_stay_in_the_body(engine: Engine, smtp_server: SmtpServer) -> None:
    with session_scope(engine) as session:
        feed = add_feed(session, "Wire\r\nBcc: spy@elsewhere.test", "https://wire.example/rss")
        add_article(session, feed, isis_story(
            "crlf", "ISIS cell dismantled\r\nBcc: spy@elsewhere.test\r\n\r\n<script>alert(1)</script>"),
            fetched=NOW - timedelta(hours=1))
        add_article(session, feed, isis_story(
            "lf", "ISIS suspects held\nSubject: you have won\n.\nRCPT TO:<spy@elsewhere.test>"),
            fetched=NOW - timedelta(hours=2), url="https://wire.example/lf")

    assert [r.status for r in run_digest(engine)] == ["sent"]
    (received,) = smtp_server.sink.received
    assert received.recipients == ["analyst@newsroom.test"]  # the envelope: no second recipient
    message = received.message
    assert sorted(message.keys()) == sorted(HEADERS)
    assert message["Subject"].startswith("Marsad digest, Fri 20 Nov 2026: 2 stories")
    head = received.raw.split(b"\r\n\r\n", 1)[0]
    assert b"spy@" not in head and b"won" not in head
    text, html = parts(message)
    assert "spy@elsewhere.test" in text and "you have won" in text  # kept, where it does no harm
    assert "<script" not in html


def _subscription_row(engine: Engine, address: str) -> None:
    """A subscription that bypassed ``subscribe`` (an older version, a hand-edited database)."""
    with session_scope(engine) as session:
        session.add(Subscription(address=address, topics=None, active=True))


def test_a_bad_address_anywhere_stops_the_run_before_anything_is_stored_or_sent(
    engine: Engine, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with session_scope(engine) as session:
        feed = add_feed(session, "Levant Monitor", "https://levant-monitor.example/feed")
        add_article(session, feed, HAMRIN_RAID, fetched=NOW - timedelta(hours=1))

    monkeypatch.setenv("MARSAD_DIGEST_TO", "analyst@newsroom.test\r\nBcc: spy@elsewhere.test")
    reset_settings()
    with pytest.raises(InputError, match="not a plain e-mail address"):
        run_digest(engine)

    monkeypatch.setenv("MARSAD_DIGEST_TO", "analyst@newsroom.test")
    monkeypatch.setenv("MARSAD_DIGEST_FROM", "marsad@observatory.test\nBcc: spy@elsewhere.test")
    reset_settings()
    with pytest.raises(InputError, match="not a plain e-mail address"):
        run_digest(engine)

    monkeypatch.setenv("MARSAD_DIGEST_FROM", "marsad@observatory.test")
    reset_settings()
    _subscription_row(engine, "desk@newsroom.test\r\nBcc: spy@elsewhere.test")
    with pytest.raises(InputError, match="not a plain e-mail address"):
        run_digest(engine)

    assert digest_rows(engine) == [] and smtp_server.sink.received == []
    with session_scope(engine) as session:  # the operator removes the row; the next run is whole
        session.execute(Subscription.__table__.delete())
    assert [r.status for r in run_digest(engine)] == ["sent"]
    assert len(smtp_server.sink.received) == 1


def test_a_sender_changed_to_a_bad_value_after_preparing_leaves_the_digest_pending(
    engine: Engine, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with session_scope(engine) as session:
        feed = add_feed(session, "Levant Monitor", "https://levant-monitor.example/feed")
        add_article(session, feed, HAMRIN_RAID, fetched=NOW - timedelta(hours=1))
    settings = get_settings()
    delivery.prepare(engine, settings, DAY, NOW)
    (digest_id,) = delivery.undelivered(engine)

    monkeypatch.setenv("MARSAD_DIGEST_FROM", "marsad@observatory.test\r\nRCPT TO:<spy@elsewhere.test>")
    reset_settings()
    with pytest.raises((InputError, ConfigError), match="not a plain e-mail address"):
        delivery.deliver(engine, get_settings(), digest_id, NOW)
    row = digest_rows(engine)[0]
    assert row.status == DigestStatus.PENDING and row.attempts == 0  # not claimed, not stuck "sending"
    assert smtp_server.sink.received == []

    monkeypatch.setenv("MARSAD_DIGEST_FROM", "marsad@observatory.test")
    reset_settings()
    assert delivery.deliver(engine, get_settings(), digest_id, NOW).status == "sent"
    assert smtp_server.sink.received[0].recipients == ["analyst@newsroom.test"]


# --- servers that misbehave ---------------------------------------------------------------------


@pytest.fixture
def one_story(engine: Engine) -> None:
    with session_scope(engine) as session:
        feed = add_feed(session, "Levant Monitor", "https://levant-monitor.example/feed")
        add_article(session, feed, HAMRIN_RAID, fetched=NOW - timedelta(hours=1))


def _point_at(monkeypatch: pytest.MonkeyPatch, port: int, timeout: float = 10) -> None:
    monkeypatch.setenv("MARSAD_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("MARSAD_SMTP_PORT", str(port))
    monkeypatch.setenv("MARSAD_SMTP_SECURITY", "none")
    monkeypatch.setenv("MARSAD_SMTP_TIMEOUT", str(timeout))
    monkeypatch.setenv("MARSAD_DIGEST_FROM", "marsad@observatory.test")
    monkeypatch.setenv("MARSAD_DIGEST_TO", "analyst@newsroom.test")
    reset_settings()


class _BusyGreeting(SMTP):
    """aiosmtpd answering every connection with 421, as a server at its connection limit does."""

    async def _handle_client(self) -> None:
        await self.push("421 4.3.2 Too many connections, try again later")
        assert self.transport is not None
        self.transport.close()


class _BusyController(Controller):
    def factory(self) -> SMTP:
        return _BusyGreeting(self.handler, **self.SMTP_kwargs)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.usefixtures("one_story")
def test_421_greeting_keeps_the_digest_pending_and_the_next_run_sends_it(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    busy_sink = SmtpSink()
    port = _free_port()
    busy = _BusyController(busy_sink, hostname="127.0.0.1", port=port)
    busy.start()
    try:
        _point_at(monkeypatch, port)
        reports = run_digest(engine)
    finally:
        busy.stop()
    assert [r.status for r in reports] == ["pending"]
    assert "421" in reports[0].detail and "Too many connections" in reports[0].detail
    assert busy_sink.received == []

    with SmtpServer() as server:
        _point_at(monkeypatch, server.port)
        assert [r.status for r in run_digest(engine, now=NOW + timedelta(minutes=30))] == ["sent"]
        assert run_digest(engine, now=NOW + timedelta(hours=1)) == []
        assert len(server.sink.received) == 1


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


@pytest.mark.usefixtures("one_story")
def test_a_server_that_never_answers_times_out_and_the_digest_stays_pending(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, silent_server: int
) -> None:
    _point_at(monkeypatch, silent_server, timeout=1)
    started = time.monotonic()
    reports = run_digest(engine)
    assert time.monotonic() - started < 8  # bounded by MARSAD_SMTP_TIMEOUT, not hanging
    assert [r.status for r in reports] == ["pending"]
    assert reports[0].detail == f"timed out talking to 127.0.0.1:{silent_server}"  # not "closed"
    row = digest_rows(engine)[0]
    assert row.status == DigestStatus.PENDING and row.attempts == 1


class _Replies(SmtpSink):
    """A sink whose final reply to DATA is ``data_reply``; "hang" keeps the message and never replies."""

    def __init__(self, data_reply: str) -> None:
        super().__init__()
        self.data_reply = data_reply

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(_received(envelope))  # the server has the content
        if self.data_reply == "hang":
            await asyncio.sleep(5)
            return "250 2.0.0 too late"
        return self.data_reply


def _received(envelope: Any) -> Received:
    return Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)


@pytest.mark.usefixtures("one_story")
@pytest.mark.parametrize(
    ("reply", "status", "next_run"),
    [
        ("452 4.3.1 Insufficient system storage", "pending", "sent"),
        ("421 4.3.2 Shutting down after this message", "pending", "sent"),
        ("554 5.6.0 Message content rejected", "failed", None),
        ("hang", "unknown", "sent"),
    ],
)
def test_the_final_reply_to_data_decides_what_happens_next(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, reply: str, status: str, next_run: str | None
) -> None:
    sink = _Replies(reply)
    port = _free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        _point_at(monkeypatch, port, timeout=1)
        first = run_digest(engine)
        assert [r.status for r in first] == [status], first[0].detail
        if reply != "hang":
            assert reply.split()[0] in first[0].detail
        else:
            assert "timed out talking to" in first[0].detail, first[0].detail
        sink.data_reply = "250 2.0.0 Message accepted"
        later = run_digest(engine, now=NOW + timedelta(minutes=30))
    finally:
        controller.stop()
    if next_run is None:  # a permanent refusal waits for an operator
        assert later == [] and len(sink.received) == 1
    else:
        assert [r.status for r in later] == [next_run]
        first_copy, second_copy = sink.received
        assert first_copy.message["Message-ID"] == second_copy.message["Message-ID"]
    assert run_digest(engine, now=NOW + timedelta(hours=1)) == []
    with session_scope(engine) as session:
        assert len(session.scalars(select(Digest)).all()) == 1


# --- TLS that must not go through ---------------------------------------------------------------


def _point_at_tls(monkeypatch: pytest.MonkeyPatch, port: int, security: str, ca_file: Path | str) -> None:
    _point_at(monkeypatch, port)
    monkeypatch.setenv("MARSAD_SMTP_SECURITY", security)
    monkeypatch.setenv("MARSAD_SMTP_CA_FILE", str(ca_file))
    reset_settings()


@pytest.mark.usefixtures("one_story")
def test_a_certificate_for_another_host_is_refused_even_from_a_trusted_ca(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The host name is checked too: a certificate of the right CA issued to another name is a
    man in the middle, as far as the client can tell."""
    elsewhere = issue_certificate(tmp_path, names=("mail.elsewhere.test",))
    with SmtpServer(tls="ssl", certificate=elsewhere) as server:
        _point_at_tls(monkeypatch, server.port, "ssl", elsewhere.ca_file)
        reports = run_digest(engine)
        assert server.sink.received == []
    assert [r.status for r in reports] == ["pending"]
    assert reports[0].detail.startswith(f"TLS certificate of 127.0.0.1:{server.port} not trusted: IP address mismatch")
    assert "is it signed by a CA in MARSAD_SMTP_CA_FILE" in reports[0].detail


@pytest.mark.usefixtures("one_story")
def test_starttls_not_offered_sends_nothing_in_clear_text(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A server (or someone between) that drops STARTTLS from its EHLO reply: no downgrade."""
    ca = issue_certificate(tmp_path).ca_file
    with SmtpServer() as server:  # plain SMTP only
        _point_at_tls(monkeypatch, server.port, "starttls", ca)
        reports = run_digest(engine)
        assert server.sink.received == []
    assert [r.status for r in reports] == ["pending"]
    assert reports[0].detail == f"127.0.0.1:{server.port} does not offer STARTTLS; nothing was sent in clear text"


@pytest.mark.usefixtures("one_story")
@pytest.mark.parametrize("problem", ["missing", "not a certificate"])
def test_an_unusable_ca_file_keeps_the_digest_pending_and_says_so(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, problem: str
) -> None:
    ca_file = tmp_path / "ca.pem"
    if problem != "missing":
        ca_file.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    with SmtpServer() as server:
        _point_at_tls(monkeypatch, server.port, "starttls", ca_file)
        reports = run_digest(engine)
        assert server.sink.sessions == 0  # not even connected
    assert [r.status for r in reports] == ["pending"]
    assert reports[0].detail.startswith(f"cannot load MARSAD_SMTP_CA_FILE {ca_file}: ")
    assert digest_rows(engine)[0].attempts == 1
