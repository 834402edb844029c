"""Model prices: lookups by exact name and by prefix, costs, and prices from configuration."""

from __future__ import annotations

from decimal import Decimal

import pytest

from orchestrator import ModelPrice, PriceTable, Usage


def test_an_exact_model_name_finds_its_price() -> None:
    table = PriceTable()
    assert table.lookup("gpt-4o-mini") == ModelPrice(Decimal("0.15"), Decimal("0.60"), Decimal("0.075"))
    assert table.lookup("gpt-4o") == ModelPrice(Decimal("2.50"), Decimal("10.00"), Decimal("1.25"))


def test_a_dated_snapshot_costs_what_its_longest_known_prefix_costs() -> None:
    table = PriceTable()
    assert table.lookup("gpt-4o-mini-2024-07-18") == table.lookup("gpt-4o-mini")
    assert table.lookup("claude-haiku-4-5-20251001") == table.lookup("claude-haiku-4-5")


def test_an_unknown_model_has_no_cost_rather_than_a_wrong_one() -> None:
    table = PriceTable()
    assert table.lookup("my-local-llama") is None
    assert table.cost("my-local-llama", Usage(10, 10)) is None
    # A prefix must end at a dash: gpt-5.4 is not gpt-5.
    assert table.lookup("gpt-5.4") is None
    assert "gpt-5.4" not in table


def test_cost_prices_cached_and_cache_written_input_apart() -> None:
    price = ModelPrice(Decimal(1), Decimal(5), cached_input=Decimal("0.1"), cache_write=Decimal("1.25"))
    usage = Usage(
        input_tokens=1_000_000,
        output_tokens=1_000_000,
        cached_input_tokens=500_000,
        cache_creation_input_tokens=100_000,
    )
    assert price.cost(usage) == Decimal("0.4") + Decimal("0.05") + Decimal("0.125") + Decimal(5)


def test_prices_from_configuration_override_the_defaults() -> None:
    table = PriceTable.from_mapping(
        {"gpt-4o": {"input": 1, "output": "2"}, "local-model": {"input": 0, "output": 0}}
    )
    assert table.cost("gpt-4o-2024-08-06", Usage(1_000_000, 1_000_000)) == Decimal(3)
    assert table.cost("local-model", Usage(5, 5)) == Decimal(0)
    assert table.lookup("gpt-4o-mini") is not None  # defaults kept


def test_prices_from_configuration_alone_drop_the_defaults() -> None:
    table = PriceTable.from_mapping({"local-model": {"input": 1, "output": 1}}, include_defaults=False)
    assert table.lookup("gpt-4o") is None


@pytest.mark.parametrize(
    "entry",
    [
        {"input": 1},
        {"input": -1, "output": 1},
        {"input": "abc", "output": 1},
        {"input": 1, "output": 1, "x": 1},
    ],
)
def test_a_malformed_price_is_refused_naming_the_model(entry: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="bad-model"):
        PriceTable.from_mapping({"bad-model": entry})
