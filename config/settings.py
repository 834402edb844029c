"""Typed settings read from the environment (the README's *Configuration* table).

This module is the one place that reads the environment. :func:`load_settings`
validates everything once, at start-up, and turns pydantic's validation errors
into one :class:`~config.errors.ConfigError` that names each bad variable and its
value (secrets are never echoed).
"""

from __future__ import annotations

import contextlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from config.errors import ConfigError
from config.rate_limits import RateLimit, parse_org_limits, parse_provider_limits
from config.redaction import redact

#: Largest task ``context`` accepted, in bytes of its JSON encoding.
DEFAULT_MAX_CONTEXT_BYTES = 64 * 1024


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError("is not a port number (1-65535)")
    return value


def _positive(value: int) -> int:
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _not_negative(value: int) -> int:
    if value < 0:
        raise ValueError("must not be negative")
    return value


Port = Annotated[int, AfterValidator(_port)]
PositiveInt = Annotated[int, AfterValidator(_positive)]
NonNegativeInt = Annotated[int, AfterValidator(_not_negative)]
DottedPaths = Annotated[tuple[str, ...], NoDecode]


def _positive_float(value: float) -> float:
    if value <= 0:
        raise ValueError("must be a positive number")
    return value


def _json_object(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"is not valid JSON ({exc.msg} at position {exc.pos})") from None
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object")
    return value


def _between(low: int, high: int, unit: str) -> AfterValidator:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be from {low:,} to {high:,}{unit}")
        return value

    return AfterValidator(check)


PositiveFloat = Annotated[float, AfterValidator(_positive_float)]
#: Events kept per task stream.
EventsMaxLen = Annotated[int, _between(10, 1_000_000, " events")]
#: Seconds a finished task's stream is kept: at most 30 days (a value in milliseconds is caught here).
EventsTtl = Annotated[int, _between(1, 30 * 24 * 3600, " seconds (30 days)")]
#: Milliseconds streamed text is gathered into one event.
DeltaFlushMs = Annotated[int, _between(0, 10_000, " milliseconds")]
JsonObject = Annotated[dict[str, Any], NoDecode, BeforeValidator(_json_object)]
#: ``AGENTQ_PROVIDER_LIMITS_JSON``, checked entry by entry (``config.rate_limits``).
ProviderLimits = Annotated[dict[str, RateLimit], NoDecode, BeforeValidator(parse_provider_limits)]
#: ``AGENTQ_ORG_LIMITS_JSON``, keyed by normalised organization id.
OrgLimits = Annotated[dict[str, RateLimit], NoDecode, BeforeValidator(parse_org_limits)]

#: Longest ``AGENTQ_LIMIT_MAX_WAIT_MS``: a longer wait would hold a worker thread; postponing frees it.
MAX_LIMIT_WAIT_MS = 60_000


class Settings(BaseSettings):
    """Every setting of the project, with the environment variable that sets it."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True, populate_by_name=True)

    # --- Redis (seed names kept; REDIS_URL wins when set) ---
    redis_url: SecretStr | None = Field(default=None, validation_alias="REDIS_URL")
    redis_host: str = Field(default="localhost", validation_alias="REDIS_HOST")
    redis_port: Port = Field(default=6379, validation_alias="REDIS_PORT")
    redis_password: SecretStr | None = Field(default=None, validation_alias="REDIS_PASSWORD")
    #: TLS to Redis when the URL is built from ``REDIS_HOST``/``REDIS_PORT`` (managed Redis); a
    #: ``rediss://`` ``REDIS_URL`` uses TLS on its own.
    redis_tls: bool = Field(default=False, validation_alias="REDIS_TLS")
    #: CA bundle (PEM file) that a TLS Redis server's certificate must chain to, with ``REDIS_TLS``;
    #: unset: the system's CAs. A ``REDIS_URL`` gives it as ``?ssl_ca_certs=PATH`` instead.
    redis_tls_ca_certs: Path | None = Field(default=None, validation_alias="REDIS_TLS_CA_CERTS")
    #: Seconds a Redis command may wait for its reply before the connection is given up.
    redis_socket_timeout_s: PositiveFloat = Field(
        default=30.0, validation_alias="AGENTQ_REDIS_SOCKET_TIMEOUT_S"
    )
    #: Agent runs in flight per worker process: an ``async def`` kind's runs wait on the process's event loop,
    #: this many at once, whatever ``dramatiq --threads`` is.
    queue_concurrency: PositiveInt = Field(default=5, validation_alias="QUEUE_CONCURRENCY")
    #: Worker threads per process that ``agentq worker`` and the demo start (``dramatiq --threads``); 0:
    #: ``QUEUE_CONCURRENCY``, at most :data:`DEFAULT_MAX_THREADS`. Threads claim tasks and write their ends;
    #: a sync kind's run holds one for its whole length.
    worker_threads: NonNegativeInt = Field(default=0, validation_alias="AGENTQ_WORKER_THREADS")

    # --- Task store ---
    database_url: SecretStr | None = Field(default=None, validation_alias="DATABASE_URL")
    sqlite_path: Path = Field(default=Path("agentq.db"), validation_alias="AGENTQ_SQLITE_PATH")
    #: Largest Postgres connection pool per process; 0 sizes it from QUEUE_CONCURRENCY.
    db_pool_size: NonNegativeInt = Field(default=0, validation_alias="AGENTQ_DB_POOL_SIZE")
    #: Prepared statements on Postgres connections. Unset: on, except through a transaction-mode
    #: pooler (DATABASE_URL on port 6543, Supabase's Supavisor), which cannot keep them.
    db_prepared_statements: bool | None = Field(
        default=None, validation_alias="AGENTQ_DB_PREPARED_STATEMENTS"
    )
    #: Claims and completions that worker threads make at the same moment share one Postgres
    #: statement (``taskstore.group_commit``); off writes each alone.
    db_group_commit: bool = Field(default=True, validation_alias="AGENTQ_DB_GROUP_COMMIT")
    #: Postgres ``statement_timeout`` for the store's connections, in milliseconds (0 = none).
    db_statement_timeout_ms: NonNegativeInt = Field(
        default=30_000, validation_alias="AGENTQ_DB_STATEMENT_TIMEOUT_MS"
    )
    #: Supabase project URL; with a service key it selects the Supabase store (README, *Configuration*).
    supabase_url: str | None = Field(default=None, validation_alias="SUPABASE_URL")
    supabase_service_role_key: SecretStr | None = Field(
        default=None, validation_alias="SUPABASE_SERVICE_ROLE_KEY"
    )
    supabase_secret_key: SecretStr | None = Field(default=None, validation_alias="SUPABASE_SECRET_KEY")

    # --- Model providers (the SDKs' own variable names) ---
    openai_api_key: SecretStr | None = Field(default=None, validation_alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(default=None, validation_alias="OPENAI_BASE_URL")
    anthropic_api_key: SecretStr | None = Field(default=None, validation_alias="ANTHROPIC_API_KEY")
    anthropic_base_url: str | None = Field(default=None, validation_alias="ANTHROPIC_BASE_URL")
    #: Longest one model call may take, in seconds (a run's time limit shortens it).
    provider_timeout_s: PositiveFloat = Field(default=120.0, validation_alias="AGENTQ_PROVIDER_TIMEOUT_S")
    #: Prices in USD per million tokens, JSON: {"model": {"input": 2.5, "output": 10, "cached_input": 1.25}}.
    model_prices: JsonObject = Field(default_factory=dict, validation_alias="AGENTQ_MODEL_PRICES_JSON")
    #: URL prefixes an agent's own ``base_url`` may use (comma-separated). Empty: agents may not
    #: override the base URL, so the platform's API key only goes to the configured provider URL.
    allowed_base_urls: DottedPaths = Field(default=(), validation_alias="AGENTQ_ALLOWED_BASE_URLS")
    #: Run agents whose provider is ``scripted`` in a worker (the demo and tests set it).
    allow_scripted: bool = Field(default=False, validation_alias="AGENTQ_ALLOW_SCRIPTED")
    #: Longest postponement a provider's Retry-After or rate-limit reset header can cause, in ms.
    max_postpone_ms: PositiveInt = Field(default=900_000, validation_alias="AGENTQ_MAX_POSTPONE_MS")
    #: Tool registries (``package.module:attribute``, comma-separated) whose tools join the built-ins.
    tools: DottedPaths = Field(default=(), validation_alias="AGENTQ_TOOLS")

    # --- Durable runs ---
    #: Record every model call and tool call in the step ledger, so a retried or recovered attempt goes on
    #: after the last completed step; off, every attempt starts the run from the beginning.
    step_ledger: bool = Field(default=True, validation_alias="AGENTQ_STEP_LEDGER")
    #: On resume, run again a tool call an earlier attempt started and never finished even when the tool
    #: is not declared idempotent (it may then run twice); off, the task fails instead.
    repeat_unfinished_tools: bool = Field(default=False, validation_alias="AGENTQ_REPEAT_UNFINISHED_TOOLS")

    # --- Approvals ---
    #: Longest a task waits in ``awaiting_approval`` for a person's decision, in seconds (default 7 days);
    #: a longer wait fails the task with "approval timed out".
    approval_timeout_s: PositiveInt = Field(default=604_800, validation_alias="AGENTQ_APPROVAL_TIMEOUT_S")

    # --- Provider limits, shared by every worker (README, *Provider limits*) ---
    #: Requests/tokens per minute per model, JSON: {"openai:gpt-4o-mini": {"rpm": 500, "tpm": 200000}}.
    provider_limits: ProviderLimits = Field(
        default_factory=dict, validation_alias="AGENTQ_PROVIDER_LIMITS_JSON"
    )
    #: Tokens per minute of every organization, across its models (0 = no quota).
    org_tpm: NonNegativeInt = Field(default=0, validation_alias="AGENTQ_ORG_TPM")
    #: Per-organization limits, JSON: {"<organization uuid>": {"tpm": 20000, "rpm": 100}}.
    org_limits: OrgLimits = Field(default_factory=dict, validation_alias="AGENTQ_ORG_LIMITS_JSON")
    #: Longest a model call waits in the worker for its bucket; a longer wait postpones the task (ms).
    limit_max_wait_ms: NonNegativeInt = Field(default=2000, validation_alias="AGENTQ_LIMIT_MAX_WAIT_MS")

    # --- Spending caps (USD per calendar month, UTC) ---
    monthly_budget_usd: Decimal | None = Field(default=None, validation_alias="AGENTQ_MONTHLY_BUDGET_USD")
    #: Per-organization caps overriding the default, JSON: {"<organization uuid>": 250}.
    organization_budgets: JsonObject = Field(default_factory=dict, validation_alias="AGENTQ_ORG_BUDGETS_JSON")

    # --- Task semantics ---
    max_attempts: PositiveInt = Field(default=3, validation_alias="AGENTQ_MAX_ATTEMPTS")
    backoff_ms: NonNegativeInt = Field(default=2000, validation_alias="AGENTQ_BACKOFF_MS")
    max_context_bytes: PositiveInt = Field(
        default=DEFAULT_MAX_CONTEXT_BYTES, validation_alias="AGENTQ_MAX_CONTEXT_BYTES"
    )
    #: Dramatiq's time limit for one attempt, in milliseconds.
    task_time_limit_ms: PositiveInt = Field(default=600_000, validation_alias="AGENTQ_TASK_TIME_LIMIT_MS")

    # --- Queue semantics ---
    #: Task starts allowed per window across all workers (0 = no limit).
    rate_limit_max: NonNegativeInt = Field(default=100, validation_alias="AGENTQ_RATE_LIMIT_MAX")
    rate_limit_window_ms: PositiveInt = Field(default=60_000, validation_alias="AGENTQ_RATE_LIMIT_WINDOW_MS")
    #: Per agent kind limits, JSON: {"financial_report": {"max": 10, "window_ms": 2000}} (max 0 = none).
    kind_rate_limits: JsonObject = Field(default_factory=dict, validation_alias="AGENTQ_RATE_LIMITS_JSON")
    #: Running tasks allowed per organization at once (0 = no cap).
    org_concurrency: NonNegativeInt = Field(default=0, validation_alias="AGENTQ_ORG_CONCURRENCY")
    #: Organizations take turns within each priority (a tenant's burst does not hold back the others).
    fair_ordering: bool = Field(default=True, validation_alias="AGENTQ_FAIR_ORDERING")

    # --- Reliability ---
    #: A running task's lease; a worker silent this long is presumed dead and its task stalled.
    stalled_interval_ms: PositiveInt = Field(default=30_000, validation_alias="AGENTQ_STALLED_INTERVAL_MS")
    #: Stalls allowed before a task fails with "job stalled more than allowable limit".
    max_stalled_count: NonNegativeInt = Field(default=1, validation_alias="AGENTQ_MAX_STALLED_COUNT")
    #: On SIGTERM/SIGINT, how long active tasks may run before they are cut off (and recovered as stalled).
    shutdown_timeout_ms: PositiveInt = Field(default=30_000, validation_alias="AGENTQ_SHUTDOWN_TIMEOUT_MS")
    #: How often one worker looks for tasks whose message was lost, and re-enqueues them.
    reconcile_interval_ms: PositiveInt = Field(
        default=30_000, validation_alias="AGENTQ_RECONCILE_INTERVAL_MS"
    )
    #: An ad-hoc task left ``pending`` this long (producer crashed before enqueueing) is enqueued; 0 = never.
    pending_grace_ms: NonNegativeInt = Field(default=60_000, validation_alias="AGENTQ_PENDING_GRACE_MS")
    #: Postponements (rate limits, provider Retry-After) a task may take before they count as failures.
    max_postpones: NonNegativeInt = Field(default=20, validation_alias="AGENTQ_MAX_POSTPONES")

    # --- Retention (cleanup_jobs) ---
    keep_completed_age_s: NonNegativeInt = Field(
        default=86_400, validation_alias="AGENTQ_KEEP_COMPLETED_AGE_S"
    )
    keep_completed_count: NonNegativeInt = Field(default=1000, validation_alias="AGENTQ_KEEP_COMPLETED_COUNT")
    keep_failed_age_s: NonNegativeInt = Field(default=604_800, validation_alias="AGENTQ_KEEP_FAILED_AGE_S")
    keep_failed_count: NonNegativeInt = Field(default=5000, validation_alias="AGENTQ_KEEP_FAILED_COUNT")

    # --- Middleware stack ---
    #: Extra ``dramatiq.Middleware`` classes or instances, by dotted path, appended to the stack.
    extra_middleware: DottedPaths = Field(default=(), validation_alias="AGENTQ_MIDDLEWARE")
    #: Names of our optional middleware to leave out (see ``middleware.OPTIONAL``).
    disabled_middleware: DottedPaths = Field(default=(), validation_alias="AGENTQ_DISABLE_MIDDLEWARE")

    # --- Logging ---
    log_level: str = Field(default="INFO", validation_alias="AGENTQ_LOG_LEVEL")
    #: ``text`` (the lifecycle lines as they are) or ``json`` (one object per line, with trace and span ids).
    log_format: Literal["text", "json"] = Field(default="text", validation_alias="AGENTQ_LOG_FORMAT")

    # --- Observability (the OTEL_* names are OpenTelemetry's own; the SDK reads the rest itself) ---
    otel_sdk_disabled: bool = Field(default=False, validation_alias="OTEL_SDK_DISABLED")
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    otel_traces_exporter: str = Field(default="otlp", validation_alias="OTEL_TRACES_EXPORTER")
    otel_service_name: str | None = Field(default=None, validation_alias="OTEL_SERVICE_NAME")
    #: How the OTLP/HTTP exporter encodes span batches: ``direct`` (``config.otlp_encoding``, the same
    #: protobuf bytes for about a quarter of the CPU) or ``sdk`` (the exporter's own encoder).
    trace_encoder: Literal["direct", "sdk"] = Field(default="direct", validation_alias="AGENTQ_TRACE_ENCODER")
    #: Record prompts, model output and tool arguments/results in spans (and Sentry). Off by default.
    trace_content: bool = Field(default=False, validation_alias="AGENTQ_TRACE_CONTENT")
    sentry_dsn: SecretStr | None = Field(default=None, validation_alias="SENTRY_DSN")
    #: Share of task attempts and enqueues sent to Sentry as performance transactions (0 = none).
    sentry_traces_sample_rate: float = Field(default=0.0, validation_alias="SENTRY_TRACES_SAMPLE_RATE")
    #: Prometheus endpoint of each worker process: the first free port from this one (None = off).
    metrics_port: Port | None = Field(default=None, validation_alias="AGENTQ_METRICS_PORT")

    # --- Live events (a Redis Stream per task; ``agent_task_queue.events``) ---
    #: Publish every task's transitions and model/tool steps to its Redis Stream.
    events_enabled: bool = Field(default=True, validation_alias="AGENTQ_EVENTS_ENABLED")
    #: Most events kept per task (older ones are trimmed, approximately: ``XADD MAXLEN ~``).
    events_max_len: EventsMaxLen = Field(default=10_000, validation_alias="AGENTQ_EVENTS_MAX_LEN")
    #: Seconds a task's stream is kept after the task ends; later, ``events()`` replays the database.
    events_ttl_s: EventsTtl = Field(default=3600, validation_alias="AGENTQ_EVENTS_TTL_S")
    #: Streamed model text published at most once per this many milliseconds per run (0: every chunk).
    events_delta_flush_ms: DeltaFlushMs = Field(default=100, validation_alias="AGENTQ_EVENTS_DELTA_FLUSH_MS")

    # --- Dashboard (``agentq dashboard``) ---
    #: Full access (actions included); required to bind anywhere but the loopback interface.
    dashboard_token: SecretStr | None = Field(default=None, validation_alias="AGENTQ_DASHBOARD_TOKEN")
    #: Read-only access: every page and GET of the API, no action.
    dashboard_readonly_token: SecretStr | None = Field(
        default=None, validation_alias="AGENTQ_DASHBOARD_READONLY_TOKEN"
    )
    #: Read-only access to one organization's tasks, JSON: {"<organization uuid>": "<token>"}.
    dashboard_org_tokens: JsonObject = Field(
        default_factory=dict, validation_alias="AGENTQ_DASHBOARD_ORG_TOKENS_JSON"
    )
    #: Link from a run to its trace, with ``{trace_id}`` in it, e.g. http://localhost:16686/trace/{trace_id}.
    trace_url_template: str | None = Field(default=None, validation_alias="AGENTQ_TRACE_URL_TEMPLATE")
    #: Seconds between two refreshes of the dashboard's live views.
    dashboard_refresh_s: PositiveFloat = Field(default=5.0, validation_alias="AGENTQ_DASHBOARD_REFRESH_S")

    @field_validator("extra_middleware", "disabled_middleware", "allowed_base_urls", "tools", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("trace_url_template")
    @classmethod
    def _trace_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parsed = urlsplit(value.strip())
        if parsed.scheme not in ("http", "https") or "{trace_id}" not in value:
            raise ValueError("must be an http(s):// URL containing {trace_id}")
        return value.strip()

    @field_validator("dashboard_token", "dashboard_readonly_token")
    @classmethod
    def _dashboard_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value()) < MIN_DASHBOARD_TOKEN_CHARS:
            raise ValueError(f"must be at least {MIN_DASHBOARD_TOKEN_CHARS} characters (use a random one)")
        return value

    @field_validator("dashboard_org_tokens")
    @classmethod
    def _org_tokens(cls, value: dict[str, Any]) -> dict[str, Any]:
        for organization, token in value.items():
            if not isinstance(token, str) or len(token) < MIN_DASHBOARD_TOKEN_CHARS:
                raise ValueError(
                    f"the token of organization {organization!r} must be a string of at least"
                    f" {MIN_DASHBOARD_TOKEN_CHARS} characters"
                )
        return value

    @field_validator("sentry_traces_sample_rate")
    @classmethod
    def _rate(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError("must be between 0 and 1")
        return value

    @field_validator("limit_max_wait_ms")
    @classmethod
    def _limit_wait(cls, value: int) -> int:
        if value > MAX_LIMIT_WAIT_MS:
            raise ValueError(
                f"must be at most {MAX_LIMIT_WAIT_MS} (a longer wait postpones the task instead)"
            )
        return value

    @field_validator("monthly_budget_usd")
    @classmethod
    def _budget(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and value < 0:
            raise ValueError("must not be negative")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("is not a log level (DEBUG, INFO, WARNING, ERROR, CRITICAL)")
        return level

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError("is not a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("is not a postgresql:// URL")
        return value

    @field_validator("supabase_url")
    @classmethod
    def _supabase_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parsed = urlsplit(value.strip())
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("is not an http(s):// URL such as https://<project>.supabase.co")
        return value.strip().rstrip("/")

    def supabase_key(self) -> SecretStr | None:
        """The worker's Supabase key: ``SUPABASE_SERVICE_ROLE_KEY``, else ``SUPABASE_SECRET_KEY``."""
        return self.supabase_service_role_key or self.supabase_secret_key

    def db_prepare_threshold(self) -> int | None:
        """psycopg's ``prepare_threshold``: ``None`` (no prepared statements) for a transaction pooler."""
        enabled = self.db_prepared_statements
        if enabled is None:
            port = None
            if self.database_url is not None:
                with contextlib.suppress(ValueError):
                    port = urlsplit(self.database_url.get_secret_value()).port
            enabled = port != 6543
        return 5 if enabled else None

    def redis_connection_url(self) -> str:
        """The Redis URL to connect to: ``REDIS_URL``, else one built from host, port and password
        (``rediss://`` with ``REDIS_TLS``, verifying against ``REDIS_TLS_CA_CERTS`` when set)."""
        if self.redis_url is not None:
            return self.redis_url.get_secret_value()
        auth = ""
        if self.redis_password is not None:
            auth = ":" + quote(self.redis_password.get_secret_value(), safe="") + "@"
        scheme, query = ("rediss", self._redis_tls_query()) if self.redis_tls else ("redis", "")
        return f"{scheme}://{auth}{self.redis_host}:{self.redis_port}/0{query}"

    def _redis_tls_query(self) -> str:
        if self.redis_tls_ca_certs is None:
            return ""
        return "?ssl_ca_certs=" + quote(str(self.redis_tls_ca_certs), safe="/")

    def tracing_enabled(self) -> bool:
        """Whether to export spans: an OTLP endpoint is set, the SDK is enabled, the exporter is not none."""
        endpoint = self.otel_exporter_otlp_traces_endpoint or self.otel_exporter_otlp_endpoint
        return bool(endpoint) and not self.otel_sdk_disabled and self.otel_traces_exporter.strip() != "none"

    def limits_configured(self) -> bool:
        """Whether any provider or organization limit is set (the model-call limiter is then on)."""
        return bool(self.provider_limits or self.org_tpm or self.org_limits)

    def store_backend(self) -> str:
        """Which task store the settings select: ``supabase``, ``postgres`` or ``sqlite``."""
        if self.supabase_url is not None and self.supabase_key() is not None:
            return "supabase"
        return "postgres" if self.database_url is not None else "sqlite"

    def db_pool_max(self) -> int:
        """Connections per process for the Postgres pool: ``AGENTQ_DB_POOL_SIZE``, else one per worker
        thread plus headroom, at most :data:`DB_POOL_CAP` (threads hold one only per statement)."""
        return self.db_pool_size or min(self.queue_concurrency + 4, DB_POOL_CAP)

    @property
    def threads(self) -> int:
        """``dramatiq --threads`` for ``agentq worker`` (see ``worker_threads``)."""
        return self.worker_threads or min(self.queue_concurrency, DEFAULT_MAX_THREADS)


#: Shortest dashboard token accepted: a guessable token would open every task to anyone who reaches it.
MIN_DASHBOARD_TOKEN_CHARS = 16

#: Most threads ``agentq worker`` starts from ``QUEUE_CONCURRENCY`` alone (runs wait on the event loop).
DEFAULT_MAX_THREADS = 8
#: Most Postgres connections a worker process opens unless ``AGENTQ_DB_POOL_SIZE`` says more: past it,
#: threads take turns instead of exhausting the server's ``max_connections`` (100 by default).
DB_POOL_CAP = 32

_SECRET_FIELDS = {
    "REDIS_URL",
    "REDIS_PASSWORD",
    "DATABASE_URL",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "SENTRY_DSN",
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_SECRET_KEY",
    "AGENTQ_DASHBOARD_TOKEN",
    "AGENTQ_DASHBOARD_READONLY_TOKEN",
    "AGENTQ_DASHBOARD_ORG_TOKENS_JSON",
}


def _describe(error: Any) -> str:
    name = str(error["loc"][0]) if error["loc"] else "settings"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error.get("type") == "int_parsing":
        message = "is not a port number" if name.endswith("_PORT") else "is not an integer"
    value = "<hidden>" if name in _SECRET_FIELDS else repr(error.get("input"))
    return redact(f"{name}={value} {message}")


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings from the environment.

    Args:
        **overrides: Values that win over the environment (by field name), for tests and tools.

    Raises:
        ConfigError: Naming every bad variable and its value, e.g. ``REDIS_PORT='abc' is not an integer``.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        # ``from None``: pydantic's own message echoes input values, secrets included.
        raise ConfigError(f"invalid configuration: {problems}") from None
