"""docker-compose.yml: the local stack's services, ports and environment (Docker does not run here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

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
