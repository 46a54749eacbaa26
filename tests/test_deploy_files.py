"""prefect.yaml, checked without a Prefect server: parsed, then run through Prefect's own models and
the helpers `prefect deploy` uses, so a typo or an invalid value fails here, not on a first deploy.

Measured against a real server (Prefect 3.8.8): `prefect deploy --all` creates these four
deployments; with MARSAD_TIMEZONE unset the digest's timezone is stored as "" and runs at 07:00 UTC.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from prefect import Flow
from prefect.cli.deploy._models import DeploymentConfig, PrefectYamlModel
from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.objects import ConcurrencyLimitStrategy, ConcurrencyOptions
from prefect.deployments.runner import RunnerDeployment
from prefect.flows import load_flow_from_entrypoint
from prefect.server.schemas.schedules import CronSchedule as ServerCronSchedule
from prefect.utilities.importtools import import_object
from prefect.utilities.templating import apply_values

REPO = Path(__file__).resolve().parent.parent
EXPECTED = {
    "ingest": "flows/ingest.py:ingest",
    "spike-alert": "flows/spike_alert.py:spike_alert",
    "digest": "flows/digest.py:digest",
    "retag": "flows/retag.py:retag",
    "backfill": "flows/backfill.py:backfill",
}
START = datetime(2026, 3, 1, 0, 10, tzinfo=timezone.utc)


def raw_config() -> dict[str, Any]:
    return yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))


def deployments() -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in raw_config()["deployments"]}


def next_runs(deployment: dict[str, Any], count: int = 4) -> list[datetime]:
    """The next run times of a deployment's schedules, as the server's scheduler computes them."""
    config = apply_values(deployment["schedules"], {})  # {{ $VAR }} from the environment, as deploy
    runs: list[datetime] = []
    for schedule_config in config:
        client_schedule = _schedule_config_to_deployment_schedule(schedule_config)["schedule"]
        server_schedule = ServerCronSchedule(**client_schedule.model_dump())
        dates = server_schedule.get_dates(n=count, start=START)
        runs += asyncio.run(dates) if inspect.isawaitable(dates) else dates
    return sorted(runs)


def test_prefect_yaml_passes_prefects_own_validation_with_no_unknown_keys() -> None:
    raw = raw_config()
    # `prefect deploy` prints a warning and deploys nothing when this fails; here it fails the test.
    model = PrefectYamlModel.model_validate(raw)
    assert [d.name for d in model.deployments] == list(EXPECTED)
    # Unknown keys are dropped silently (extra="ignore"): a misspelt `concurency_limit` would vanish.
    known = set(DeploymentConfig.model_fields)
    for deployment in raw["deployments"]:
        assert set(deployment) <= known, f"{deployment['name']}: {set(deployment) - known}"
    assert set(raw) <= set(PrefectYamlModel.model_fields) | {"prefect-version", "definitions"}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_entrypoint_is_a_prefect_flow_of_the_same_name(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = deployments()[name]
    assert deployment["entrypoint"] == EXPECTED[name]
    path = deployment["entrypoint"].split(":")[0]
    assert (REPO / path).is_file()
    monkeypatch.chdir(REPO)  # entrypoints are relative to the project folder, as for `prefect deploy`
    flow = load_flow_from_entrypoint(deployment["entrypoint"])
    assert isinstance(flow, Flow)
    assert flow.name == name  # `prefect deployment run NAME/NAME` in the docs


def test_every_flow_module_has_a_deployment() -> None:
    modules = {p.as_posix() for p in Path(REPO, "flows").glob("*.py") if p.name != "__init__.py"}
    entrypoints = {str(REPO / e.split(":")[0]) for e in EXPECTED.values()}
    assert {str(Path(m)) for m in modules} == entrypoints


def test_ingest_runs_every_half_hour_and_the_spike_alert_a_quarter_hour_later() -> None:
    ingest = next_runs(deployments()["ingest"])
    alert = next_runs(deployments()["spike-alert"])
    assert [run - ingest[0] for run in ingest] == [timedelta(minutes=30 * i) for i in range(4)]
    assert [run - alert[0] for run in alert] == [timedelta(minutes=30 * i) for i in range(4)]
    assert {run.minute for run in ingest} == {0, 30}
    assert {run.minute for run in alert} == {15, 45}


@pytest.mark.parametrize("zone", ["Asia/Baghdad", "America/New_York", "Asia/Kathmandu"])
def test_the_digest_goes_out_at_seven_in_the_analysts_time_zone(
    zone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARSAD_TIMEZONE", zone)
    runs = next_runs(deployments()["digest"], count=3)
    assert len(runs) == 3
    for run in runs:
        local = run.astimezone(ZoneInfo(zone))
        assert (local.hour, local.minute) == (7, 0), f"{run} is {local} in {zone}"
    assert len({run.astimezone(ZoneInfo(zone)).date() for run in runs}) == 3  # once a day


def test_without_marsad_timezone_the_digest_falls_back_to_utc_like_marsad_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MARSAD_TIMEZONE", raising=False)
    runs = next_runs(deployments()["digest"], count=2)
    assert [(run.astimezone(timezone.utc).hour, run.minute) for run in runs] == [(7, 0), (7, 0)]
    # prefect.yaml's own comment says the same (it once said the deploy would fail).
    header = " ".join(
        line.lstrip("#").strip()
        for line in (REPO / "prefect.yaml").read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    )
    assert 'time zone "" and the digest goes out at 07:00 UTC' in header
    assert "deploy fails on an unknown time zone" not in header


def test_a_misspelt_time_zone_fails_at_deploy_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARSAD_TIMEZONE", "Asia/Bagdad")
    with pytest.raises(ValueError):
        next_runs(deployments()["digest"])


def test_retag_and_backfill_run_only_on_demand() -> None:
    assert deployments()["retag"]["schedules"] == []
    assert deployments()["backfill"]["schedules"] == []
    for name in ("ingest", "spike-alert", "digest"):
        assert deployments()[name]["schedules"], f"{name} has no schedule"


@pytest.mark.parametrize("name", list(EXPECTED))
def test_two_runs_of_one_flow_never_overlap(name: str) -> None:
    limit = deployments()[name]["concurrency_limit"]
    assert limit == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    # The values Prefect's API accepts (a misspelt strategy raises here).
    options = ConcurrencyOptions(collision_strategy=ConcurrencyLimitStrategy(limit["collision_strategy"]))
    assert options.collision_strategy is ConcurrencyLimitStrategy.CANCEL_NEW


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_deployment_builds_as_prefect_deploy_would_build_it(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The RunnerDeployment `prefect deploy` applies, built here without sending it anywhere."""
    monkeypatch.setenv("MARSAD_TIMEZONE", "Asia/Baghdad")
    deployment = deployments()[name]
    schedules = [
        DeploymentScheduleCreate(**_schedule_config_to_deployment_schedule(config))
        for config in apply_values(deployment["schedules"], {})
    ]
    runner = RunnerDeployment(
        name=name,
        flow_name=name,
        entrypoint=deployment["entrypoint"],
        work_pool_name=deployment["work_pool"]["name"],
        tags=deployment["tags"],
        concurrency_limit=deployment["concurrency_limit"]["limit"],
        concurrency_options={"collision_strategy": deployment["concurrency_limit"]["collision_strategy"]},
        schedules=schedules,
        job_variables=deployment["work_pool"]["job_variables"],
    )
    assert runner.work_pool_name == "marsad"
    assert runner.concurrency_limit == 1
    assert len(runner.schedules or []) == len(deployment["schedules"])


def test_every_deployment_goes_to_the_process_pool_compose_creates_and_its_worker_polls() -> None:
    assert {d["work_pool"]["name"] for d in deployments().values()} == {"marsad"}
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))["services"]
    deploy = " ".join(services["deploy"]["command"])
    worker = " ".join(services["worker"]["command"])
    assert "work-pool create marsad --type process" in deploy
    assert "--pool marsad --type process" in worker


def test_the_pull_step_changes_into_the_project_folder_the_image_sets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pull = raw_config()["pull"]
    assert len(pull) == 1
    [(step, inputs)] = pull[0].items()
    assert callable(import_object(step))  # the step exists in this Prefect
    assert step == "prefect.deployments.steps.set_working_directory"
    # Resolved from the environment, as the worker does before each run.
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    workdir = re.search(r"^WORKDIR\s+(\S+)", dockerfile, re.MULTILINE).group(1)
    app_dir = re.search(r"\bAPP_DIR=(\S+)", dockerfile).group(1)
    assert app_dir == workdir
    monkeypatch.setenv("APP_DIR", app_dir)
    assert apply_values(inputs, {}) == {"directory": workdir}
    # No per-deployment pull step overrides it.
    assert all("pull" not in d for d in deployments().values())


def test_prefect_yaml_is_in_the_image() -> None:
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
    assert "prefect.yaml" not in ignored and "flows" not in ignored
