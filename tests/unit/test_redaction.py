"""One redactor for every sink: stored errors and tracebacks, spans, logs, settings errors, the demo."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from dramatiq.brokers.stub import StubBroker
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from actors.cli import demo
from actors.runtime import build_runtime
from config import redaction
from config.errors import ConfigError
from config.logs import JsonFormatter
from config.redaction import FILTERED, RedactingFilter, redact, register_settings
from config.settings import load_settings
from middleware import build_middleware
from orchestrator.tracing import TracingHooks
from taskstore import InMemoryTaskStore, TaskStatus
from tests.acceptance.processes import free_port
from tests.harness import Harness, declare_kinds, harness_settings

OPENAI_KEY = "sk-proj-Unit0penAIKey1234567890"
DB_PASSWORD = "db-Pa55word-unit"
DATABASE_URL = f"postgresql://agentq:{DB_PASSWORD}@db.internal:5432/app"


@pytest.fixture(autouse=True)
def no_registered_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no configured secret and leaves none behind."""
    monkeypatch.setattr(redaction, "_secrets", ())


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Incorrect API key provided: sk-proj-AbCdEf0123456789", "AbCdEf0123456789"),
        ("key sk-AbCdEf0123456789xyz", "AbCdEf0123456789xyz"),
        ("anthropic sk-ant-api03-AbCdEf0123456789", "api03-AbCdEf0123456789"),
        ("supabase sb_secret_AbCdEf0123456789", "AbCdEf0123456789"),
        ("supabase sb_publishable_AbCdEf0123456789", "AbCdEf0123456789"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.SiGnAtUrE_123", "SiGnAtUrE_123"),
        ("conninfo postgresql://user:PgSecret1@host:5432/db failed", "PgSecret1"),
        ("redis://:RedisSecret1@cache:6379/0 refused", "RedisSecret1"),
        ("rediss://default:RedisSecret2@managed:6380", "RedisSecret2"),
        ("amqp://guest:AmqpSecret3@mq/", "AmqpSecret3"),
        ("Authorization: Bearer opaque-token-value", "opaque-token-value"),
        ("authorization: bearer opaque-token-value", "opaque-token-value"),
        ("password=Hunter2Pass&user=x", "Hunter2Pass"),
        ("{'api_key': 'dict-style-key'}", "dict-style-key"),
        ('{"apikey": "json-style-key"}', "json-style-key"),
        ("secret: colon-style-secret", "colon-style-secret"),
        ("access_token=tok-123456", "tok-123456"),
    ],
)
def test_every_secret_shape_is_filtered(text: str, secret: str) -> None:
    assert secret not in redact(text)
    assert FILTERED in redact(text)


def test_ordinary_text_is_left_alone() -> None:
    text = "task 0a1b-task-abcdefghij used max_tokens=512, input_tokens: 10 at https://api.example/v1"

    assert redact(text) == text


def test_configured_secret_values_are_filtered_wherever_they_appear() -> None:
    # Given settings whose secrets have no telltale shape
    register_settings(
        harness_settings(
            anthropic_api_key="plain-anthropic-value",
            redis_password="plain-redis-pw",
            database_url="postgresql://app:pct%2Fencoded@db/app",
            supabase_service_role_key="plain-service-role",
            sentry_dsn="https://dsnpublickey@o1.ingest.example/7",
        )
    )

    text = redact(
        "auth failed: plain-anthropic-value plain-redis-pw pct/encoded pct%2Fencoded "
        "plain-service-role dsnpublickey"
    )

    assert text == "auth failed: " + " ".join([FILTERED] * 6)


def _exc_info(message: str) -> BaseException:
    try:
        raise RuntimeError(message)
    except RuntimeError as exc:
        return exc


@pytest.mark.parametrize("formatter", [logging.Formatter("%(message)s"), JsonFormatter()])
def test_log_lines_and_their_tracebacks_are_redacted(formatter: logging.Formatter) -> None:
    # Given a handler with the redacting filter, in text or JSON format
    register_settings(harness_settings(database_url=DATABASE_URL))
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    error = _exc_info(f"connect {DATABASE_URL} with {OPENAI_KEY}")
    try:
        # When a failure is logged with its message arguments and traceback
        logger.error("✗ Job %s failed: %s", "t1", error, exc_info=error)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True

    # Then neither the key nor the password is written, and the line still says what happened
    output = stream.getvalue()
    assert OPENAI_KEY not in output and DB_PASSWORD not in output
    assert "✗ Job t1 failed" in output and "RuntimeError" in output
    if isinstance(formatter, JsonFormatter):
        assert "RuntimeError" in json.loads(output)["exc_info"]


def test_settings_errors_never_echo_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_URL", "ftp://service:SupaPw-987@project.example")
    monkeypatch.setenv("AGENTQ_MODEL_PRICES_JSON", '["sk-proj-PricesKey1234567"]')

    with pytest.raises(ConfigError) as raised:
        load_settings()

    message = str(raised.value)
    assert "SUPABASE_URL=" in message and "AGENTQ_MODEL_PRICES_JSON=" in message
    assert "SupaPw-987" not in message and "PricesKey1234567" not in message


def test_the_demo_never_prints_the_redis_password(capsys: pytest.CaptureFixture[str]) -> None:
    # Given a configured Redis URL with a password where nothing answers
    url = f"redis://:DemoRedisPw-55@127.0.0.1:{free_port()}/0"

    # When the demo falls back to a throwaway server (or says none can be started)
    with demo._redis_available(url):
        pass

    # Then what it prints names the URL without the password
    printed = capsys.readouterr()
    assert "DemoRedisPw-55" not in printed.out + printed.err
    assert "127.0.0.1" in printed.out


@pytest.fixture
def traced() -> Iterator[tuple[Harness, InMemorySpanExporter]]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    config = harness_settings(allow_scripted=True, database_url=DATABASE_URL, openai_api_key=OPENAI_KEY)
    store = InMemoryTaskStore()
    broker = StubBroker(middleware=build_middleware(config, store, tracer_provider=provider))
    broker.emit_after("process_boot")
    runtime = build_runtime(config, store=store, broker=broker)
    runtime.orchestrator().hooks = TracingHooks(tracer_provider=provider)
    try:
        yield Harness(runtime, declare_kinds(runtime)), spans
    finally:
        broker.close()


def test_a_failure_naming_secrets_is_stored_and_traced_redacted(
    traced: tuple[Harness, InMemorySpanExporter],
) -> None:
    # Given a scripted agent whose run fails with an error naming the key and the database URL
    harness, spans = traced
    message = f"provider said: bad key {OPENAI_KEY} (db {DATABASE_URL})"
    script = [{"fail": message, "retryable": False}]
    task_id = harness.task(context={"script": script})

    # When a worker runs it
    harness.queue.add_task(task_id)
    with harness.worker() as worker:
        harness.drain(worker)

    # Then it failed, and neither the stored error and traceback nor any span (status, events) holds them
    task = harness.store.get_task(task_id)
    assert task is not None and task.status == TaskStatus.FAILED
    [run] = harness.store.get_runs(task_id)
    assert run.error is not None and "provider said: bad key" in run.error
    assert run.stacktrace is not None and "Traceback" in run.stacktrace
    stored = " ".join([task.error or "", run.error, run.stacktrace])
    finished = spans.get_finished_spans()
    failed = [span for span in finished if span.events]
    assert failed, [span.name for span in finished]
    traced_text = repr(
        [
            (span.status.description, [(event.name, dict(event.attributes or {})) for event in span.events])
            for span in finished
        ]
    )
    assert "exception.stacktrace" in traced_text and "provider said" in traced_text
    for secret in (OPENAI_KEY, DB_PASSWORD):
        assert secret not in stored
        assert secret not in traced_text


def test_skipping_the_key_value_pattern_for_texts_naming_no_secret_changes_no_result() -> None:
    # redact() runs the costly key=value pattern only on texts that name a secret; every result must be
    # what running every pattern on every text gives
    from config import redaction

    def every_pattern(text: str) -> str:
        for pattern, replacement in redaction._PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    corpus = [
        "3f0e5b2c-1111-4111-8111-111111111111",
        "gpt-4o-mini",
        "api_key=abc123 and Authorization: Bearer xyz token=zz",
        '{"password": "hunter2", "model": "x"}',
        "redis://:s3cret@cache:6379/0 then sk-proj-abcdefghijkl",
        "AUTH failed; Passwd: letmein",
        "nothing to see here, 42 apples",
        "x-api-key: 0123456789abcdef",
    ]
    assert [redaction.redact(text) for text in corpus] == [every_pattern(text) for text in corpus]


def test_texts_shaped_like_no_secret_come_back_unchanged_and_shaped_ones_are_filtered() -> None:
    from config.redaction import FILTERED, redact

    for plain in ("gpt-4o-mini", "host:123:abcdef12", "claude-haiku-4-5", "tool_calls", "Task 7 done"):
        assert redact(plain) == plain
    for shaped, kept in (
        ("Bearer abcdefgh1234", "Bearer "),
        ("key sk-ant-abcdefgh123", "key "),
        ("rk-abcdefgh12345", ""),
        ("sb_secret_abcdefgh12", ""),
        ("eyJhbGci.eyJzdWIi.c2lnbmF0", ""),
        ("postgres://u:pw@db/x", "postgres://u:"),
        ("PASSWORD=x1", "PASSWORD="),
    ):
        assert redact(shaped).startswith(kept) and FILTERED in redact(shaped), shaped
