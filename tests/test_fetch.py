"""marsad.fetch against real HTTP servers on loopback addresses.

The allowlist in these tests is 127.0.0.1 only, so a server on 127.0.0.2 stands in for an internal
host the fetcher must never reach; "refused" is proven by that server recording no request.
"""

from __future__ import annotations

import asyncio
import socket
import tracemalloc
import zlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from loopback import LoopbackServer

import marsad
from marsad.config import Settings
from marsad.errors import BlockedAddressError, FetchError
from marsad.fetch import (
    USER_AGENT,
    Fetcher,
    FetchResult,
    FetchStatus,
    check_url,
    parse_retry_after,
)

ALLOW = ("127.0.0.1",)
# Only a guard so a broken stop cannot hang the suite; no test asserts on durations.
GUARD_SECONDS = 30


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def outside() -> Iterator[LoopbackServer]:
    """A server on 127.0.0.2: reachable, but not on the allowlist, like an internal service."""
    with LoopbackServer("127.0.0.2") as srv:
        yield srv


def fetch(
    url: str,
    *,
    allow_hosts: Sequence[str] = ALLOW,
    etag: str | None = None,
    last_modified: str | None = None,
    **options: Any,
) -> FetchResult:
    async def run() -> FetchResult:
        async with Fetcher(allow_hosts=allow_hosts, **options) as fetcher:
            return await fetcher.fetch(url, etag=etag, last_modified=last_modified)

    async def guarded() -> FetchResult:
        return await asyncio.wait_for(run(), GUARD_SECONDS)

    return asyncio.run(guarded())


def fetch_many(urls: Sequence[str], **options: Any) -> list[FetchResult]:
    async def run() -> list[FetchResult]:
        async with Fetcher(allow_hosts=ALLOW, **options) as fetcher:
            return await asyncio.gather(*(fetcher.fetch(url) for url in urls))

    return asyncio.run(asyncio.wait_for(run(), GUARD_SECONDS))


def gzip_of_zeros(size: int) -> bytes:
    """``size`` zero bytes gzip-compressed, built without holding them all in memory."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = bytes(1024 * 1024)
    parts = [compressor.compress(block) for _ in range(size // len(block))]
    return b"".join(parts) + compressor.flush()


# --- plain fetching -------------------------------------------------------------------------------


def test_ok_fetch_returns_body_and_names_marsad(server: LoopbackServer) -> None:
    server.add("/page", "<p>سلام</p>", etag='"v1"', last_modified="Wed, 01 Jan 2025 00:00:00 GMT")

    result = fetch(server.url("/page"))

    assert result.ok and result.status is FetchStatus.OK
    assert result.http_status == 200
    assert result.body == "<p>سلام</p>".encode()
    assert result.content_type == "text/html; charset=utf-8"
    assert result.etag == '"v1"'
    assert result.last_modified == "Wed, 01 Jan 2025 00:00:00 GMT"
    assert result.final_url == result.url == server.url("/page")
    assert result.reason is None and result.error is None
    (request,) = server.requests_for("/page")
    assert request.headers["user-agent"] == USER_AGENT
    assert request.headers["user-agent"].startswith(f"Marsad/{marsad.__version__} ")
    assert "if-none-match" not in request.headers
    assert "if-modified-since" not in request.headers


def test_gzip_body_is_decoded(server: LoopbackServer) -> None:
    server.add("/feed", "<rss>" + "news " * 1000 + "</rss>", gzip=True)

    result = fetch(server.url("/feed"))

    assert result.ok
    assert result.body == ("<rss>" + "news " * 1000 + "</rss>").encode()


@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS], ids=["zlib", "raw"])
def test_deflate_body_is_decoded_with_or_without_zlib_header(
    server: LoopbackServer, wbits: int
) -> None:
    compressor = zlib.compressobj(6, zlib.DEFLATED, wbits)
    server.add(
        "/d",
        compressor.compress(b"deflated text") + compressor.flush(),
        headers={"Content-Encoding": "deflate"},
    )

    assert fetch(server.url("/d")).body == b"deflated text"


def test_unsupported_content_encoding_is_an_error(server: LoopbackServer) -> None:
    server.add("/br", b"\x1b\x00", headers={"Content-Encoding": "br"})

    result = fetch(server.url("/br"))

    assert result.status is FetchStatus.ERROR
    assert result.reason == "bad_encoding"
    assert result.body == b""


# --- conditional GET ------------------------------------------------------------------------------


def test_etag_makes_a_conditional_get(server: LoopbackServer) -> None:
    server.add("/feed", "<rss/>", etag='"abc"')
    first = fetch(server.url("/feed"))

    second = fetch(server.url("/feed"), etag=first.etag)

    assert second.status is FetchStatus.NOT_MODIFIED
    assert second.http_status == 304
    assert second.body == b""
    assert not second.ok
    assert server.requests_for("/feed")[1].headers["if-none-match"] == '"abc"'


def test_last_modified_makes_a_conditional_get(server: LoopbackServer) -> None:
    stamp = "Mon, 02 Jun 2025 10:00:00 GMT"
    server.add("/feed", "<rss/>", last_modified=stamp)

    result = fetch(server.url("/feed"), last_modified=stamp)

    assert result.status is FetchStatus.NOT_MODIFIED
    assert server.requests_for("/feed")[0].headers["if-modified-since"] == stamp


def test_changed_etag_gets_the_new_body(server: LoopbackServer) -> None:
    server.add("/feed", "<rss>new</rss>", etag='"v2"')

    result = fetch(server.url("/feed"), etag='"v1"')

    assert result.ok
    assert result.body == b"<rss>new</rss>"
    assert result.etag == '"v2"'


# --- HTTP errors and Retry-After -----------------------------------------------------------------


def test_unknown_path_is_http_404(server: LoopbackServer) -> None:
    result = fetch(server.url("/missing"))

    assert result.status is FetchStatus.HTTP_ERROR
    assert result.http_status == 404
    assert result.reason == "http_404"
    assert result.body == b""
    assert result.error is not None and "404" in result.error


def test_removed_path_is_http_404(server: LoopbackServer) -> None:
    server.add("/gone", "here")
    server.remove("/gone")

    assert fetch(server.url("/gone")).reason == "http_404"


@pytest.mark.parametrize("code", [403, 410, 500, 502])
def test_error_statuses_are_http_errors(server: LoopbackServer, code: int) -> None:
    server.add("/x", "oops", status=code)

    result = fetch(server.url("/x"))

    assert result.status is FetchStatus.HTTP_ERROR
    assert (result.http_status, result.reason) == (code, f"http_{code}")
    assert result.body == b""


def test_429_retry_after_seconds(server: LoopbackServer) -> None:
    server.add("/busy", "slow down", status=429, headers={"Retry-After": "120"})

    result = fetch(server.url("/busy"))

    assert result.reason == "http_429"
    assert result.retry_after == 120.0


def test_503_retry_after_http_date(server: LoopbackServer) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    server.add(
        "/down", "", status=503, headers={"Retry-After": format_datetime(later, usegmt=True)}
    )

    result = fetch(server.url("/down"))

    assert result.reason == "http_503"
    assert result.retry_after is not None
    assert 3000 < result.retry_after <= 3600


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past: retry now, never negative
        ("-5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    assert parse_retry_after(value, now=now) == expected


# --- redirects ------------------------------------------------------------------------------------


def test_redirects_are_followed(server: LoopbackServer) -> None:
    server.redirect("/old", server.url("/middle"), status=301)
    server.redirect("/middle", "/new?x=1", status=307)  # relative Location
    server.add("/new", "moved here")

    result = fetch(server.url("/old"))

    assert result.ok
    assert result.body == b"moved here"
    assert result.url == server.url("/old")
    assert result.final_url == server.url("/new?x=1")
    assert [r.path for r in server.requests] == ["/old", "/middle", "/new?x=1"]


def test_redirect_loop_stops(server: LoopbackServer) -> None:
    server.redirect("/a", "/b")
    server.redirect("/b", "/a")

    result = fetch(server.url("/a"), max_redirects=3)

    assert result.status is FetchStatus.ERROR
    assert result.reason == "too_many_redirects"
    assert len(server.requests) == 4  # the first request and three redirects


def test_redirect_without_location_is_an_http_error(server: LoopbackServer) -> None:
    server.add("/odd", "", status=302)

    result = fetch(server.url("/odd"))

    assert result.status is FetchStatus.HTTP_ERROR
    assert result.reason == "bad_redirect"


def test_unparseable_redirect_is_an_error(server: LoopbackServer) -> None:
    server.redirect("/odd", "http://[::1")

    result = fetch(server.url("/odd"))

    assert result.status is FetchStatus.ERROR
    assert result.reason == "bad_redirect"


@pytest.mark.parametrize(
    "location", ["file:///etc/passwd", "javascript:alert(1)", "ftp://127.0.0.1/feed", "gopher://x/"]
)
def test_redirect_to_another_scheme_is_refused(server: LoopbackServer, location: str) -> None:
    server.redirect("/r", location)

    result = fetch(server.url("/r"))

    assert result.status is FetchStatus.ERROR
    assert result.reason == "bad_scheme"
    assert result.body == b""


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "bad_scheme"),
        ("javascript:alert(1)", "bad_scheme"),
        ("data:text/html,hi", "bad_scheme"),
        ("example.org/feed", "bad_scheme"),
        ("http://", "bad_url"),
        ("http://127.0.0.1:99999/", "bad_url"),
        ("http://[::1/", "bad_url"),
    ],
)
def test_unusable_urls_are_results_not_exceptions(url: str, reason: str) -> None:
    result = fetch(url)

    assert result.status is FetchStatus.ERROR
    assert result.reason == reason
    assert result.error


# --- time and size limits -------------------------------------------------------------------------


def test_dripping_server_is_stopped_by_the_deadline(server: LoopbackServer) -> None:
    # One byte every 0.2 s never trips the read timeout; only the total deadline can end it.
    server.add("/drip", b"x" * 500, drip=0.2)

    result = fetch(server.url("/drip"), deadline=1.5, read_timeout=10)

    assert result.status is FetchStatus.ERROR
    assert result.reason == "deadline"
    assert result.http_status == 200
    assert result.body == b""


def test_slow_headers_time_out(server: LoopbackServer) -> None:
    server.add("/slow", "late", delay=10)

    result = fetch(server.url("/slow"), read_timeout=0.5, deadline=20)

    assert result.status is FetchStatus.ERROR
    assert result.reason == "timeout"
    assert result.http_status is None


def test_body_over_the_cap_is_too_large(server: LoopbackServer) -> None:
    server.add("/big", b"a" * 5000)
    server.add("/fits", b"a" * 1000)

    too_big = fetch(server.url("/big"), max_bytes=1000)
    fits = fetch(server.url("/fits"), max_bytes=1000)

    assert too_big.status is FetchStatus.ERROR
    assert too_big.reason == "too_large"
    assert too_big.body == b""
    assert fits.ok and len(fits.body) == 1000


def test_gzip_bomb_stops_at_the_cap_without_inflating_it(server: LoopbackServer) -> None:
    inflated = 50 * 1024 * 1024
    bomb = gzip_of_zeros(inflated)
    assert len(bomb) < 100 * 1024
    server.add("/bomb", bomb, headers={"Content-Encoding": "gzip"})

    tracemalloc.start()
    try:
        result = fetch(server.url("/bomb"), max_bytes=1024 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert result.reason == "too_large"
    # Inflating the whole body would need the full 50 MB at once; a bounded decoder never does.
    assert peak < inflated // 4


# --- address policy -------------------------------------------------------------------------------


def test_address_outside_the_allowlist_is_refused(outside: LoopbackServer) -> None:
    outside.add("/secret", "internal")

    result = fetch(outside.url("/secret"))

    assert result.status is FetchStatus.ERROR
    assert result.reason == "blocked_address"
    assert result.error is not None and "127.0.0.2" in result.error
    assert outside.requests == []


def test_loopback_is_refused_with_an_empty_allowlist(server: LoopbackServer) -> None:
    server.add("/", "hi")

    assert fetch(server.url("/"), allow_hosts=()).reason == "blocked_address"
    assert server.requests == []


@pytest.mark.parametrize(
    "host",
    ["2130706434", "0x7f000002", "0177.0.0.2", "127.0.2", "[::ffff:127.0.0.2]", "[::ffff:7f00:2]"],
)
def test_other_spellings_of_a_refused_address_are_refused(
    outside: LoopbackServer, host: str
) -> None:
    result = fetch(f"http://{host}:{outside.port}/")

    assert result.reason == "blocked_address"
    assert result.error is not None and "127.0.0.2" in result.error
    assert outside.requests == []


def test_redirect_to_a_refused_address_is_refused(
    server: LoopbackServer, outside: LoopbackServer
) -> None:
    outside.add("/admin", "internal")
    server.redirect("/go", outside.url("/admin"))

    result = fetch(server.url("/go"))

    assert result.reason == "blocked_address"
    assert result.final_url == outside.url("/admin")
    assert len(server.requests_for("/go")) == 1
    assert outside.requests == []


def test_a_host_name_is_allowed_only_when_listed(server: LoopbackServer) -> None:
    server.add("/", "local")
    by_name = f"http://localhost:{server.port}/"

    listed = fetch(by_name, allow_hosts=["localhost"])
    assert listed.ok and listed.body == b"local"
    assert len(server.requests) == 1

    # Checked at connect time: the name passes check_url, its address (127.0.0.1) does not.
    assert fetch(by_name, allow_hosts=["127.0.0.2"]).reason == "blocked_address"
    assert fetch(by_name, allow_hosts=()).reason == "blocked_address"
    # Allowing the name does not allow its address under another spelling.
    assert fetch(server.url("/"), allow_hosts=["localhost"]).reason == "blocked_address"
    assert len(server.requests) == 1


def test_allowlisted_network_allows_its_addresses(outside: LoopbackServer) -> None:
    outside.add("/", "ok")

    assert fetch(outside.url("/"), allow_hosts=["127.0.0.0/30"]).ok
    assert fetch(outside.url("/"), allow_hosts=["127.0.0.0/31"]).reason == "blocked_address"
    assert len(outside.requests) == 1


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.1", "loopback"),
        ("2130706433", "loopback"),
        ("0x7f.1", "loopback"),
        ("017700000001", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("100.64.0.1", "CGNAT"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", ""),
        ("255.255.255.255", ""),
        ("[::1]", "loopback"),
        ("[::]", "unspecified"),
        ("[fe80::1]", "link-local"),
        ("[fc00::1]", "private"),
        ("[ff02::1]", "multicast"),
        ("[::ffff:10.0.0.1]", "IPv4-mapped private"),
        ("[::ffff:169.254.169.254]", "metadata"),
        ("[64:ff9b::a9fe:a9fe]", "NAT64 cloud metadata"),
        ("[2002:7f00:1::]", "6to4 loopback"),
        ("[::7f00:1]", "IPv4-compatible"),
    ],
)
def test_check_url_refuses_non_public_literals(host: str, kind: str) -> None:
    with pytest.raises(BlockedAddressError) as caught:
        check_url(f"http://{host}/feed", allow_hosts=())

    assert caught.value.reason == "blocked_address"
    assert kind in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://93.184.215.14/feed",
        "http://[2606:4700::1111]/",
        "http://[::ffff:8.8.8.8]/",
        "https://news.example.org/rss",  # names are judged by their addresses when connecting
    ],
)
def test_check_url_passes_public_addresses_and_names(url: str) -> None:
    check_url(url, allow_hosts=())


def test_check_url_honours_allowlisted_addresses_and_networks() -> None:
    check_url("http://10.9.8.7/", allow_hosts=["10.0.0.0/8"])
    check_url("http://[::ffff:127.0.0.1]/", allow_hosts=["127.0.0.1"])
    with pytest.raises(BlockedAddressError):
        check_url("http://192.168.0.1/", allow_hosts=["10.0.0.0/8"])


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://h/x", "javascript:1", "mailto:a@b"])
def test_check_url_refuses_other_schemes(url: str) -> None:
    with pytest.raises(FetchError) as caught:
        check_url(url, allow_hosts=())
    assert caught.value.reason == "bad_scheme"


# --- network failures -----------------------------------------------------------------------------


def test_closed_port_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The port is free again and nothing listens on it.

    result = fetch(f"http://127.0.0.1:{port}/")

    assert result.status is FetchStatus.ERROR
    assert result.reason == "connect_error"
    assert result.error is not None and "\n" not in result.error


# --- politeness -----------------------------------------------------------------------------------


def test_per_host_limit_is_respected(server: LoopbackServer) -> None:
    server.add("/slow", "ok", delay=0.3)

    results = fetch_many([server.url("/slow")] * 6, per_host=2, concurrency=16)

    assert all(r.ok for r in results)
    assert server.peak_in_flight == 2


def test_global_limit_is_respected(server: LoopbackServer) -> None:
    server.add("/slow", "ok", delay=0.2)

    results = fetch_many([server.url("/slow")] * 6, per_host=6, concurrency=3)

    assert all(r.ok for r in results)
    assert server.peak_in_flight == 3


def test_from_settings_uses_the_fetch_settings() -> None:
    settings = Settings(
        allow_hosts=["localhost", "10.0.0.0/8"],
        fetch_connect_timeout=1.0,
        fetch_read_timeout=2.0,
        fetch_deadline=3.0,
        fetch_max_bytes=4096,
        fetch_max_redirects=1,
        fetch_per_host=1,
        fetch_concurrency=4,
    )

    fetcher = Fetcher.from_settings(settings)

    assert fetcher.policy.allows_name("localhost")
    assert (fetcher.connect_timeout, fetcher.read_timeout, fetcher.deadline) == (1.0, 2.0, 3.0)
    assert (fetcher.max_bytes, fetcher.max_redirects) == (4096, 1)
    assert (fetcher.per_host, fetcher.concurrency) == (1, 4)
