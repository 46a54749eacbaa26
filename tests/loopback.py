"""A small real HTTP server on a loopback address, for tests that must not touch the network.

    with LoopbackServer() as server:
        server.add("/feed.xml", FEED, content_type="application/rss+xml", etag='"v1"')
        ... fetch server.url("/feed.xml") ...
        assert server.requests_for("/feed.xml")[0].headers["user-agent"].startswith("Marsad/")

Routes are matched on the path with its query string first, then on the path alone; an unknown
path answers 404. Bodies are sent verbatim with the headers given, so a pre-compressed body plus
``headers={"Content-Encoding": "gzip"}`` serves a gzip bomb as-is (``gzip=True`` compresses for you).
"""

from __future__ import annotations

import gzip as gzip_module
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # as sent, with the query string
    headers: dict[str, str]  # names lower-cased


@dataclass(frozen=True)
class _Route:
    body: bytes
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    etag: str | None = None
    last_modified: str | None = None
    delay: float = 0.0
    drip: float | None = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops the SYNs of a burst of concurrent connections, and
    # each dropped one stalls its client a whole second before the kernel retries it.
    request_queue_size = 128
    app: LoopbackServer

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that give up mid-response (timeouts, size caps) are the point of many tests.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass  # test output stays readable; the server records requests instead

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def _serve(self, *, send_body: bool) -> None:
        app = self.server.app
        app._record(
            RecordedRequest(
                self.command,
                self.path,
                {name.lower(): value for name, value in self.headers.items()},
            )
        )
        with app._in_flight():
            route = app._route(self.path)
            if route is None:
                route = _Route(b"not found", 404, [("Content-Type", "text/plain")])
            if route.delay and app._stopping.wait(route.delay):
                self.close_connection = True
                return
            if self._not_modified(route):
                self.send_response(304)
                for name, value in route.headers:
                    if name.lower() in ("etag", "last-modified", "cache-control"):
                        self.send_header(name, value)
                self.end_headers()
                return
            self.send_response(route.status)
            for name, value in route.headers:
                self.send_header(name, value)
            has_body = route.status >= 200 and route.status not in (204, 304)
            if has_body:
                self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            if not (has_body and send_body):
                return
            if route.drip is None:
                self.wfile.write(route.body)
                return
            for index in range(len(route.body)):
                self.wfile.write(route.body[index : index + 1])
                self.wfile.flush()
                if app._stopping.wait(route.drip):
                    self.close_connection = True
                    return

    def _not_modified(self, route: _Route) -> bool:
        if_none_match = self.headers.get("If-None-Match")
        if route.etag is not None and if_none_match is not None:
            tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
            return "*" in tags or route.etag.removeprefix("W/") in tags
        if_modified_since = self.headers.get("If-Modified-Since")
        if route.last_modified is not None and if_modified_since is not None:
            try:
                since = parsedate_to_datetime(if_modified_since)
                modified = parsedate_to_datetime(route.last_modified)
                return modified <= since
            except (TypeError, ValueError):
                return False
        return False


class LoopbackServer:
    """A threaded HTTP/1.1 server on ``host`` (default 127.0.0.1) and a free port."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._lock = threading.Lock()
        self._routes: dict[str, _Route] = {}
        self._requests: list[RecordedRequest] = []
        self._active = 0
        self._peak = 0
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> Self:
        server_class = _Server6 if ":" in self.host else _Server
        httpd = server_class((self.host, 0), _Handler)
        httpd.app = self
        self._httpd = httpd
        self._stopping.clear()
        # A short poll interval keeps stop() quick; the default 0.5 s adds up across many tests.
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping.set()  # ends delays and drips still running in handler threads
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- addresses --------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("LoopbackServer is not started")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    # --- routes -----------------------------------------------------------------------------------

    def add(
        self,
        path: str,
        body: bytes | str,
        *,
        status: int = 200,
        content_type: str | None = "text/html; charset=utf-8",
        headers: dict[str, str] | None = None,
        etag: str | None = None,
        last_modified: str | None = None,
        delay: float = 0.0,
        drip: float | None = None,
        gzip: bool = False,
    ) -> None:
        """Serve ``body`` at ``path``.

        ``etag``/``last_modified`` are sent and make matching conditional requests answer 304;
        ``delay`` holds back the status line (slow headers); ``drip`` sends the body one byte per
        ``drip`` seconds; ``gzip`` compresses the body and labels it.
        """
        data = body.encode("utf-8") if isinstance(body, str) else body
        merged: dict[str, tuple[str, str]] = {}
        if content_type is not None:
            merged["content-type"] = ("Content-Type", content_type)
        if etag is not None:
            merged["etag"] = ("ETag", etag)
        if last_modified is not None:
            merged["last-modified"] = ("Last-Modified", last_modified)
        if gzip:
            data = gzip_module.compress(data, mtime=0)
            merged["content-encoding"] = ("Content-Encoding", "gzip")
        for name, value in (headers or {}).items():
            merged[name.lower()] = (name, value)
        route = _Route(data, status, list(merged.values()), etag, last_modified, delay, drip)
        with self._lock:
            self._routes[path] = route

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.add(path, b"", status=status, content_type=None, headers={"Location": location})

    def remove(self, path: str) -> None:
        with self._lock:
            self._routes.pop(path, None)

    # --- what happened ----------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_for(self, path: str) -> list[RecordedRequest]:
        """Requests whose path (with or without its query string) is ``path``."""
        return [r for r in self.requests if r.path == path or urlsplit(r.path).path == path]

    @property
    def peak_in_flight(self) -> int:
        """The most requests this server was handling at the same moment."""
        with self._lock:
            return self._peak

    # --- used by the handler ----------------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _route(self, raw_path: str) -> _Route | None:
        with self._lock:
            return self._routes.get(raw_path) or self._routes.get(urlsplit(raw_path).path)

    @contextmanager
    def _in_flight(self) -> Iterator[None]:
        with self._lock:
            self._active += 1
            self._peak = max(self._peak, self._active)
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
