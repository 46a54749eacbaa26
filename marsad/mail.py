"""Sending one message over SMTP, and saying how it went.

The outcome separates what is safe to retry from what is not: before the server has the message's
content, a failure means it was not delivered; once the content is sent, a dropped connection leaves
the server perhaps holding it ("unknown"), which the caller retries only once, with the same
Message-ID, so that a receiving system can drop the copy.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

Security = Literal["none", "starttls", "ssl"]


class Outcome(StrEnum):
    SENT = "sent"
    RETRY = "retry"  # not delivered; a later attempt may succeed (server down, 4xx)
    REFUSED = "refused"  # not delivered; retrying will not help (5xx)
    UNKNOWN = "unknown"  # the content was sent but no final reply came back


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    security: Security = "starttls"
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0

    def __repr__(self) -> str:  # the password never reaches a log line
        return f"SmtpServer({self.host}:{self.port}, {self.security}, user={self.username!r})"


@dataclass(frozen=True)
class Delivery:
    outcome: Outcome
    detail: str = ""


def send(message: bytes, sender: str, recipient: str, server: SmtpServer) -> Delivery:
    """Hand one message to the server for one recipient."""
    content_sent = False
    try:
        smtp = _connect(server)
        try:
            if server.username:
                smtp.login(server.username, server.password or "")
            code, reply = smtp.mail(sender)
            if code != 250:
                return _refusal(code, reply, "MAIL FROM")
            code, reply = smtp.rcpt(recipient)
            if code not in (250, 251):
                return _refusal(code, reply, "RCPT TO")
            # From here the server may have the content even if we never see its answer.
            content_sent = True
            code, reply = smtp.data(message)
            if code != 250:
                return _refusal(code, reply, "DATA")
            return Delivery(Outcome.SENT, f"{code} {_text(reply)}")
        finally:
            _close(smtp)
    except smtplib.SMTPDataError as exc:
        return _refusal(exc.smtp_code, exc.smtp_error, "DATA")
    except smtplib.SMTPAuthenticationError as exc:
        return Delivery(Outcome.REFUSED, f"authentication refused: {exc.smtp_code} {_text(exc.smtp_error)}")
    except smtplib.SMTPResponseException as exc:
        if content_sent:
            return Delivery(Outcome.UNKNOWN, f"{exc.smtp_code} {_text(exc.smtp_error)}")
        return _refusal(exc.smtp_code, exc.smtp_error, "session")
    except (smtplib.SMTPException, OSError) as exc:  # refused, reset, timed out, TLS errors
        reason = _describe(exc, server)
        if content_sent:
            return Delivery(Outcome.UNKNOWN, f"connection lost after the message was sent: {reason}")
        return Delivery(Outcome.RETRY, reason)


def _connect(server: SmtpServer) -> smtplib.SMTP:
    if server.security == "ssl":
        return smtplib.SMTP_SSL(
            server.host, server.port, timeout=server.timeout, context=ssl.create_default_context()
        )
    smtp = smtplib.SMTP(server.host, server.port, timeout=server.timeout)
    try:
        smtp.ehlo_or_helo_if_needed()
        if server.security == "starttls":
            smtp.starttls(context=ssl.create_default_context())
            smtp.ehlo()
    except BaseException:
        smtp.close()
        raise
    return smtp


def _close(smtp: smtplib.SMTP) -> None:
    # A failing QUIT after the server accepted the message changes nothing about its delivery.
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def _refusal(code: int, reply: bytes | str, step: str) -> Delivery:
    outcome = Outcome.RETRY if 400 <= code < 500 else Outcome.REFUSED
    return Delivery(outcome, f"{step}: {code} {_text(reply)}")


def _text(reply: bytes | str) -> str:
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", "replace")
    return " ".join(reply.split())[:300]


def _describe(exc: BaseException, server: SmtpServer) -> str:
    where = f"{server.host}:{server.port}"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {where}"
    # smtplib reports a reply that never came as "Connection unexpectedly closed: timed out".
    if isinstance(exc, (socket.timeout, TimeoutError)) or isinstance(exc.__context__, TimeoutError):
        return f"timed out talking to {where}"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return f"{where} closed the connection: {exc}" if str(exc) else f"{where} closed the connection"
    return f"{where}: {type(exc).__name__}: {exc}"
