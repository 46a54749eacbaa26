"""Sending one message over SMTP, and saying how it went.

The outcome separates what is safe to retry from what is not: before the server has the message's
content, a failure means it was not delivered; once the content is sent, a dropped connection leaves
the server perhaps holding it ("unknown"), which the caller retries only once, with the same
Message-ID, so that a receiving system can drop the copy.

TLS (``starttls`` or ``ssl``) always verifies the server's certificate and host name, against the
system's trust store or, when ``ca_file`` is set, against that PEM bundle only (an internal CA, a
self-signed server). A password is only ever sent over TLS, or to a server on this machine.
"""

from __future__ import annotations

import ipaddress
import smtplib
import socket
import ssl
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
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
    ca_file: Path | None = None  # PEM bundle of the CAs to trust instead of the system's

    def __repr__(self) -> str:  # the password never reaches a log line
        return f"SmtpServer({self.host}:{self.port}, {self.security}, user={self.username!r})"

    @property
    def local(self) -> bool:
        """The server runs on this machine (a relay, mailpit): nothing crosses a network."""
        if self.host.lower() in ("localhost", "localhost.localdomain"):
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:
            return False

    def tls_context(self) -> ssl.SSLContext:
        """Certificate and host name checked; OSError or ssl.SSLError when ``ca_file`` is unusable."""
        # create_default_context(cafile=...) trusts that bundle alone, not the system store too.
        if self.ca_file is None:
            return ssl.create_default_context()
        return ssl.create_default_context(cafile=str(self.ca_file))


@dataclass(frozen=True)
class Delivery:
    outcome: Outcome
    detail: str = ""


def send(message: bytes, sender: str, recipient: str, server: SmtpServer) -> Delivery:
    """Hand one message to the server for one recipient."""
    content_sent = False
    if server.username and server.security == "none" and not server.local:
        # Nothing is sent; the digest goes out on the first run after the settings are fixed.
        return Delivery(
            Outcome.RETRY,
            f"not logging in to {server.host}:{server.port} without TLS: the password would cross the "
            "network unencrypted (set MARSAD_SMTP_SECURITY to starttls or ssl)",
        )
    try:
        context = server.tls_context() if server.security != "none" else None
    except (OSError, ssl.SSLError) as exc:  # nothing was sent: retried once the file is fixed
        return Delivery(Outcome.RETRY, f"cannot load MARSAD_SMTP_CA_FILE {server.ca_file}: {exc.strerror or exc}")
    try:
        smtp = _connect(server, context)
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


def _connect(server: SmtpServer, context: ssl.SSLContext | None) -> smtplib.SMTP:
    if server.security == "ssl":
        return smtplib.SMTP_SSL(server.host, server.port, timeout=server.timeout, context=context)
    smtp = smtplib.SMTP(server.host, server.port, timeout=server.timeout)
    try:
        smtp.ehlo_or_helo_if_needed()
        if context is not None:
            # smtplib raises SMTPNotSupportedError when STARTTLS is not offered: never plain text.
            smtp.starttls(context=context)
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
    if isinstance(exc, ssl.SSLCertVerificationError):
        hint = (
            f"is it signed by a CA in MARSAD_SMTP_CA_FILE ({server.ca_file})?"
            if server.ca_file
            else "for a self-signed or internal CA, set MARSAD_SMTP_CA_FILE to its PEM file"
        )
        reason = str(exc.verify_message or exc.reason).rstrip(". ")
        return f"TLS certificate of {where} not trusted: {reason}; {hint}"
    if isinstance(exc, smtplib.SMTPNotSupportedError) and "STARTTLS" in str(exc):
        return f"{where} does not offer STARTTLS; nothing was sent in clear text"
    if isinstance(exc, ssl.SSLError):
        return f"TLS with {where} failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {where}"
    # smtplib reports a reply that never came as "Connection unexpectedly closed: timed out".
    if isinstance(exc, (socket.timeout, TimeoutError)) or isinstance(exc.__context__, TimeoutError):
        return f"timed out talking to {where}"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return f"{where} closed the connection: {exc}" if str(exc) else f"{where} closed the connection"
    return f"{where}: {type(exc).__name__}: {exc}"
