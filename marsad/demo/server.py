"""Serve the bundled sample web (``site/``) on loopback, the way a real news site would.

Files are served with ``{{BASE}}`` replaced by the server's base URL, a Content-Type per kind,
a strong ETag (hash of the body) and Last-Modified (the file's mtime); conditional requests get
``304 Not Modified``, anything missing ``404``. Standard library only; nothing is logged.

The sample news is always recent: a date is written ``{{DATE <day> <HH:MM> <format>}}``, ``<day>``
counted from the day the server started (0 that day, -1 the day before) in its time zone, and served
as that instant in the outlets' zone (UTC+3). On day 0 the times are scaled into the hours already
past (a 22:30 story served at 09:00 ran at 08:26), so nothing is dated in the future and a digest
built right after the demo's ingest has stories of its own day.

    with SampleWeb() as web:
        print(web.base_url, web.feeds())
"""

from __future__ import annotations

import hashlib
import re
import socket
import sys
import threading
from datetime import UTC, datetime, time, timedelta, timezone
from email.utils import format_datetime, parsedate_to_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any, Self
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo

SITE_DIR = Path(__file__).parent / "site"
FEEDS_FILE = Path(__file__).parent / "feeds.yaml"
PLACEHOLDER = b"{{BASE}}"
DATE_PLACEHOLDER = re.compile(rb"\{\{DATE (-?\d+) (\d\d):(\d\d) ([a-z0-9_]+)\}\}")
OUTLET_ZONE = timezone(timedelta(hours=3), "GMT+3")  # Damascus, Baghdad, Amman
_EN_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
              "September", "October", "November", "December"]
_AR_MONTHS = ["يناير", "فبراير", "مارس", "أبريل", "مايو", "يونيو", "يوليو", "أغسطس", "سبتمبر",
              "أكتوبر", "نوفمبر", "ديسمبر"]
_AR_WEEKDAYS = ["الاثنين", "الثلاثاء", "الأربعاء", "الخميس", "الجمعة", "السبت", "الأحد"]
_EN_DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
_EN_MONTHS_SHORT = [m[:3] for m in _EN_MONTHS]


def sample_time(day: int, hour: int, minute: int, now: datetime, tz: ZoneInfo) -> datetime:
    """The instant of a ``{{DATE day HH:MM ...}}`` placeholder for a server started at ``now``:
    ``day`` days from ``now``'s day in ``tz`` at HH:MM, except that on day 0 the time of day is
    scaled into the part of the day already past (order kept, never after ``now``)."""
    today = now.astimezone(tz).date()
    midnight = datetime.combine(today + timedelta(days=day), time(), tzinfo=tz)
    of_day = timedelta(hours=hour, minutes=minute)
    if day == 0:
        return (midnight + (now - midnight) * (of_day / timedelta(days=1))).replace(second=0, microsecond=0)
    return datetime.combine(today + timedelta(days=day), time(hour, minute), tzinfo=tz)


def format_sample_time(when: datetime, style: str) -> str:
    """``when`` as the sample outlets write dates, in their zone (UTC+3)."""
    t = when.astimezone(OUTLET_ZONE)
    if style == "iso":
        return t.isoformat()
    if style == "rfc822":
        return f"{_EN_DAYS[t.weekday()]}, {t.day:02d} {_EN_MONTHS_SHORT[t.month - 1]} {t.year} {t:%H:%M:%S} +0300"
    if style == "long":  # 12 March 2026
        return f"{t.day} {_EN_MONTHS[t.month - 1]} {t.year}"
    if style == "us":  # March 12, 2026, 3:05 p.m. GMT+3
        hour = t.hour % 12 or 12
        return f"{_EN_MONTHS[t.month - 1]} {t.day}, {t.year}, {hour}:{t.minute:02d} {'a.m.' if t.hour < 12 else 'p.m.'} GMT+3"
    if style == "ar":  # الخميس 12 مارس 2026
        return f"{_AR_WEEKDAYS[t.weekday()]} {t.day} {_AR_MONTHS[t.month - 1]} {t.year}"
    if style == "ar_time":  # الخميس 12 مارس 2026 - 09:40
        return f"{format_sample_time(t, 'ar')} - {t:%H:%M}"
    raise ValueError(f"unknown date style {style!r}")

_TEXT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
}
_BINARY_TYPES = {".jpg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
_NOT_FOUND = (
    b'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Page not found</title>'
    b"</head>\n<body><h1>404</h1><p>Page not found.</p></body></html>\n"
)


def _content_type(path: Path, body: bytes) -> str:
    if path.suffix == ".xml":
        # Atom and RSS share the extension; the root element tells them apart.
        head = body[:1000]
        kind = "atom" if b"<feed" in head and b"<rss" not in head else "rss"
        return f"application/{kind}+xml; charset=utf-8"
    default = _BINARY_TYPES.get(path.suffix, "application/octet-stream")
    return _TEXT_TYPES.get(path.suffix, default)


def _etag_matches(header: str, etag: str) -> bool:
    # If-None-Match uses weak comparison (RFC 9110 13.1.2).
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def _not_modified_since(header: str, last_modified: datetime) -> bool:
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return False
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return last_modified <= since


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def version_string(self) -> str:
        return "MarsadSampleWeb/1.0"

    def do_GET(self) -> None:
        self._serve(with_body=True)

    def do_HEAD(self) -> None:
        self._serve(with_body=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the demo prints its own summary

    def _serve(self, *, with_body: bool) -> None:
        path = self._resolve(urlsplit(self.path).path)
        if path is None:
            html = {"Content-Type": "text/html; charset=utf-8"}
            self._send(HTTPStatus.NOT_FOUND, html, _NOT_FOUND, with_body)
            return
        body = path.read_bytes()
        ctype = _content_type(path, body)
        if PLACEHOLDER in body:
            body = body.replace(PLACEHOLDER, self.server.base_url.encode("ascii"))
        body = DATE_PLACEHOLDER.sub(self.server.date_for, body)
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        modified = datetime.fromtimestamp(int(path.stat().st_mtime), tz=UTC)
        headers = {
            "ETag": etag,
            "Last-Modified": format_datetime(modified, usegmt=True),
            "Cache-Control": "no-cache",
        }
        inm = self.headers.get("If-None-Match")
        ims = self.headers.get("If-Modified-Since")
        if (inm is not None and _etag_matches(inm, etag)) or (
            inm is None and ims is not None and _not_modified_since(ims, modified)
        ):
            self._send(HTTPStatus.NOT_MODIFIED, headers, b"", with_body=False)
            return
        self._send(HTTPStatus.OK, {"Content-Type": ctype, **headers}, body, with_body)

    def _resolve(self, url_path: str) -> Path | None:
        rel = PurePosixPath(unquote(url_path).lstrip("/"))
        if url_path.endswith("/") or not rel.parts:
            rel = rel / "index.html"
        if any(part in ("..", ".") or part.startswith(".") for part in rel.parts):
            return None
        root = self.server.site_dir.resolve()
        path = (root / rel).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            return None
        return path

    def _send(
        self, status: HTTPStatus, headers: dict[str, str], body: bytes, with_body: bool
    ) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if status != HTTPStatus.NOT_MODIFIED:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body and body:
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    base_url: str
    site_dir: Path
    now: datetime
    tz: ZoneInfo

    def date_for(self, match: re.Match[bytes]) -> bytes:
        day, hour, minute, style = match.groups()
        when = sample_time(int(day), int(hour), int(minute), self.now, self.tz)
        return format_sample_time(when, style.decode("ascii")).encode("utf-8")

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-response is not worth a traceback on the demo's console.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class SampleWeb:
    """The bundled sample web on a loopback port, as a context manager.

    ``port=0`` picks a free port; ``base_url`` is known once the server is bound (on entering).
    The sample news is dated relative to ``now`` (default: when the server starts), by days in
    ``tz`` (default: MARSAD_TIMEZONE, the analysts' days).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        site_dir: Path = SITE_DIR,
        now: datetime | None = None,
        tz: ZoneInfo | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.site_dir = site_dir
        self._now = now
        self._tz = tz
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("SampleWeb is not running; use it as a context manager")
        return self._server.base_url

    @property
    def now(self) -> datetime:
        """The instant the sample news is dated from (known once the server runs)."""
        if self._server is None:
            raise RuntimeError("SampleWeb is not running; use it as a context manager")
        return self._server.now

    def feeds(self) -> list[dict[str, str]]:
        """The entries of ``feeds.yaml`` ({"url", "name", "language"}) with ``{{BASE}}`` filled in."""
        import yaml  # PyYAML is a dependency of marsad; imported here so serving stays stdlib-only

        data = yaml.safe_load(FEEDS_FILE.read_text(encoding="utf-8"))
        base = self.base_url
        return [
            {
                "url": str(entry["url"]).replace(PLACEHOLDER.decode(), base),
                "name": str(entry["name"]),
                "language": str(entry.get("language", "")),
            }
            for entry in data["feeds"]
        ]

    def __enter__(self) -> Self:
        server_class = _Server
        if ":" in self.host:
            server_class = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
        server = server_class((self.host, self.port), _Handler)
        host, port = server.server_address[:2]
        server.base_url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        server.site_dir = self.site_dir
        server.now = self._now or datetime.now(UTC)
        server.tz = self._tz or _analysts_zone()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"marsad-sample-web:{port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None


def _analysts_zone() -> ZoneInfo:
    from marsad.config import get_settings  # imported here so serving stays stdlib-only
    from marsad.errors import ConfigError

    try:
        return get_settings().tz
    except ConfigError:  # an invalid setting is reported by the command that uses it, not here
        return ZoneInfo("UTC")


def main() -> None:
    """Serve the sample web until interrupted: ``python -m marsad.demo.server [port]``."""
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8765
    with SampleWeb(port=port) as web:
        print(f"Sample web at {web.base_url}/ (Ctrl-C to stop)")
        for feed in web.feeds():
            print(f"  {feed['language']}  {feed['url']}  {feed['name']}")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
