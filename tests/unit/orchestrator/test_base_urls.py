"""``BaseUrlPolicy``: an agent's base URL must sit under an operator's prefix, compared on normalized URLs."""

from __future__ import annotations

import pytest

from orchestrator import AgentSpec, BaseUrlNotAllowed, Orchestrator, TaskInput
from orchestrator.providers.base_urls import BaseUrlPolicy, InvalidBaseUrlPrefix

POLICY = BaseUrlPolicy(["http://127.0.0.1:8000/v1", "https://llm.example.com"])


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/v1",
        "http://127.0.0.1:8000/v1/",
        "http://127.0.0.1:8000/v1/deployments/x",
        "HTTP://127.0.0.1:8000/v1",
        "https://llm.example.com",
        "https://LLM.example.com:443/any/path",
    ],
)
def test_urls_under_a_prefix_are_allowed(url: str) -> None:
    assert POLICY.allows(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000@evil.com/v1",
        "http://127.0.0.1:8000/v1@evil.com",
        "http://user:pw@127.0.0.1:8000/v1",
        "http://127.0.0.1:8000.evil.com/v1",
        "http://127.0.0.1:8001/v1",
        "https://127.0.0.1:8000/v1",
        "http://127.0.0.1/v1",
        "http://127.0.0.1:8000/v1evil",
        "http://127.0.0.1:8000/v2",
        "http://127.0.0.1:8000/v1/../admin",
        "http://127.0.0.1:8000/v1/%2e%2e/admin",
        "http://127.0.0.1:8000/v1?x=http://127.0.0.1:8000/v1",
        "http://127.0.0.1:8000/v1#frag",
        "http://127.0.0.1:8000\\@evil.com/v1",
        "http://127.0.0.1:8000/v1\n",
        "https://llm.example.com.evil.com",
        "http://llm.example.com",
        "ftp://127.0.0.1:8000/v1",
        "//127.0.0.1:8000/v1",
        "not a url",
        "",
    ],
)
def test_other_or_ambiguous_urls_are_refused(url: str) -> None:
    assert not POLICY.allows(url)


def test_no_prefixes_allow_no_base_url() -> None:
    assert not BaseUrlPolicy().allows("https://api.openai.com/v1")


@pytest.mark.parametrize("prefix", ["127.0.0.1:8000", "http://a@b/v1", "file:///etc", "http://h/v1?x=1"])
def test_a_bad_prefix_is_named(prefix: str) -> None:
    with pytest.raises(InvalidBaseUrlPrefix, match="prefix"):
        BaseUrlPolicy([prefix])


def test_the_orchestrator_refuses_a_foreign_base_url_before_any_call_naming_agent_and_url() -> None:
    agent = AgentSpec(
        id="agent-7", name="exfiltrator", provider="scripted", model="m", base_url="http://evil/v1"
    )

    with pytest.raises(BaseUrlNotAllowed) as caught:
        Orchestrator().run(agent, TaskInput(id="t", title="x"))

    message = str(caught.value)
    assert caught.value.retryable is False
    assert "'exfiltrator' (agent-7)" in message and "'http://evil/v1'" in message
    assert "AGENTQ_ALLOWED_BASE_URLS" in message
    assert caught.value.transcript == []  # no model call was made
