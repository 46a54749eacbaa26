"""Polite, bounded and SSRF-safe HTTP fetching.

``Fetcher.fetch`` never raises for network, HTTP or policy problems: it returns a ``FetchResult``
whose ``status`` and ``reason`` say what happened, so the caller can record the outcome on the feed
and schedule the next poll (see ``retry_after``).

Address policy: a URL may only reach public addresses unless ``allow_hosts`` (MARSAD_ALLOW_HOSTS)
lists the host name, the address or a CIDR holding it. ``check_url`` refuses literal addresses and
foreign schemes before any DNS lookup; the authoritative check happens in ``_GuardedBackend``, which
resolves every host itself and connects only to an address it has just approved. Checking there,
rather than on the URL, is what defeats DNS rebinding, odd address spellings and redirects to
internal hosts, because it sees the address the socket is actually opened to.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import re
import socket
import ssl
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from functools import lru_cache
from types import TracebackType
from typing import TYPE_CHECKING, Self
from urllib.parse import urlsplit

import anyio
import httpcore
import httpx

import marsad
from marsad.errors import BlockedAddressError, ConfigError, FetchError

if TYPE_CHECKING:
    from marsad.config import Settings

USER_AGENT = f"Marsad/{marsad.__version__} (+news monitoring; polite feed and article fetcher)"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_ALLOWED_SCHEMES = ("http", "https")
# Accept-Encoding is limited to what _BodyDecoder can inflate with a bound on the output.
_ACCEPT_ENCODING = "gzip, deflate"
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})


class FetchStatus(StrEnum):
    OK = "ok"
    NOT_MODIFIED = "not_modified"
    HTTP_ERROR = "http_error"
    ERROR = "error"


class FetchReason(StrEnum):
    """Machine reasons for a failed fetch; HTTP failures use ``f"http_{code}"`` instead."""

    TIMEOUT = "timeout"
    DEADLINE = "deadline"
    TOO_LARGE = "too_large"
    BLOCKED_ADDRESS = "blocked_address"
    BAD_SCHEME = "bad_scheme"
    BAD_URL = "bad_url"
    BAD_REDIRECT = "bad_redirect"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    CONNECT_ERROR = "connect_error"
    TLS_ERROR = "tls_error"
    DNS_ERROR = "dns_error"
    NETWORK_ERROR = "network_error"
    PROTOCOL_ERROR = "protocol_error"
    BAD_ENCODING = "bad_encoding"


@dataclass
class FetchResult:
    """One fetch's outcome. ``body`` is decoded and only set when OK; ``elapsed`` is the wall time
    of the ``fetch`` call, including any wait for a free slot."""

    url: str
    final_url: str
    status: FetchStatus
    http_status: int | None = None
    body: bytes = b""
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    retry_after: float | None = None
    reason: str | None = None
    error: str | None = None
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is FetchStatus.OK


# --- Address policy -------------------------------------------------------------------------------

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_METADATA = ipaddress.IPv4Address("169.254.169.254")
# Characters of the numeric host spellings inet_aton accepts (2130706433, 0x7f000001, 0177.1).
_NUMERIC_HOST = re.compile(r"[0-9a-fA-FxX.]+")


def _embedded_ipv4(ip: IPAddress) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 host an IPv6 address leads to (mapped, NAT64, 6to4), with the form's name."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    return None


def non_public_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public unicast address, or None when it is one."""
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        # These forms reach the embedded IPv4 host, so that host is what must be public.
        form, inner_ip = embedded
        inner = non_public_reason(inner_ip)
        return f"{form} {inner}" if inner else None
    if ip in _IPV4_COMPATIBLE and not (ip.is_loopback or ip.is_unspecified):
        return "IPv4-compatible (deprecated)"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip == _METADATA:
        return "cloud metadata"
    if ip.is_link_local:
        return "link-local"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "shared (CGNAT)"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "site-local"
    if not ip.is_global:
        return "not globally routable"
    return None


def literal_ip(host: str) -> IPAddress | None:
    """The address a host string denotes by itself, in any spelling the C resolver accepts."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    # getaddrinfo hands these to inet_aton, which reads 2130706433, 0x7f000001, 0177.0.0.1 and
    # 127.1 as 127.0.0.1; using the same parser means the check sees what the socket would.
    if _NUMERIC_HOST.fullmatch(host) and host[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


@dataclass(frozen=True)
class HostPolicy:
    """Which non-public destinations are allowed: host names, addresses and networks."""

    names: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> HostPolicy:
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                if "/" in entry:
                    raise ConfigError(f"allowed host {raw!r} is not a valid CIDR") from None
                names.add(entry)
        return cls(frozenset(names), tuple(networks))

    def allows_name(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.names

    def allows_ip(self, ip: IPAddress) -> bool:
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            # A mapped address is the IPv4 host on the wire, so an IPv4 entry covers it.
            candidates.append(ip.ipv4_mapped)
        if any(c in net for c in candidates for net in self.networks):
            return True
        return non_public_reason(ip) is None


def _as_policy(allow_hosts: Iterable[str] | HostPolicy) -> HostPolicy:
    return allow_hosts if isinstance(allow_hosts, HostPolicy) else HostPolicy.parse(allow_hosts)


def _blocked(host: str, ip: IPAddress) -> BlockedAddressError:
    why = non_public_reason(ip) or "not allowed"
    embedded = _embedded_ipv4(ip)
    spellings = [str(ip)] + ([str(embedded[1])] if embedded else [])
    aliases = [a for a in spellings if a != host]
    shown = f"{host} ({' = '.join(aliases)})" if aliases else host
    return BlockedAddressError(
        f"refusing {shown}: {why} address; add it to MARSAD_ALLOW_HOSTS to allow it"
    )


def _check_scheme(scheme: str, url: str) -> None:
    if scheme.lower() not in _ALLOWED_SCHEMES:
        shown = f"{scheme.lower()}:" if scheme else "scheme-less"
        raise FetchError(
            f"refusing {shown} URL {url!r}: only http and https are fetched",
            reason=FetchReason.BAD_SCHEME,
        )


def check_url(url: str, allow_hosts: Iterable[str] | HostPolicy = ()) -> None:
    """Refuse a foreign scheme or a literal non-public address before any DNS lookup.

    Host names pass here; the addresses they resolve to are checked when connecting.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - parsing the port is what validates it
    except ValueError as exc:
        raise FetchError(f"invalid URL {url!r}: {exc}", reason=FetchReason.BAD_URL) from None
    _check_scheme(parts.scheme, url)
    if not host:
        raise FetchError(f"invalid URL {url!r}: no host", reason=FetchReason.BAD_URL)
    ip = literal_ip(host)
    if ip is None:
        return
    policy = _as_policy(allow_hosts)
    if not policy.allows_ip(ip) and not policy.allows_name(host):
        raise _blocked(host, ip)


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves hosts itself and opens sockets only to addresses the policy allows."""

    def __init__(self, policy: HostPolicy, inner: httpcore.AsyncNetworkBackend | None = None):
        self._policy = policy
        self._inner = inner if inner is not None else httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        started = time.monotonic()
        try:
            with anyio.fail_after(timeout):
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except socket.gaierror as exc:
            raise FetchError(
                f"cannot resolve {host}: {exc.strerror}", reason=FetchReason.DNS_ERROR
            ) from None
        except UnicodeError as exc:  # a name IDNA cannot encode
            raise FetchError(
                f"cannot resolve {host}: {exc}", reason=FetchReason.DNS_ERROR
            ) from None
        except OSError as exc:
            raise httpcore.ConnectError(f"resolving {host} failed: {exc}") from exc

        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        if not addresses:
            raise FetchError(f"{host} has no address", reason=FetchReason.DNS_ERROR)
        if self._policy.allows_name(host):
            allowed = addresses
        else:
            allowed = [ip for ip in addresses if self._policy.allows_ip(ip)]
        if not allowed:
            raise _blocked(host, addresses[0])

        last_error: Exception | None = None
        for ip in allowed:
            remaining = (
                None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
            )
            try:
                # Connecting to the approved address, not the name, leaves no second lookup for a
                # rebinding DNS server to answer differently; TLS still verifies the host name,
                # because httpcore passes the URL's host as server_hostname.
                return await self._inner.connect_tcp(
                    str(ip),
                    port,
                    timeout=remaining,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedAddressError(f"refusing unix socket {path}")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle costs tens of milliseconds; one verifying context serves every client.
    return httpx.create_ssl_context(trust_env=False)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with its connection pool using ``_GuardedBackend``."""

    def __init__(self, policy: HostPolicy, *, limits: httpx.Limits) -> None:
        ssl_context = _ssl_context()
        super().__init__(verify=ssl_context, trust_env=False, limits=limits)
        # httpx (0.27, 0.28) offers no network_backend argument, but its transport only delegates
        # to self._pool; an identically configured pool with our backend is the smallest hook.
        if not isinstance(getattr(self, "_pool", None), httpcore.AsyncConnectionPool):
            raise TypeError("this httpx version has no _pool to guard; marsad.fetch needs updating")
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_GuardedBackend(policy),
        )


# --- Bodies ---------------------------------------------------------------------------------------


class _BodyDecoder:
    """Removes the content-coding while never producing more than the caller asks for.

    httpx's own decoders inflate each network chunk completely, so a 50 KB gzip bomb becomes 50 MB
    in memory before any size check could run; zlib's ``max_length`` stops inflation at the cap.
    """

    def __init__(self, coding: str) -> None:
        self._coding = coding
        self._inflater: zlib._Decompress | None = None
        if coding in ("gzip", "x-gzip"):
            self._inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif coding == "deflate":
            self._inflater = zlib.decompressobj(zlib.MAX_WBITS)
        self._started = False

    @classmethod
    def for_header(cls, header: str | None) -> _BodyDecoder:
        codings = [c.strip().lower() for c in (header or "").split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        if not codings:
            return cls("identity")
        if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
            return cls(codings[0])
        raise FetchError(
            f"unsupported Content-Encoding {header!r}", reason=FetchReason.BAD_ENCODING
        )

    @property
    def is_identity(self) -> bool:
        return self._inflater is None

    def decode(self, data: bytes, limit: int) -> bytes:
        """Up to ``limit`` decoded bytes from ``data``; reaching ``limit`` means "too large"."""
        if self._inflater is None:
            return data[:limit]
        if self._inflater.eof:
            return b""  # bytes after the end of the compressed stream are ignored, as browsers do
        try:
            out = self._inflater.decompress(data, limit)
        except zlib.error as exc:
            if self._coding == "deflate" and not self._started:
                # Some servers send raw deflate without the zlib header under "deflate".
                self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
                self._started = True
                return self.decode(data, limit)
            raise FetchError(
                f"corrupt {self._coding} body: {exc}", reason=FetchReason.BAD_ENCODING
            ) from None
        self._started = True
        return out

    def flush(self) -> bytes:
        if self._inflater is None or self._inflater.eof:
            return b""
        return self._inflater.flush()


# --- Retry-After ----------------------------------------------------------------------------------


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP-date); None if unusable."""
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # HTTP-dates are GMT; "-0000" parses as naive
    now = now if now is not None else datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


# --- Fetcher --------------------------------------------------------------------------------------


class HostSpacing:
    """At least ``interval`` seconds between two requests to one host.

    Kept apart from the Fetcher so that it can outlive one: a run of many batches, each fetched by
    its own Fetcher in its own event loop, stays polite across the batches' boundaries. A plain
    class, not a dataclass: Prefect walks a dataclass passed to a task and may hand the task a
    copy, whose times the next batch would never see.
    """

    def __init__(self, interval: float) -> None:
        if not interval >= 0:  # also refuses NaN
            raise ConfigError("the interval between requests to one host must be 0 or more seconds")
        self.interval = interval
        self.last_sent: dict[str, float] = {}  # host → time.monotonic() of its latest request

    def __repr__(self) -> str:
        return f"HostSpacing({self.interval:g} s)"


@dataclass
class _Progress:
    """What is known about a fetch so far, so a failure can still report where it got to."""

    url: str
    final_url: str
    started: float = field(default_factory=time.monotonic)
    http_status: int | None = None
    conditional: bool = False  # validators sent: only then does a 304 mean "not modified"

    def failed(self, reason: str, error: str) -> FetchResult:
        return FetchResult(
            url=self.url,
            final_url=self.final_url,
            status=FetchStatus.ERROR,
            http_status=self.http_status,
            reason=str(reason),
            error=" ".join(error.split()),  # one line, whatever the exception text held
            elapsed=time.monotonic() - self.started,
        )


@dataclass
class _Hop:
    response: httpx.Response
    body: bytes = b""
    location: str | None = None


class Fetcher:
    """Fetches URLs politely (per-host and global limits) within time, size and address bounds.

    Use as ``async with Fetcher(...) as fetcher: await fetcher.fetch(url)``; one instance owns one
    connection pool and should serve a whole run.
    """

    def __init__(
        self,
        *,
        allow_hosts: Sequence[str] = (),
        connect_timeout: float = 10.0,
        read_timeout: float = 20.0,
        deadline: float = 60.0,
        max_bytes: int = 10 * 1024 * 1024,
        max_redirects: int = 5,
        per_host: int = 2,
        concurrency: int = 16,
        user_agent: str = USER_AGENT,
        host_spacing: HostSpacing | None = None,
    ) -> None:
        if per_host < 1 or concurrency < 1:
            raise ConfigError("fetch limits per_host and concurrency must be at least 1")
        self.policy = HostPolicy.parse(allow_hosts)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.deadline = deadline
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.per_host = per_host
        self.concurrency = concurrency
        self.user_agent = user_agent
        self.host_spacing = host_spacing
        self._global_slots = asyncio.Semaphore(concurrency)
        self._host_slots: dict[str, asyncio.Semaphore] = {}
        self._host_turns: dict[str, asyncio.Lock] = {}
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, *, host_spacing: HostSpacing | None = None
    ) -> Fetcher:
        """A Fetcher with the settings' limits and, when given, a pause between two requests to
        one host (none by default: the feed poll relies on the per-host limit alone)."""
        return cls(
            allow_hosts=settings.allow_hosts,
            connect_timeout=settings.fetch_connect_timeout,
            read_timeout=settings.fetch_read_timeout,
            deadline=settings.fetch_deadline,
            max_bytes=settings.fetch_max_bytes,
            max_redirects=settings.fetch_max_redirects,
            per_host=settings.fetch_per_host,
            concurrency=settings.fetch_concurrency,
            host_spacing=host_spacing,
        )

    async def __aenter__(self) -> Self:
        limits = httpx.Limits(
            max_connections=self.concurrency, max_keepalive_connections=self.concurrency
        )
        self._client = httpx.AsyncClient(
            transport=_GuardedTransport(self.policy, limits=limits),
            timeout=httpx.Timeout(
                connect=self.connect_timeout,
                read=self.read_timeout,
                write=self.read_timeout,
                pool=self.connect_timeout,
            ),
            headers={"User-Agent": self.user_agent, "Accept-Encoding": _ACCEPT_ENCODING},
            follow_redirects=False,  # followed by hand so every hop is checked
            event_hooks={"response": [_refuse_foreign_redirect]},
            trust_env=False,  # no proxies or CA bundles taken from the environment
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def fetch(
        self, url: str, *, etag: str | None = None, last_modified: str | None = None
    ) -> FetchResult:
        """GET ``url``, following redirects; problems come back as a result, never raised."""
        if self._client is None:
            raise RuntimeError("use the Fetcher inside 'async with'")
        progress = _Progress(url=url, final_url=url)
        conditional: dict[str, str] = {}
        if etag:
            conditional["If-None-Match"] = etag
        if last_modified:
            conditional["If-Modified-Since"] = last_modified
        progress.conditional = bool(conditional)
        async with self._global_slots:
            try:
                return await self._follow(self._client, progress, conditional)
            except FetchError as exc:
                return progress.failed(exc.reason, str(exc))
            except httpx.HTTPError as exc:
                reason, error = self._describe(exc)
                return progress.failed(reason, f"{error} ({progress.final_url})")

    async def _follow(
        self, client: httpx.AsyncClient, progress: _Progress, headers: dict[str, str]
    ) -> FetchResult:
        # The deadline bounds time spent on the network across all hops; time queued for a host
        # slot does not count, or a long queue for one site would time out requests never sent.
        budget = self.deadline
        current = progress.url
        for _ in range(self.max_redirects + 1):
            progress.final_url = current
            check_url(current, self.policy)
            try:
                request = client.build_request("GET", current, headers=headers)
            except httpx.InvalidURL as exc:
                raise FetchError(
                    f"invalid URL {current!r}: {exc}", reason=FetchReason.BAD_URL
                ) from None
            async with self._host_slot(request.url.host):
                await self._wait_turn(request.url.host)
                hop_started = time.monotonic()
                deadline = asyncio.timeout(budget)
                try:
                    async with deadline:
                        hop = await self._exchange(client, request, progress)
                except httpx.InvalidURL as exc:
                    # httpx parses every Location while sending, even when not following it.
                    raise _bad_redirect(current, exc) from None
                except TimeoutError:
                    if not deadline.expired():
                        raise
                    raise FetchError(
                        f"no complete response within the {self.deadline:g}s deadline ({current})",
                        reason=FetchReason.DEADLINE,
                    ) from None
                budget -= time.monotonic() - hop_started
            if hop.location is None:
                return self._result(progress, hop)
            try:
                current = str(hop.response.url.join(hop.location))
            except httpx.InvalidURL as exc:
                raise _bad_redirect(current, exc) from None
        raise FetchError(
            f"more than {self.max_redirects} redirects, last to {current}",
            reason=FetchReason.TOO_MANY_REDIRECTS,
        )

    def _describe(self, exc: httpx.HTTPError) -> tuple[str, str]:
        """A machine reason and a short human line for an httpx failure."""
        detail = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.ConnectTimeout):
            return FetchReason.TIMEOUT, f"no connection within {self.connect_timeout:g}s"
        if isinstance(exc, httpx.ReadTimeout):
            return FetchReason.TIMEOUT, f"no data from the server for {self.read_timeout:g}s"
        if isinstance(exc, httpx.TimeoutException):
            return FetchReason.TIMEOUT, f"timed out: {detail}"
        if isinstance(exc, httpx.ConnectError):
            if _caused_by_tls(exc):
                return FetchReason.TLS_ERROR, f"TLS failed: {detail}"
            return FetchReason.CONNECT_ERROR, f"cannot connect: {detail}"
        if isinstance(exc, httpx.ProtocolError):
            return FetchReason.PROTOCOL_ERROR, f"bad HTTP from the server: {detail}"
        if isinstance(exc, httpx.UnsupportedProtocol):
            return FetchReason.BAD_SCHEME, detail
        return FetchReason.NETWORK_ERROR, f"{type(exc).__name__}: {detail}"

    def _host_slot(self, host: str) -> asyncio.Semaphore:
        slot = self._host_slots.get(host)
        if slot is None:
            slot = self._host_slots[host] = asyncio.Semaphore(self.per_host)
        return slot

    async def _wait_turn(self, host: str) -> None:
        """Hold a request to ``host`` until the spacing's interval has passed since the previous.

        Measured from the moment the previous request was let go, after its own wait, so timer
        jitter never brings two requests closer; redirect hops count as requests. The wait is not
        charged to the deadline, which bounds time on the network.
        """
        spacing = self.host_spacing
        if spacing is None or spacing.interval <= 0:
            return
        # The lock is this Fetcher's (asyncio locks belong to one event loop); the times are the
        # spacing's, which may outlive it.
        lock = self._host_turns.get(host)
        if lock is None:
            lock = self._host_turns[host] = asyncio.Lock()
        async with lock:
            wait = spacing.last_sent.get(host, -math.inf) + spacing.interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            spacing.last_sent[host] = time.monotonic()

    async def _exchange(
        self, client: httpx.AsyncClient, request: httpx.Request, progress: _Progress
    ) -> _Hop:
        response = await client.send(request, stream=True)
        try:
            progress.http_status = response.status_code
            location = response.headers.get("Location")
            if response.status_code in _REDIRECT_CODES and location:
                return _Hop(response, location=location)
            if response.is_success:
                return _Hop(response, body=await self._read_body(response))
            return _Hop(response)
        finally:
            await response.aclose()

    async def _read_body(self, response: httpx.Response) -> bytes:
        decoder = _BodyDecoder.for_header(response.headers.get("Content-Encoding"))
        too_large = FetchError(
            f"body larger than {self.max_bytes} bytes ({response.url})",
            reason=FetchReason.TOO_LARGE,
        )
        declared = response.headers.get("Content-Length", "")
        if decoder.is_identity and declared.isdigit() and int(declared) > self.max_bytes:
            raise too_large
        body = bytearray()
        async for chunk in response.aiter_raw():
            # Asking for one byte more than the room left is how an overflow shows itself.
            body += decoder.decode(chunk, self.max_bytes - len(body) + 1)
            if len(body) > self.max_bytes:
                raise too_large
        body += decoder.flush()
        if len(body) > self.max_bytes:
            raise too_large
        return bytes(body)

    def _result(self, progress: _Progress, hop: _Hop) -> FetchResult:
        response = hop.response
        code = response.status_code
        if response.is_success:
            status, reason, error = FetchStatus.OK, None, None
        elif code == 304 and progress.conditional:
            status, reason, error = FetchStatus.NOT_MODIFIED, None, None
        elif code == 304:
            # Nothing to be "not modified" against: an error, or the caller would keep nothing
            # and record no reason.
            status, reason = FetchStatus.HTTP_ERROR, "http_304"
            error = f"HTTP 304 to a request that was not conditional ({response.url})"
        elif 300 <= code < 400:
            status, reason = FetchStatus.HTTP_ERROR, str(FetchReason.BAD_REDIRECT)
            error = f"HTTP {code} without a usable Location ({response.url})"
        else:
            status, reason = FetchStatus.HTTP_ERROR, f"http_{code}"
            phrase = f" {response.reason_phrase}" if response.reason_phrase else ""
            error = f"HTTP {code}{phrase} ({response.url})"
        headers = response.headers
        return FetchResult(
            url=progress.url,
            final_url=str(response.url),
            status=status,
            http_status=code,
            body=hop.body if status is FetchStatus.OK else b"",
            content_type=headers.get("Content-Type"),
            etag=headers.get("ETag"),
            last_modified=headers.get("Last-Modified"),
            retry_after=parse_retry_after(headers.get("Retry-After")),
            reason=reason,
            error=error,
            elapsed=time.monotonic() - progress.started,
        )


def _bad_redirect(url: str, exc: Exception) -> FetchError:
    return FetchError(f"unusable redirect from {url}: {exc}", reason=FetchReason.BAD_REDIRECT)


async def _refuse_foreign_redirect(response: httpx.Response) -> None:
    # Runs before httpx parses the Location (which it does even when not following it), so a
    # redirect to javascript: or file: reads as the refused scheme it is, not as a parse failure.
    location = response.headers.get("Location")
    if response.status_code in _REDIRECT_CODES and location:
        try:
            scheme = urlsplit(location).scheme
        except ValueError as exc:
            raise _bad_redirect(str(response.url), exc) from None
        if scheme.lower() not in ("", *_ALLOWED_SCHEMES):
            raise FetchError(
                f"refusing redirect from {response.url} to {location!r}: only http and https",
                reason=FetchReason.BAD_SCHEME,
            )


def _caused_by_tls(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
