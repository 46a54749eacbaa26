"""Digest bookkeeping: one record per recipient and day, delivered as close to once as SMTP allows.

A run first *prepares*: for each recipient it builds and stores the day's digest (the message bytes,
its Message-ID and the articles it carries) unless that record exists. Then it *delivers* every
record not yet delivered, claiming each with a conditional UPDATE so that two runs never send one
digest twice. A failed send stays pending for the next run; a connection lost after the message was
sent is "unknown" and retried once with the same bytes and Message-ID. A digest the server refused
for good (5xx, a refused login) or whose delivery stayed unknown twice is "failed": its articles stay
carried by it, and :func:`resend` (``marsad digest --resend``) sends it again, once the cause is
fixed, with the same bytes and Message-ID.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from email import message_from_bytes, policy
from email.utils import make_msgid
from pathlib import Path

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from marsad import mail
from marsad.config import Settings
from marsad.db import session_scope
from marsad.digest import TOPIC_LABELS, DigestView, Spike, build_view, check_address, render
from marsad.errors import ConfigError, InputError, OutboxError
from marsad.health import feed_health
from marsad.tagging import TOPICS
from marsad.trends import find_spikes
from models import DAILY, UNDELIVERED_STATUSES, Digest, DigestItem, DigestStatus, Subscription

# A "sending" record older than this was left by a run that died mid-send: it is read as unknown.
SENDING_LEASE = timedelta(minutes=15)


@dataclass(frozen=True)
class Recipient:
    address: str
    topics: tuple[str, ...]


@dataclass
class DeliveryReport:
    digest_id: int
    recipient: str
    day: date
    kind: str
    status: str
    detail: str = ""
    files: tuple[Path, ...] = ()


@dataclass
class DigestSummary:
    prepared: int = 0
    reports: list[DeliveryReport] = field(default_factory=list)
    requeued: int | None = None  # set by a resend, which prepares nothing

    def count(self, status: str) -> int:
        return sum(1 for r in self.reports if r.status == status)

    def as_log_line(self) -> str:
        if self.requeued is None:
            parts = [f"{self.prepared} digests prepared"]
        else:
            parts = [f"{self.requeued} failed {'digest' if self.requeued == 1 else 'digests'} requeued"]
        for status in ("sent", "empty", "pending", "unknown", "failed", "skipped"):
            if n := self.count(status):
                parts.append(f"{n} {status}")
        return "digest: " + ", ".join(parts)

    def as_markdown(self) -> str:
        rows = "\n".join(
            f"| {r.day} | {r.kind} | {r.recipient} | {r.status} | {r.detail.replace('|', '/')} |"
            for r in self.reports
        )
        return (
            f"# Digest\n\n{self.as_log_line()}\n\n| day | kind | recipient | status | detail |\n"
            f"|---|---|---|---|---|\n{rows}\n"
        )


# --- recipients ----------------------------------------------------------------------------------


def recipients(session: Session, settings: Settings, to: Sequence[str] | None = None) -> list[Recipient]:
    """Who gets a digest: ``to`` when given, else MARSAD_DIGEST_TO and the active subscriptions.
    A subscription's topics filter its address's digest; others get every topic. With no one to
    send to and no SMTP server, the outbox digest is addressed to the sender."""
    subscribed = {
        s.address.lower(): s
        for s in session.scalars(select(Subscription).where(Subscription.active.is_(True)))
    }
    if to:
        addresses = [check_address(a) for a in to]
    else:
        addresses = [check_address(a) for a in settings.digest_to]
        # Checked again: a row written past ``subscribe`` (an older version, a hand edit) must
        # stop the run before any digest is stored, not after some recipients' are.
        addresses += [check_address(s.address) for s in subscribed.values()]
    if not addresses:
        if settings.smtp_host:
            raise ConfigError(
                "no digest recipients: set MARSAD_DIGEST_TO, add one with "
                "`marsad subscriptions add ADDRESS`, or pass --to"
            )
        addresses = [check_address(settings.digest_from)]
    out: dict[str, Recipient] = {}
    for address in addresses:
        subscription = subscribed.get(address.lower())
        topics = tuple(subscription.topics) if subscription and subscription.topics else TOPICS
        out.setdefault(address.lower(), Recipient(address, topics))
    return list(out.values())


def subscribe(session: Session, address: str, topics: Sequence[str] | None) -> Subscription:
    """Add or update a subscription (idempotent); no topics means every topic."""
    address = check_address(address)
    unknown = [t for t in topics or () if t not in TOPICS]
    if unknown:
        raise InputError(f"unknown topic {unknown[0]!r}; topics are {', '.join(TOPICS)}")
    chosen = [t for t in TOPICS if t in (topics or ())] or None
    existing = session.scalar(select(Subscription).where(Subscription.address == address))
    if existing is None:
        existing = Subscription(address=address, topics=chosen, active=True)
        session.add(existing)
    else:
        existing.topics, existing.active = chosen, True
    session.flush()
    return existing


def unsubscribe(session: Session, address: str) -> bool:
    existing = session.scalar(select(Subscription).where(Subscription.address == check_address(address)))
    if existing is None or not existing.active:
        return False
    existing.active = False
    return True


# --- periods -------------------------------------------------------------------------------------


def _midnight(day: date, settings: Settings) -> datetime:
    return datetime.combine(day, time(), tzinfo=settings.tz).astimezone(timezone.utc)


def period(session: Session, settings: Settings, recipient: str, day: date, now: datetime) -> tuple[datetime, datetime]:
    """The period of ``recipient``'s digest for ``day``: from the end of their previous digest (or
    the start of the day before, for a first digest) to now, or to the end of ``day`` if past."""
    if day > now.astimezone(settings.tz).date():
        # A digest dated ahead would hold back every digest until that day: dates only move forward.
        raise InputError(f"no digest for {day}: it is in the future ({settings.timezone})")
    later = session.scalar(
        select(Digest.digest_date)
        .where(Digest.recipient == recipient, Digest.kind == DAILY, Digest.digest_date > day)
        .order_by(Digest.digest_date.desc())
        .limit(1)
    )
    if later is not None:
        raise InputError(
            f"{recipient} already has a digest for {later}: digests only move forward in time"
        )
    end = min(now, _midnight(day + timedelta(days=1), settings))
    previous = session.scalar(
        select(Digest.period_end)
        .where(Digest.recipient == recipient, Digest.kind == DAILY, Digest.digest_date < day)
        .order_by(Digest.digest_date.desc())
        .limit(1)
    )
    start = previous if previous is not None else _midnight(day - timedelta(days=1), settings)
    return start, max(start, end)


def todays_spikes(
    session: Session, settings: Settings, topics: Sequence[str], day: date
) -> list[Spike]:
    """Topics whose count on ``day`` (so far) is unusually high against the days before."""
    return [
        Spike(row["topic"], TOPIC_LABELS[row["topic"]], row["count"], row["baseline"], row["z"])
        for row in find_spikes(
            session,
            topics=topics,
            by="day",
            since=day,
            until=day,
            k=settings.spike_threshold,
            min_count=settings.spike_min_articles,
            tz=settings.tz,
        )
    ]


def build_digest_view(
    session: Session,
    settings: Settings,
    recipient: Recipient,
    day: date,
    start: datetime,
    end: datetime,
    now: datetime,
    alert: Spike | None = None,
) -> DigestView:
    return build_view(
        session,
        recipient=recipient.address,
        topics=recipient.topics,
        day=day,
        period_start=start,
        period_end=end,
        tz=settings.tz,
        health=feed_health(session, now, timedelta(days=settings.silent_days)),
        max_stories=settings.digest_max_stories,
        # The trends strip counts ``day``; its SPIKE marks must be about the same day.
        spikes=todays_spikes(session, settings, recipient.topics, day),
        alert=alert,
    )


# --- preparing -----------------------------------------------------------------------------------


def prepare(
    engine: Engine, settings: Settings, day: date, now: datetime, to: Sequence[str] | None = None
) -> int:
    """Build and store each recipient's digest for ``day`` unless it exists; returns how many were
    built now."""
    with session_scope(engine) as session:
        people = recipients(session, settings, to)
    built = 0
    for person in people:
        try:
            with session_scope(engine) as session:
                if _existing(session, person.address, day) is not None:
                    continue
                start, end = period(session, settings, person.address, day, now)
                view = build_digest_view(session, settings, person, day, start, end, now)
                _store(session, settings, person, view, now)
                built += 1
        except IntegrityError:
            continue  # an overlapping run stored this digest first: theirs stands
    return built


def _existing(session: Session, recipient: str, day: date, kind: str = DAILY) -> Digest | None:
    return session.scalar(
        select(Digest).where(
            Digest.recipient == recipient, Digest.digest_date == day, Digest.kind == kind
        )
    )


def prepare_alerts(
    engine: Engine, settings: Settings, now: datetime, to: Sequence[str] | None = None
) -> int:
    """Store a spike alert for each topic spiking today and each recipient who follows it, once
    per topic and day; returns how many were built now. An alert lists today's stories of the
    topic so far and carries none: they still come in the next daily digest."""
    day = now.astimezone(settings.tz).date()
    start = _midnight(day, settings)
    built = 0
    with session_scope(engine) as session:
        people = recipients(session, settings, to)
        spiking = todays_spikes(session, settings, TOPICS, day)
    for spike in spiking:
        kind = f"spike:{spike.topic}"
        for person in people:
            if spike.topic not in person.topics:
                continue
            try:
                with session_scope(engine) as session:
                    if _existing(session, person.address, day, kind) is not None:
                        continue
                    focused = Recipient(person.address, (spike.topic,))
                    view = build_digest_view(session, settings, focused, day, start, now, now, alert=spike)
                    _store(session, settings, person, view, now, kind=kind)
                    built += 1
            except IntegrityError:
                continue  # an overlapping run stored it first
    return built


def _store(
    session: Session, settings: Settings, person: Recipient, view: DigestView, now: datetime, kind: str = DAILY
) -> None:
    empty = view.is_empty and not settings.digest_send_empty and view.alert is None
    domain = check_address(settings.digest_from).rsplit("@", 1)[1]
    message_id = make_msgid(idstring=f"{kind.replace(':', '.')}.{view.day:%Y%m%d}", domain=domain)
    message = None
    if not empty:
        rendered = render(
            view, sender=settings.digest_from, recipient=person.address, message_id=message_id, when=now
        )
        message = rendered.as_bytes()
    digest = Digest(
        recipient=person.address,
        digest_date=view.day,
        kind=kind,
        period_start=view.period_start,
        period_end=view.period_end,
        topics=list(view.topics),
        message_id=message_id,
        subject=view.subject(),
        status=DigestStatus.EMPTY if empty else DigestStatus.PENDING,
        story_count=view.story_count,
        article_count=len(view.article_ids),
        message=message,
        created_at=now,
    )
    session.add(digest)
    session.flush()  # a concurrent run's record for the same recipient and day raises here
    if view.article_ids and kind == DAILY:
        session.execute(
            insert(DigestItem), [{"digest_id": digest.id, "article_id": a} for a in view.article_ids]
        )


# --- delivering ----------------------------------------------------------------------------------


def undelivered(engine: Engine, to: Sequence[str] | None = None) -> list[int]:
    """Digests still to deliver, oldest first (only ``to``'s when given)."""
    query = select(Digest.id).where(Digest.status.in_(UNDELIVERED_STATUSES))
    if to:
        query = query.where(Digest.recipient.in_([check_address(a) for a in to]))
    with session_scope(engine) as session:
        return list(session.scalars(query.order_by(Digest.digest_date, Digest.id)))


def smtp_server(settings: Settings) -> mail.SmtpServer | None:
    if not settings.smtp_host:
        return None
    return mail.SmtpServer(
        host=settings.smtp_host,
        port=settings.smtp_port,
        security=settings.smtp_security,
        username=settings.smtp_username,
        password=settings.smtp_password,
        timeout=settings.smtp_timeout,
        ca_file=settings.smtp_ca_file,
    )


def deliver(engine: Engine, settings: Settings, digest_id: int, now: datetime) -> DeliveryReport:
    """Deliver one digest if it still needs it and no other run is delivering it."""
    server = smtp_server(settings)
    # The message was rendered with a checked sender; the envelope's comes from today's settings.
    # Refuse a bad one before claiming, so the digest stays pending instead of stuck "sending".
    sender = check_address(settings.digest_from) if server is not None else settings.digest_from
    with session_scope(engine) as session:
        digest = session.get(Digest, digest_id)
        if digest is None:
            raise InputError(f"no digest with id {digest_id}")
        report = DeliveryReport(digest.id, digest.recipient, digest.digest_date, digest.kind, "skipped")
        if digest.status not in UNDELIVERED_STATUSES:
            report.detail = f"already {digest.status}"
            return report
        stale = digest.status == DigestStatus.SENDING
        if stale and digest.attempted_at and digest.attempted_at > now - SENDING_LEASE:
            report.status, report.detail = "skipped", "another run is sending it"
            return report
        unknown_attempts = digest.unknown_attempts + (1 if stale else 0)
        claimed = session.execute(
            update(Digest)
            .where(
                Digest.id == digest.id,
                Digest.status == digest.status,
                Digest.attempts == digest.attempts,
            )
            .values(
                status=DigestStatus.SENDING,
                attempts=digest.attempts + 1,
                attempted_at=now,
                unknown_attempts=unknown_attempts,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if claimed != 1:
            report.status, report.detail = "skipped", "another run claimed it"
            return report
        message, recipient = digest.message or b"", digest.recipient
    if unknown_attempts > 1:
        return _finish(engine, report, DigestStatus.FAILED, "delivery unknown twice: not sent again")

    try:
        report.files = write_outbox(settings.outbox_dir, report.day, recipient, message, kind=report.kind)
    except OutboxError as exc:  # nothing was sent: the next run tries again
        _finish(engine, report, DigestStatus.PENDING, str(exc))
        raise
    if server is None:
        return _finish(engine, report, DigestStatus.SENT, f"written to {report.files[0]}", transport="outbox", now=now)
    result = mail.send(message, sender, recipient, server)
    if result.outcome is mail.Outcome.SENT:
        return _finish(engine, report, DigestStatus.SENT, result.detail, transport="smtp", now=now)
    if result.outcome is mail.Outcome.RETRY:
        return _finish(engine, report, DigestStatus.PENDING, result.detail)
    if result.outcome is mail.Outcome.REFUSED:
        return _finish(engine, report, DigestStatus.FAILED, result.detail)
    if unknown_attempts >= 1:
        return _finish(engine, report, DigestStatus.FAILED, f"unknown twice: {result.detail}")
    return _finish(engine, report, DigestStatus.UNKNOWN, result.detail, unknown=unknown_attempts + 1)


def requeue(
    engine: Engine, day: date | None = None, to: Sequence[str] | None = None
) -> list[int]:
    """Put failed daily digests (of ``day``, of ``to``, or all) back as pending, with their stored
    message and Message-ID, and a fresh allowance of one "unknown" retry; returns their ids, oldest
    first. Spike alerts are not requeued: their stories come in the daily digest anyway."""
    query = select(Digest.id).where(Digest.status == DigestStatus.FAILED, Digest.kind == DAILY)
    if day is not None:
        query = query.where(Digest.digest_date == day)
    if to:
        query = query.where(Digest.recipient.in_([check_address(a) for a in to]))
    with session_scope(engine) as session:
        ids = list(session.scalars(query.order_by(Digest.digest_date, Digest.id)))
        if ids:
            session.execute(
                update(Digest)
                # Conditional: a concurrent resend requeues (and then sends) each digest once.
                .where(Digest.id.in_(ids), Digest.status == DigestStatus.FAILED)
                .values(status=DigestStatus.PENDING, unknown_attempts=0)
                .execution_options(synchronize_session=False)
            )
    return ids


def resend(
    engine: Engine,
    settings: Settings,
    now: datetime,
    day: date | None = None,
    to: Sequence[str] | None = None,
) -> DigestSummary:
    """Requeue failed digests (see :func:`requeue`) and deliver them now; builds nothing new."""
    ids = requeue(engine, day, to)
    summary = DigestSummary(requeued=len(ids))
    for digest_id in ids:
        summary.reports.append(deliver(engine, settings, digest_id, now))
    return summary


def _finish(
    engine: Engine,
    report: DeliveryReport,
    status: DigestStatus,
    detail: str,
    *,
    transport: str | None = None,
    now: datetime | None = None,
    unknown: int | None = None,
) -> DeliveryReport:
    values: dict[str, object] = {"status": status, "last_error": None if status == DigestStatus.SENT else detail}
    if status == DigestStatus.SENT:
        values.update(transport=transport, sent_at=now)
    if unknown is not None:
        values["unknown_attempts"] = unknown
    with session_scope(engine) as session:
        session.execute(update(Digest).where(Digest.id == report.digest_id).values(**values))
    report.status, report.detail = str(status), detail
    return report


# --- the outbox ----------------------------------------------------------------------------------

_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9@._-]+")


def outbox_paths(
    outbox: Path, day: date, recipient: str, prefix: str = "", kind: str = DAILY
) -> tuple[Path, Path]:
    what = "digest" if kind == DAILY else f"alert-{kind.split(':', 1)[-1]}"
    stem = f"{prefix}marsad-{what}-{day.isoformat()}-{_UNSAFE_FILENAME.sub('_', recipient)}"
    return outbox / f"{stem}.eml", outbox / f"{stem}.html"


def write_outbox(
    outbox: Path, day: date, recipient: str, message: bytes, prefix: str = "", kind: str = DAILY
) -> tuple[Path, Path]:
    """The message as ``.eml`` and its HTML part as ``.html``, each replaced atomically."""
    eml, html = outbox_paths(outbox, day, recipient, prefix, kind)
    parsed = message_from_bytes(message, policy=policy.default)
    body = parsed.get_body(("html",))
    html_text = body.get_content() if body is not None else ""
    try:
        outbox.mkdir(parents=True, exist_ok=True)
        _atomic_write(eml, message)
        _atomic_write(html, html_text.encode("utf-8"))
    except OSError as exc:
        raise OutboxError(f"cannot write the digest to {outbox}: {exc.strerror or exc}") from exc
    return eml, html


def _atomic_write(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


# --- previews ------------------------------------------------------------------------------------


def preview(
    engine: Engine, settings: Settings, day: date, now: datetime, to: Sequence[str] | None = None
) -> list[Path]:
    """Build each recipient's digest as a run would, write it to the outbox with a ``preview-``
    prefix, and record nothing."""
    paths: list[Path] = []
    with session_scope(engine) as session:
        for person in recipients(session, settings, to):
            existing = _existing(session, person.address, day)
            if existing is not None and existing.message:
                message = existing.message
            else:
                start, end = period(session, settings, person.address, day, now)
                view = build_digest_view(session, settings, person, day, start, end, now)
                message = render(
                    view,
                    sender=settings.digest_from,
                    recipient=person.address,
                    message_id=make_msgid(idstring="preview", domain="marsad.invalid"),
                    when=now,
                ).as_bytes()
            paths.extend(write_outbox(settings.outbox_dir, day, person.address, message, prefix="preview-"))
        session.rollback()
    return paths

