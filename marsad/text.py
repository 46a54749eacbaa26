"""Text hygiene shared by every stage that stores or shows fetched text."""

from __future__ import annotations

import re

# NUL breaks PostgreSQL text columns; other C0/C1 controls only ever come from broken pages.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def scrub(value: str | None) -> str | None:
    """Remove NUL and control characters (tabs and newlines stay)."""
    if value is None:
        return None
    return _CONTROL_CHARS.sub("", value)


def one_line(value: object, limit: int | None = None) -> str | None:
    """Scrubbed and folded to one line; None for non-text or empty. ``limit`` fits bounded columns."""
    if not isinstance(value, str):
        return None
    folded = " ".join(_CONTROL_CHARS.sub("", value).split())
    if limit is not None:
        folded = folded[:limit]
    return folded or None
