"""Marsad: a scheduled news-monitoring pipeline (poll, extract, tag, store, digest, trends)."""

__version__ = "0.1.0"
