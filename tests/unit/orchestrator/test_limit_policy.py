"""Which buckets a model call counts in, with which limits, and how many tokens it is estimated at."""

from __future__ import annotations

from config.rate_limits import RateLimit
from orchestrator.limits import Bucket, LimitPolicy, estimate_tokens, margin_ms
from orchestrator.limits.base import DEFAULT_OUTPUT_TOKENS
from orchestrator.messages import ChatMessage, ModelRequest, ToolCall, ToolSpec

ORG = "11111111-1111-4111-8111-111111111111"
OTHER = "33333333-3333-4333-8333-333333333333"

POLICY = LimitPolicy(
    {
        "openai:gpt-4o-mini": RateLimit(rpm=500),
        "openai:gpt-4o*": RateLimit(rpm=100),
        "openai:gpt-4*": RateLimit(rpm=50),
        "openai:*": RateLimit(rpm=10),
        "anthropic:*": RateLimit(rpm=50, tpm=40_000),
    },
    org_tpm=5000,
    orgs={ORG: RateLimit(rpm=20)},
)


def test_the_most_specific_entry_wins() -> None:
    assert POLICY.model_bucket("openai", "gpt-4o-mini").limit == RateLimit(rpm=500)  # exact
    assert POLICY.model_bucket("openai", "gpt-4o-2024-08-06").limit == RateLimit(rpm=100)  # longest prefix
    assert POLICY.model_bucket("openai", "gpt-4.1").limit == RateLimit(rpm=50)
    assert POLICY.model_bucket("openai", "o3").limit == RateLimit(rpm=10)  # provider:*
    assert POLICY.model_bucket("anthropic", "claude-haiku-4-5").limit == RateLimit(rpm=50, tpm=40_000)


def test_a_wildcard_gives_each_model_its_own_bucket() -> None:
    haiku, sonnet = (
        POLICY.model_bucket("anthropic", "claude-haiku"),
        POLICY.model_bucket("anthropic", "claude-sonnet"),
    )
    assert (haiku.name, sonnet.name) == ("anthropic:claude-haiku", "anthropic:claude-sonnet")
    assert haiku.limit == sonnet.limit


def test_a_model_no_entry_matches_has_a_bucket_only_the_provider_shapes() -> None:
    bucket = POLICY.model_bucket("scripted", "scripted-1")
    assert bucket == Bucket("scripted:scripted-1", None, "model")
    assert bucket.window_ms == 60_000


def test_organizations_get_their_entry_with_the_default_token_quota_else_the_default() -> None:
    own = POLICY.org_bucket(ORG)
    other = POLICY.org_bucket(OTHER)
    assert own == Bucket(f"org:{ORG}", RateLimit(rpm=20, tpm=5000), "org")
    assert other == Bucket(f"org:{OTHER}", RateLimit(tpm=5000), "org")
    assert POLICY.org_bucket(None) is None
    assert LimitPolicy({"openai:*": RateLimit(rpm=1)}).org_bucket(ORG) is None  # no quota configured


def test_a_call_counts_in_its_model_bucket_then_its_organization() -> None:
    names = [bucket.name for bucket in POLICY.buckets("openai", "o3", ORG)]
    assert names == ["openai:o3", f"org:{ORG}"]
    assert POLICY.bucket_named(f"org:{OTHER}").limit == RateLimit(tpm=5000)
    assert POLICY.bucket_named("openai:gpt-4o-mini").limit == RateLimit(rpm=500)


def test_enabled_only_when_something_is_configured() -> None:
    assert not LimitPolicy().enabled
    assert LimitPolicy(org_tpm=1).enabled and POLICY.enabled


def test_the_send_margin_is_two_seconds_at_most_a_fifth_of_the_window() -> None:
    assert (margin_ms(60_000), margin_ms(6000), margin_ms(1000)) == (2000, 1200, 200)


def _request(
    *messages: ChatMessage, max_tokens: int | None = None, tools: tuple[ToolSpec, ...] = ()
) -> ModelRequest:
    return ModelRequest(
        model="m",
        system_prompt="x" * 40,
        messages=messages,
        tools=tools,
        temperature=None,
        max_tokens=max_tokens,
    )


def test_the_estimate_is_the_prompt_in_quarter_characters_plus_the_output_limit() -> None:
    user = ChatMessage("user", "y" * 400)

    assert estimate_tokens(_request(user, max_tokens=150)) == (40 + 400) // 4 + 4 + 150
    assert estimate_tokens(_request(user)) == (40 + 400) // 4 + 4 + DEFAULT_OUTPUT_TOKENS


def test_the_estimate_counts_tool_calls_and_tool_schemas() -> None:
    call = ToolCall("c1", "calculate", {"expression": "2+2"})
    tool = ToolSpec("calculate", "Evaluate arithmetic", {"type": "object"})
    bare = estimate_tokens(_request(ChatMessage("assistant", ""), max_tokens=0))

    with_tools = estimate_tokens(
        _request(ChatMessage("assistant", "", tool_calls=(call,)), max_tokens=0, tools=(tool,))
    )

    assert with_tools > bare
