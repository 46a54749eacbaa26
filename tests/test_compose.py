"""docker-compose.yml, .env.example and the Dockerfile, checked by parsing them: no Docker engine
runs on these machines. Each test names the mistake it catches."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

from marsad.config import Settings

REPO = Path(__file__).resolve().parent.parent
APP_SERVICES = ("migrate", "deploy", "worker")
SETTINGS = {f"MARSAD_{name.upper()}" for name in Settings.model_fields}
ASSIGNMENT = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$")


def load_compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default} and $$, as `docker compose config` does."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, default = match.group(1), match.group(2), match.group(3) or ""
        if op == ":-":
            return env.get(name) or default
        if op == "-":
            return env.get(name, default)
        return env.get(name, "")

    return re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|-)([^}]*))?\}", one, value)


def env_example() -> dict[str, str]:
    """Every NAME=value in .env.example, commented out (a documented default) or not."""
    found: dict[str, str] = {}
    for line in (REPO / ".env.example").read_text(encoding="utf-8").splitlines():
        if match := ASSIGNMENT.match(line.strip()):
            assert match.group(1) not in found, f"{match.group(1)} twice in .env.example"
            found[match.group(1)] = match.group(2)
    return found


def service_env(service: dict, env: dict[str, str]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {key: interpolate(str(value), env) for key, value in environment.items()}


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings exactly as a process with this environment (and no .env file) would read them."""
    for name in [n for n in os.environ if n.startswith("MARSAD_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("MARSAD_"):
            monkeypatch.setenv(name, value)
    return Settings(_env_file=None)


# docker-compose.yml ------------------------------------------------------------------------------


def test_postgres_service_is_healthchecked_persistent_and_matches_the_documented_url() -> None:
    compose = load_compose()
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


def test_the_stack_has_its_services_and_every_published_port_is_on_loopback_only() -> None:
    services = load_compose()["services"]
    assert set(services) >= {"postgres", "migrate", "prefect-server", "deploy", "worker", "mailpit"}
    published = 0
    for name, service in services.items():
        for port in service.get("ports", []):
            published += 1
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), (
                f"{name} publishes {port!r} on every interface"
            )
    assert published >= 4  # postgres, Prefect's UI, Mailpit's UI and SMTP


def test_services_start_in_order_and_only_when_what_they_need_is_ready() -> None:
    services = load_compose()["services"]

    def conditions(name: str) -> dict[str, str]:
        depends = services[name].get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on without conditions only waits for a start"
        return {dep: spec["condition"] for dep, spec in depends.items()}

    assert conditions("migrate") == {"postgres": "service_healthy"}
    assert conditions("prefect-server")["postgres"] == "service_healthy"
    assert conditions("deploy")["prefect-server"] == "service_healthy"
    worker = conditions("worker")
    assert worker["migrate"] == "service_completed_successfully"
    assert worker["deploy"] == "service_completed_successfully"
    assert worker["prefect-server"] == "service_healthy"
    # A condition on a healthcheck that does not exist would never be met.
    for name in services:
        for dep, condition in conditions(name).items() if services[name].get("depends_on") else []:
            assert dep in services, f"{name} depends on an unknown service {dep}"
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} has no healthcheck"
    # One-shots must not be restarted by Docker, or `service_completed_successfully` never comes.
    for name in ("migrate", "deploy"):
        assert services[name]["restart"] == "no"
    for name in ("postgres", "prefect-server", "worker", "mailpit"):
        assert services[name]["restart"] == "unless-stopped"


def test_each_service_runs_what_it_is_for() -> None:
    services = load_compose()["services"]

    def command(name: str) -> str:
        value = services[name]["command"]
        return value if isinstance(value, str) else " ".join(value)

    assert command("migrate") == "marsad init"
    server = command("prefect-server")
    assert server.startswith("prefect server start") and "--host 0.0.0.0" in server
    health = " ".join(services["prefect-server"]["healthcheck"]["test"])
    assert "/api/health" in health and "4200" in health
    worker = command("worker")
    assert worker.startswith("prefect worker start") and "--pool marsad" in worker
    assert "--type process" in worker
    # The pool is created only when missing (an existing one keeps its settings); then deploy.
    deploy = command("deploy")
    assert "prefect work-pool inspect marsad" in deploy
    assert "|| prefect work-pool create marsad --type process" in deploy
    assert deploy.rstrip().endswith("prefect deploy --all --no-prompt")
    assert "-e" in services["deploy"]["command"][1]  # a failed step fails the one-shot
    assert services["mailpit"]["image"].startswith("axllent/mailpit")
    assert any(port.endswith(":8025") for port in services["mailpit"]["ports"])


@pytest.mark.parametrize(
    ("failing", "expected_calls", "expected_rc"),
    [
        # First `up`: no pool yet. It is created, then the deployments are registered.
        ("inspect", ["work-pool inspect", "work-pool create", "deploy --all"], 0),
        # Every later `up`: the pool exists and keeps its settings; only the deploy runs.
        ("", ["work-pool inspect", "deploy --all"], 0),
        # Server unreachable: the one-shot fails, so the worker (service_completed_successfully)
        # does not start against missing deployments.
        ("inspect create", ["work-pool inspect", "work-pool create"], 1),
        ("deploy", ["work-pool inspect", "deploy --all"], 1),
    ],
)
def test_the_deploy_one_shot_works_on_a_first_and_a_later_up(
    failing: str, expected_calls: list[str], expected_rc: int, tmp_path: Path
) -> None:
    """The deploy service's shell command, run by sh against a stand-in `prefect` that logs calls."""
    log = tmp_path / "calls"
    fake = tmp_path / "prefect"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$1 $2" >> {log}\n'
        'for word in $FAILING; do case "$1 $2" in *"$word"*) exit 1;; esac; done\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    command = load_compose()["services"]["deploy"]["command"]
    assert command[0] == "sh"
    result = subprocess.run(
        command,
        env={"PATH": f"{tmp_path}:/usr/bin:/bin", "FAILING": failing},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == expected_rc, result.stderr
    calls = log.read_text().splitlines() if log.exists() else []
    assert [call.replace("--all --no-prompt", "--all").strip() for call in calls] == expected_calls


def test_prefect_keeps_its_tables_in_its_own_database_created_by_the_init_script() -> None:
    services = load_compose()["services"]
    server_env = service_env(services["prefect-server"], {})
    prefect_url = make_url(server_env["PREFECT_API_DATABASE_CONNECTION_URL"])
    marsad_url = make_url(service_env(services["worker"], {})["MARSAD_DATABASE_URL"])
    postgres = services["postgres"]

    assert prefect_url.drivername == "postgresql+asyncpg"
    assert prefect_url.host == marsad_url.host == "postgres"
    assert prefect_url.database != marsad_url.database
    assert marsad_url.database == postgres["environment"]["POSTGRES_DB"]
    for url in (prefect_url, marsad_url):
        assert (url.username, url.password) == (
            postgres["environment"]["POSTGRES_USER"], postgres["environment"]["POSTGRES_PASSWORD"],
        )

    init_mounts = [v for v in postgres["volumes"] if ":/docker-entrypoint-initdb.d/" in v]
    assert len(init_mounts) == 1
    script = REPO / init_mounts[0].split(":")[0]
    assert script.is_file()
    sql = script.read_text(encoding="utf-8")
    assert re.search(rf"CREATE DATABASE {prefect_url.database}\b", sql, re.IGNORECASE)


def test_app_services_share_the_image_database_mailpit_outbox_and_prefect_api() -> None:
    compose = load_compose()
    services = compose["services"]
    for name in APP_SERVICES:
        env = service_env(services[name], {})
        assert make_url(env["MARSAD_DATABASE_URL"]).drivername == "postgresql+psycopg"
        assert env["MARSAD_SMTP_HOST"] == "mailpit"
        assert env["MARSAD_SMTP_PORT"] == "1025"
        assert env["MARSAD_SMTP_SECURITY"] == "none"
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert {"MARSAD_DIGEST_FROM", "MARSAD_DIGEST_TO", "MARSAD_TIMEZONE"} <= set(env)
        assert services[name]["image"] == services["prefect-server"]["image"]
        # .env is optional: a first `docker compose up` without one must work.
        assert services[name]["env_file"] == [{"path": ".env", "required": False}]
    # The worker writes the outbox on a named volume; the image creates that folder for its user.
    outbox = service_env(services["worker"], {})["MARSAD_OUTBOX_DIR"]
    mounts = dict(v.split(":", 1) for v in services["worker"]["volumes"])
    assert outbox in mounts.values()
    assert next(k for k, v in mounts.items() if v == outbox) in compose["volumes"]
    assert outbox in (REPO / "Dockerfile").read_text(encoding="utf-8")


def test_the_image_is_built_once_and_shared_by_the_server_and_the_app_services() -> None:
    """Four services building one Dockerfile build it four times; one builds, the rest use it."""
    services = load_compose()["services"]
    builders = [name for name, service in services.items() if "build" in service]
    assert builders == ["migrate"]
    image = services["migrate"]["image"]
    assert image == "marsad:local"  # a local tag: nothing to pull from a registry
    for name in (*APP_SERVICES, "prefect-server"):
        assert services[name]["image"] == image, name


def test_the_worker_logs_as_the_marsad_command_does() -> None:
    """Prefect's chatter quiet, the flow runs' summaries kept: the same policy as `marsad serve`."""
    from marsad.serve import PREFECT_LOG_LEVELS

    services = load_compose()["services"]
    for name in APP_SERVICES:
        env = service_env(services[name], {})
        assert {key: env.get(key) for key in PREFECT_LOG_LEVELS} == PREFECT_LOG_LEVELS, name


def test_compose_overrides_reach_the_containers_and_defaults_apply_without_them() -> None:
    worker = load_compose()["services"]["worker"]
    assert service_env(worker, {})["MARSAD_TIMEZONE"] == "UTC"
    overridden = service_env(worker, {"MARSAD_TIMEZONE": "Asia/Baghdad", "MARSAD_SMTP_HOST": "smtp.example.org"})
    assert overridden["MARSAD_TIMEZONE"] == "Asia/Baghdad"
    assert overridden["MARSAD_SMTP_HOST"] == "smtp.example.org"


# Settings: compose and .env.example against marsad.config.Settings -------------------------------


def test_every_marsad_variable_in_compose_is_a_real_setting() -> None:
    text = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
    used = set(re.findall(r"\bMARSAD_[A-Z0-9_]+", text))
    assert used, "compose sets no Marsad setting"
    # A typo here is silently ignored by Settings (extra="ignore"): it must fail here instead.
    assert used <= SETTINGS, f"not Marsad settings: {sorted(used - SETTINGS)}"


@pytest.mark.parametrize("overrides", [{}, {"MARSAD_TIMEZONE": "Asia/Baghdad"}])
def test_the_settings_compose_gives_each_app_service_validate(
    overrides: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = load_compose()["services"]
    for name in APP_SERVICES:
        settings = settings_from(service_env(services[name], overrides), monkeypatch)
        assert settings.smtp_host == "mailpit" and settings.smtp_port == 1025
        assert settings.smtp_security == "none"
        assert settings.digest_to, "with an SMTP host and no recipient every digest run fails"
        assert settings.timezone == overrides.get("MARSAD_TIMEZONE", "UTC")
        assert str(settings.outbox_dir) == "/data/outbox"


def test_env_example_documents_every_setting_and_nothing_else() -> None:
    documented = {name for name in env_example() if name.startswith("MARSAD_")}
    assert SETTINGS - documented == set(), f"undocumented settings: {sorted(SETTINGS - documented)}"
    assert documented - SETTINGS == set(), f"not Marsad settings: {sorted(documented - SETTINGS)}"


def test_env_example_shows_each_settings_default(monkeypatch: pytest.MonkeyPatch) -> None:
    values = env_example()
    settings = settings_from(values, monkeypatch)  # every value validates, all at once
    defaults = Settings.model_construct()
    for name in Settings.model_fields:
        given, default = getattr(settings, name), getattr(defaults, name)
        if default is None:
            assert not given, f"MARSAD_{name.upper()}: empty in .env.example means unset"
        else:
            assert given == default, f"MARSAD_{name.upper()}: .env.example says {given!r}, the default is {default!r}"


def test_env_example_gives_every_setting_a_comment() -> None:
    lines = (REPO / ".env.example").read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        match = ASSIGNMENT.match(line.strip())
        if match and match.group(1).startswith("MARSAD_"):
            above = lines[index - 1].strip()
            assert above.startswith("#") and not ASSIGNMENT.match(above), (
                f"{match.group(1)} has no comment of its own above it"
            )


def test_env_example_names_the_prefect_variables_compose_and_prefect_yaml_rely_on() -> None:
    names = set(env_example())
    assert {"PREFECT_API_URL", "PREFECT_UI_API_URL", "APP_DIR", "DO_NOT_TRACK"} <= names
    assert "{{ $APP_DIR }}" in (REPO / "prefect.yaml").read_text(encoding="utf-8")


def test_a_typo_or_an_invalid_value_would_fail_these_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks above can fail: a misspelt name is not a setting, a bad value does not validate."""
    assert "MARSAD_TIMEZOME" not in SETTINGS
    with pytest.raises(ValueError):
        settings_from({"MARSAD_TIMEZONE": "Europe/Atlantis"}, monkeypatch)
    with pytest.raises(ValueError):
        settings_from({"MARSAD_SMTP_SECURITY": "tls"}, monkeypatch)
    assert interpolate("${X:-a}", {"X": ""}) == "a" and interpolate("${X-a}", {"X": ""}) == ""


# Dockerfile and .dockerignore --------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, backslash continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (REPO / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # Docker drops comment lines inside a continuation too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continuation"
    return instructions


def test_dockerfile_builds_a_non_root_python_311_image_running_marsad() -> None:
    instructions = dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert dict(instructions)["WORKDIR"] == "/app"

    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # Nothing runs as root after the switch, and the user is created before it.
    assert "RUN" not in keywords[keywords.index("USER"):]
    creates = [args for keyword, args in instructions if keyword == "RUN" and "useradd" in args]
    assert creates and users[-1] in creates[0].split()

    cmd = [args for keyword, args in instructions if keyword == "CMD"][-1]
    assert yaml.safe_load(cmd)[0] == "marsad"


def test_dockerfile_installs_dependencies_before_copying_the_code_and_keeps_bytecode() -> None:
    instructions = dockerfile_instructions()
    copies = [i for i, (keyword, _) in enumerate(instructions) if keyword == "COPY"]
    runs = [(i, args) for i, (keyword, args) in enumerate(instructions) if keyword == "RUN"]
    # Layer caching: pyproject.toml alone, the dependencies, then the rest of the project.
    assert instructions[copies[0]][1].split()[0] == "pyproject.toml"
    deps = next(i for i, args in runs if "pip install -r" in args)
    assert copies[0] < deps < copies[1]
    assert instructions[copies[1]][1] == ". ."
    install = next(args for i, args in runs if i > copies[1] and "pip install" in args)
    # Editable: marsad/db.py finds alembic/ beside the package, and the flows stay under /app.
    assert "-e ." in install and "--no-deps" in install
    assert "compileall" in install
    # .pyc files make `import prefect` about 2x faster: bytecode must not be disabled.
    env_text = " ".join(args for keyword, args in instructions if keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE" not in env_text
    assert "APP_DIR=/app" in env_text


def test_dockerignore_keeps_history_secrets_data_and_caches_out_of_the_image() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".env", "*.db", "outbox", ".venv", ".pytest_cache", "**/__pycache__"} <= ignored
    # What the image needs must not be ignored.
    for needed in ("pyproject.toml", "README.md", "prefect.yaml", "alembic", "alembic.ini",
                   "marsad", "flows", "models"):
        assert needed not in ignored and (REPO / needed).exists()
