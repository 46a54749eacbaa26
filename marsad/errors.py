"""Typed domain errors.

Domain code raises these; only ``marsad.cli`` turns them into one friendly line and an exit code.
Each carries a short machine-readable ``reason`` so runs can record and count failures by cause.
"""

from __future__ import annotations


class MarsadError(Exception):
    """Base class: the message is written for the user, the reason for the failure counters."""

    reason: str = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class ConfigError(MarsadError):
    """A setting is missing or invalid."""

    reason = "config"


class InputError(MarsadError):
    """A user-supplied file, URL or value cannot be used."""

    reason = "input"


class DatabaseError(MarsadError):
    """The database cannot be reached or is not at the expected schema."""

    reason = "database"


class FetchError(MarsadError):
    """A URL could not be fetched. ``reason`` is one of the ``FetchReason`` values in fetch.py."""

    reason = "fetch"


class BlockedAddressError(FetchError):
    """The URL resolves to an address the fetcher must not reach (SSRF protection)."""

    reason = "blocked_address"


class FeedParseError(MarsadError):
    """Bytes fetched from a feed URL are not a usable feed."""

    reason = "feed_parse"


class SitemapError(MarsadError):
    """Bytes fetched from a sitemap URL are not a usable sitemap (malformed, hostile, too large)."""

    reason = "sitemap"


class ExtractionError(MarsadError):
    """A page could not be turned into article text."""

    reason = "extraction"


class TaxonomyError(MarsadError):
    """The tagging taxonomy is malformed; the message names the file and the place."""

    reason = "taxonomy"


class OutboxError(MarsadError):
    """The outbox folder cannot be written (missing permission, disk full)."""

    reason = "outbox"
