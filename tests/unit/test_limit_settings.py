"""Provider and organization limits in the settings: good entries parsed, bad ones named with their key."""

from __future__ import annotations

import pytest

from config.errors import ConfigError
from config.rate_limits import RateLimit
from config.settings import load_settings

ORG = "11111111-1111-4111-8111-111111111111"


def test_limits_are_off_by_default() -> None:
    settings = load_settings()

    assert settings.provider_limits == {} and settings.org_tpm == 0 and settings.org_limits == {}
    assert settings.limit_max_wait_ms == 2000
    assert not settings.limits_configured()


def test_entries_are_parsed_and_scaled_to_their_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AGENTQ_PROVIDER_LIMITS_JSON",
        '{"openai:gpt-4o-mini": {"rpm": 500, "tpm": 200000}, "anthropic:*": {"rpm": 50, "window_s": 6}}',
    )
    monkeypatch.setenv("AGENTQ_ORG_LIMITS_JSON", '{"11111111-1111-4111-8111-111111111111": {"tpm": 20000}}')
    monkeypatch.setenv("AGENTQ_ORG_TPM", "5000")

    settings = load_settings()

    mini = settings.provider_limits["openai:gpt-4o-mini"]
    assert mini == RateLimit(rpm=500, tpm=200_000, window_s=60)
    assert (mini.requests_per_window, mini.tokens_per_window, mini.window_ms) == (500, 200_000, 60_000)
    claude = settings.provider_limits["anthropic:*"]
    assert (claude.requests_per_window, claude.tokens_per_window) == (5, 0)  # 50 a minute = 5 per 6 s
    assert settings.org_limits == {ORG: RateLimit(tpm=20_000)}
    assert settings.org_tpm == 5000 and settings.limits_configured()


def test_organization_keys_are_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTQ_ORG_LIMITS_JSON", '{"11111111111141118111111111111111": {"rpm": 10}}')

    assert list(load_settings().org_limits) == [ORG]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("AGENTQ_PROVIDER_LIMITS_JSON", '{"openai:gpt-4o-mini": {"rpm": 5,', "is not valid JSON"),
        ("AGENTQ_PROVIDER_LIMITS_JSON", "[1, 2]", "must be a JSON object"),
        ("AGENTQ_PROVIDER_LIMITS_JSON", '{"openai:m": 500}', "entry 'openai:m': 500 is not an object"),
        ("AGENTQ_PROVIDER_LIMITS_JSON", '{"openai:m": {"rpm": 5, "rps": 1}}', "unknown key 'rps'"),
        (
            "AGENTQ_PROVIDER_LIMITS_JSON",
            '{"openai:m": {"rpm": -5}}',
            "rpm must be a positive integer, got -5",
        ),
        ("AGENTQ_PROVIDER_LIMITS_JSON", '{"openai:m": {"tpm": 0}}', "tpm must be a positive integer, got 0"),
        (
            "AGENTQ_PROVIDER_LIMITS_JSON",
            '{"openai:m": {"rpm": 1.5}}',
            "rpm must be a positive integer, got 1.5",
        ),
        (
            "AGENTQ_PROVIDER_LIMITS_JSON",
            '{"openai:m": {"rpm": true}}',
            "rpm must be a positive integer, got True",
        ),
        (
            "AGENTQ_PROVIDER_LIMITS_JSON",
            '{"openai:m": {"rpm": "5"}}',
            "rpm must be a positive integer, got '5'",
        ),
        ("AGENTQ_PROVIDER_LIMITS_JSON", '{"openai:m": {}}', "entry 'openai:m': give rpm, tpm or both"),
        (
            "AGENTQ_PROVIDER_LIMITS_JSON",
            '{"openai:m": {"rpm": 5, "window_s": 0}}',
            "window_s must be a positive",
        ),
        (
            "AGENTQ_PROVIDER_LIMITS_JSON",
            '{"openai:m": {"rpm": 5, "window_s": 61}}',
            "window_s must be at most 60",
        ),
        (
            "AGENTQ_PROVIDER_LIMITS_JSON",
            '{"openai:m": {"rpm": 20, "window_s": 1}}',
            "rpm 20 over window_s 1 allows less than one per window",
        ),
        (
            "AGENTQ_PROVIDER_LIMITS_JSON",
            '{"gpt-4o-mini": {"rpm": 5}}',
            "key 'gpt-4o-mini' is not 'provider:model'",
        ),
        ("AGENTQ_PROVIDER_LIMITS_JSON", '{"*:gpt-4o": {"rpm": 5}}', "key '*:gpt-4o' is not 'provider:model'"),
        ("AGENTQ_PROVIDER_LIMITS_JSON", '{"openai:gpt*4o": {"rpm": 5}}', "key 'openai:gpt*4o' is not"),
        ("AGENTQ_PROVIDER_LIMITS_JSON", '{"openai:": {"rpm": 5}}', "key 'openai:' is not"),
        ("AGENTQ_ORG_LIMITS_JSON", '{"acme": {"tpm": 5}}', "key 'acme' is not an organization id (a UUID)"),
        ("AGENTQ_ORG_LIMITS_JSON", f'{{"{ORG}": {{"tpm": -1}}}}', f"entry '{ORG}': tpm must be a positive"),
        (
            "AGENTQ_ORG_LIMITS_JSON",
            f'{{"{ORG}": {{"tpm": 5}}, "{ORG.replace("-", "")}": {{"tpm": 6}}}}',
            f"organization {ORG} is given twice",
        ),
        ("AGENTQ_ORG_TPM", "-1", "AGENTQ_ORG_TPM='-1' must not be negative"),
        ("AGENTQ_ORG_TPM", "lots", "AGENTQ_ORG_TPM='lots' is not an integer"),
        ("AGENTQ_LIMIT_MAX_WAIT_MS", "600000", "must be at most 60000"),
    ],
)
def test_a_bad_limit_is_a_configuration_error_naming_the_variable_and_key(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ConfigError) as caught:
        load_settings()

    text = str(caught.value)
    assert f"{name}=" in text and message in text, text
