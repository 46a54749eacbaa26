"""Settings, read lazily from the environment (``MARSAD_`` prefix) and a ``.env`` file."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated

from marsad.errors import ConfigError

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MARSAD_", env_file=".env", extra="ignore")

    database_url: str = "sqlite:///marsad.db"
    allow_hosts: CommaList = Field(default_factory=list)

    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: str | None = Field(default=None, repr=False)
    smtp_security: Literal["none", "starttls", "ssl"] = "starttls"
    # PEM bundle of the CAs whose certificates the SMTP server may present (an internal CA, a
    # self-signed server); empty: the system's trust store. Certificates are always verified.
    smtp_ca_file: Path | None = None
    digest_from: str = "marsad@localhost"
    digest_to: CommaList = Field(default_factory=list)
    outbox_dir: Path = Path("outbox")
    smtp_timeout: float = Field(default=30.0, gt=0)
    # A long topic section shows its most relevant stories and says how many more there are.
    digest_max_stories: int = Field(default=10, ge=1)
    # With nothing new, send a short "nothing new" note instead of nothing.
    digest_send_empty: bool = False
    # A topic "spikes" on a day with at least spike_min_articles articles and spike_threshold
    # standard deviations above its mean of the 28 days before; the digest marks it and the
    # spike-alert flow mails it at once.
    spike_threshold: float = Field(default=3.0, gt=0)
    spike_min_articles: int = Field(default=5, ge=1)
    # A feed that usually publishes and has published nothing for this many days is "silent".
    silent_days: int = Field(default=3, ge=1)
    timezone: str = "UTC"

    # Fetching: polite defaults; each is a setting so operators can adapt to their feeds.
    fetch_connect_timeout: float = 10.0
    fetch_read_timeout: float = 20.0
    fetch_deadline: float = 60.0
    fetch_max_bytes: int = 10 * 1024 * 1024
    fetch_max_redirects: int = 5
    fetch_per_host: int = 2
    fetch_concurrency: int = 16
    # `marsad backfill` fetches a whole archive from one site: at least this many seconds between
    # two of its requests to the same host (the feed poll has no such pause).
    backfill_host_interval: float = Field(default=1.0, ge=0)

    # Extraction: worker processes (0 = one per core), per-page limits. Pages go through the
    # pipeline in batches of page_batch: larger batches mean fewer Prefect task runs, smaller ones
    # less work redone after a crash and less memory (a batch's page bytes are held at once).
    extract_workers: int = 0
    page_batch: int = Field(default=200, ge=1, le=5000)
    extract_timeout: float = 20.0
    extract_max_bytes: int = 5 * 1024 * 1024

    # Story clusters: copies whose word shingles overlap this much (estimated Jaccard), published
    # within this many days of each other, share a cluster.
    cluster_threshold: float = Field(default=0.6, gt=0, le=1)
    cluster_window_days: int = Field(default=3, ge=0)
    # A shorter copy (a republished first half, a wire story with local paragraphs added) joins
    # when this share of its shingles is in the cluster's first article.
    cluster_containment: float = Field(default=0.8, gt=0, le=1)

    # `marsad serve`: how often ingest and the spike alert run, and when the digest goes out
    # (HH:MM in MARSAD_TIMEZONE).
    serve_ingest_minutes: int = Field(default=30, ge=1)
    serve_alert_minutes: int = Field(default=30, ge=1)
    serve_digest_time: str = Field(default="07:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")

    # Adaptive polling: a feed that brought new items is polled sooner next time (down to
    # poll_min_minutes), one that did not, later (up to poll_max_hours). Scheduled ingests still
    # set the pace: a feed is only polled when an ingest runs and finds it due.
    poll_min_minutes: float = Field(default=10, gt=0)
    poll_max_hours: float = Field(default=24, gt=0)
    # After this many failed polls in a row a feed is set inactive (`marsad feeds enable URL`).
    feed_max_failures: int = Field(default=20, ge=1)

    # A failing feed (or page) waits base * 2**(failures-1) minutes, capped.
    backoff_base_minutes: int = 15
    backoff_max_hours: int = 24

    @field_validator("allow_hosts", "digest_to", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("smtp_ca_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("allow_hosts")
    @classmethod
    def _valid_hosts(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            if "/" in host:
                try:
                    ipaddress.ip_network(host, strict=False)
                except ValueError as exc:
                    raise ValueError(f"MARSAD_ALLOW_HOSTS: {host!r} is not a valid CIDR") from exc
        return hosts

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"MARSAD_TIMEZONE: unknown time zone {name!r}") from exc
        return name

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@lru_cache(maxsize=1)
def _cached_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"MARSAD_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None


def get_settings() -> Settings:
    """The current settings; read on first use so tests and the CLI can set the environment first."""
    return _cached_settings()


def reset_settings() -> None:
    """Forget cached settings (tests change the environment between cases)."""
    _cached_settings.cache_clear()
