"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives and can misbehave on cue."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


@dataclass
class Received:
    sender: str
    recipients: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.raw, policy=policy.default)  # type: ignore[return-value]


@dataclass
class SmtpSink:
    """``mode``: "accept"; "tempfail" (451 on RCPT); "reject" (550 on RCPT); "busy" (421 on
    MAIL); "drop_after_data" (keeps the message, then closes without a final reply)."""

    mode: str = "accept"
    received: list[Received] = field(default_factory=list)
    sessions: int = 0
    auth: list[tuple[str, str]] = field(default_factory=list)

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]) -> list[str]:
        self.sessions += 1
        session.host_name = hostname
        return responses

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if self.mode == "busy":
            return "421 4.3.2 Service shutting down, try later"
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if self.mode == "tempfail":
            return "451 4.3.0 Mailbox temporarily unavailable"
        if self.mode == "reject":
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        if self.mode == "drop_after_data":
            server.transport.close()  # the message arrived; its sender never hears so
        return "250 2.0.0 Message accepted"

    def messages(self) -> list[EmailMessage]:
        return [r.message for r in self.received]


def _authenticator(sink: SmtpSink):
    from aiosmtpd.smtp import AuthResult, LoginPassword

    def check(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            sink.auth.append((auth_data.login.decode(), auth_data.password.decode()))
            return AuthResult(success=auth_data.password == b"s3cret-pass", handled=False)
        return AuthResult(success=False, handled=False)

    return check


class SmtpServer:
    """A started aiosmtpd controller on 127.0.0.1 and a free port."""

    def __init__(self, require_auth: bool = False) -> None:
        self.sink = SmtpSink()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        kwargs: dict[str, Any] = {}
        if require_auth:
            kwargs = {
                "authenticator": _authenticator(self.sink),
                "auth_require_tls": False,
                "auth_required": True,
                # smtplib falls back from a refused PLAIN to LOGIN, which aiosmtpd then awaits
                # until the client times out: offer PLAIN only.
                "auth_exclude_mechanism": ["LOGIN"],
            }
        self.controller = Controller(self.sink, hostname="127.0.0.1", port=self.port, **kwargs)

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
