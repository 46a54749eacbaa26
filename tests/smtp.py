"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives and can misbehave on cue;
with a certificate, it speaks STARTTLS or TLS from the first byte ("ssl")."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller


@dataclass
class Received:
    sender: str
    recipients: list[str]
    raw: bytes
    tls: str | None = None  # the TLS version the message came over, None in clear text

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
        tls = server.transport.get_extra_info("ssl_object")
        self.received.append(Received(
            envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content, tls and tls.version()))
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


@dataclass(frozen=True)
class Certificate:
    """A server certificate and key (PEM files) issued by a private CA whose PEM is ``ca_file``."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def issue_certificate(folder: Path, names: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Certificate:
    """A private CA and a server certificate for ``names`` (IP addresses or host names) signed by
    it, with the extensions a strict verifier wants, as an internal mail server would have."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Marsad test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    out = Certificate(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    out.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out.key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return out


class SmtpServer:
    """A started aiosmtpd controller on 127.0.0.1 and a free port.

    ``tls="starttls"`` offers STARTTLS with ``certificate`` and refuses every command but EHLO,
    STARTTLS and QUIT before it; ``tls="ssl"`` speaks TLS from the first byte. With
    ``require_auth``, AUTH is only offered over TLS (aiosmtpd's default), except on a plain server,
    where the tests of the password's handling need it in clear text on loopback.
    """

    def __init__(
        self,
        require_auth: bool = False,
        tls: Literal["starttls", "ssl"] | None = None,
        certificate: Certificate | None = None,
    ) -> None:
        self.sink = SmtpSink()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        kwargs: dict[str, Any] = {}
        if require_auth:
            kwargs = {
                "authenticator": _authenticator(self.sink),
                # aiosmtpd counts only STARTTLS as TLS: on an "ssl" server every byte is already
                # encrypted, so AUTH is allowed there too.
                "auth_require_tls": tls == "starttls",
                "auth_required": True,
                # smtplib falls back from a refused PLAIN to LOGIN, which aiosmtpd then awaits
                # until the client times out: offer PLAIN only.
                "auth_exclude_mechanism": ["LOGIN"],
            }
        if tls is not None:
            assert certificate is not None, "a TLS server needs a certificate"
            if tls == "starttls":
                kwargs |= {"tls_context": certificate.server_context(), "require_starttls": True}
            else:
                kwargs["ssl_context"] = certificate.server_context()
        self.controller = Controller(self.sink, hostname="127.0.0.1", port=self.port, **kwargs)

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
