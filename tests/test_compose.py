"""docker-compose.yml, checked by parsing it: no Docker engine runs on these machines."""

from __future__ import annotations

from pathlib import Path

import yaml
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parent.parent


def test_postgres_service_is_healthchecked_persistent_and_matches_the_documented_url() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    postgres = compose["services"]["postgres"]

    assert postgres["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    volume = postgres["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]

    # The URL the README and the compose file's own comment give must reach this service.
    documented = next(
        line.split("MARSAD_DATABASE_URL=", 1)[1].split()[0]
        for line in (REPO / "docker-compose.yml").read_text(encoding="utf-8").splitlines()
        if "MARSAD_DATABASE_URL=" in line
    )
    url = make_url(documented)
    env = postgres["environment"]
    host_port = int(postgres["ports"][0].rsplit(":", 2)[-2])
    assert (url.username, url.password, url.database) == (
        env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"],
    )
    assert url.port == host_port and url.get_backend_name() == "postgresql"
    assert url.get_driver_name() == "psycopg"
