"""A small bundled sample web (three fictional outlets) that ``marsad demo`` ingests on loopback.

The server lives in :mod:`marsad.demo.server`; ``marsad.demo.SampleWeb`` is imported lazily so that
``python -m marsad.demo.server`` runs without a double import.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SampleWeb"]


def __getattr__(name: str) -> Any:
    if name == "SampleWeb":
        from marsad.demo.server import SampleWeb

        return SampleWeb
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
