"""Prefect flows: thin, each reads as its pipeline and calls into ``marsad``."""
