"""docker-compose.yml: the local stack's services, ports and environment (Docker does not run here)."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from config.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_the_stack_has_redis_postgres_jaeger_a_worker_and_a_scheduler() -> None:
    services = compose()["services"]

    assert set(services) == {"redis", "postgres", "jaeger", "worker", "scheduler"}
    assert "16686:16686" in services["jaeger"]["ports"] and "4318:4318" in services["jaeger"]["ports"]
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert services["worker"]["command"][:2] == ["dramatiq", "actors"]
    assert services["scheduler"]["command"] == ["periodiq", "actors"]
    assert (ROOT / "Dockerfile").exists() and services["worker"]["build"] == "."


def test_worker_and_scheduler_environments_are_valid_settings_pointing_at_the_stack() -> None:
    services = compose()["services"]
    postgres = services["postgres"]["environment"]
    for name in ("worker", "scheduler"):
        env = {key: str(value) for key, value in services[name]["environment"].items() if value != ""}
        env = {key: value for key, value in env.items() if not value.startswith("${")}
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
        assert env["REDIS_URL"].startswith("redis://redis:6379")
        assert (
            f"{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}@postgres:5432"
            in env["DATABASE_URL"]
        )
        settings = load_settings(**{field: env[alias] for field, alias in _ALIASES.items() if alias in env})
        assert settings.tracing_enabled() and settings.store_backend() == "postgres"
    assert services["worker"]["environment"]["AGENTQ_METRICS_PORT"] == "9191"
    assert "9191:9191" in services["worker"]["ports"]


_ALIASES = {
    "redis_url": "REDIS_URL",
    "database_url": "DATABASE_URL",
    "otel_exporter_otlp_endpoint": "OTEL_EXPORTER_OTLP_ENDPOINT",
    "otel_service_name": "OTEL_SERVICE_NAME",
    "queue_concurrency": "QUEUE_CONCURRENCY",
}


# --- the image: non-root, exact versions, nothing secret in the build context -------------------


def _pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = [
        *project["dependencies"],
        *(s for extra in project["optional-dependencies"].values() for s in extra),
    ]
    return [Requirement(spec) for spec in specs]


def _locked_versions() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", (ROOT / "requirements.lock").read_text(), re.M)
    return {canonicalize_name(name): version for name, version in pins}


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as ``(KEYWORD, arguments)``, continuation lines joined."""
    lines = (line.strip() for line in (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines())
    parts = (line.partition(" ") for line in lines if line and not line.startswith("#"))
    return [(keyword.upper(), arguments) for keyword, _, arguments in parts]


def test_the_image_runs_as_a_non_root_user() -> None:
    instructions = _instructions()
    start = max(i for i, (op, _) in enumerate(instructions) if op in ("CMD", "ENTRYPOINT"))
    users = [arg.strip() for op, arg in instructions[:start] if op == "USER"]

    assert users, "the Dockerfile has no USER before its CMD"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_the_image_installs_the_locked_versions_checked_by_hash() -> None:
    runs = [arg for op, arg in _instructions() if op == "RUN"]
    copies = [arg for op, arg in _instructions() if op == "COPY"]

    assert any("requirements.lock" in arg for arg in copies)
    assert any("--require-hashes" in arg and "-r requirements.lock" in arg for arg in runs)
    assert any("pip install --no-deps ." in arg for arg in runs)  # the project, on top of the lock


@pytest.mark.parametrize(
    "path",
    [
        ".env",
        ".env.production",
        ".git",
        "agentq.db",
        "tasks.db-wal",
        ".venv",
        ".venv-bench",
        "benchmarks/results",
    ],
)
def test_the_build_context_leaves_out_secrets_history_and_local_state(path: str) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    assert any(fnmatch.fnmatch(path, pattern) for pattern in patterns), f"{path} is not in .dockerignore"


def test_every_dependency_has_an_upper_bound_on_its_next_major() -> None:
    unbounded = [
        str(req)
        for req in _pyproject_requirements()
        if not any(spec.operator in ("<", "<=", "==", "~=") for spec in req.specifier)
    ]

    assert not unbounded, f"no upper bound: {unbounded}"


def test_every_runtime_dependency_is_pinned_in_the_lock_within_its_bounds() -> None:
    locked = _locked_versions()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    for req in (Requirement(spec) for spec in project["dependencies"]):
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is not pinned in requirements.lock (run `make lock`)"
        assert req.specifier.contains(locked[name]), (
            f"requirements.lock pins {name}=={locked[name]}: not {req}"
        )
    assert "psycopg-binary" in locked and "hiredis" in locked  # extras and C speedups are pinned too
