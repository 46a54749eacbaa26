"""A small bundled sample web (three fictional outlets) that ``marsad demo`` ingests on loopback."""

from marsad.demo.server import SampleWeb

__all__ = ["SampleWeb"]
