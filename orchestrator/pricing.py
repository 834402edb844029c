"""What model calls cost: a price table and ``cost(model, usage)``.

Prices are USD per million tokens. :data:`DEFAULT_PRICES` holds a few well-known OpenAI and
Anthropic models at list prices as last checked by hand; **prices change, so check them
against the providers' pricing pages and override them from configuration**
(:meth:`PriceTable.from_mapping`). A model missing from the table has no cost (``None``)
rather than a wrong one.

Model names match exactly first, then by the longest known name that is followed by ``-``
in the requested one, so a dated snapshot such as ``gpt-4o-mini-2024-07-18`` costs what
``gpt-4o-mini`` costs, while ``gpt-5.4`` does not borrow the price of ``gpt-5``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from orchestrator.messages import Usage

__all__ = ["DEFAULT_PRICES", "ModelPrice", "PriceTable"]

_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class ModelPrice:
    """The price of one model, USD per million tokens.

    Attributes:
        input: Plain input tokens.
        output: Output tokens (reasoning included).
        cached_input: Input tokens read from the prompt cache; None means the input price.
        cache_write: Input tokens written to the prompt cache; None means the input price.
    """

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None

    @classmethod
    def parse(cls, model: str, value: Mapping[str, Any]) -> ModelPrice:
        """Build a price from ``{"input": 2.5, "output": 10, "cached_input": 1.25}``.

        Raises:
            ValueError: A price is missing, negative or not a number; the message names the model.
        """
        unknown = set(value) - {"input", "output", "cached_input", "cache_write"}
        if unknown:
            raise ValueError(f"price of {model!r} has unknown keys {sorted(unknown)}")

        def number(key: str, required: bool) -> Decimal | None:
            raw = value.get(key)
            if raw is None:
                if required:
                    raise ValueError(f"price of {model!r} needs {key!r} (USD per million tokens)")
                return None
            if isinstance(raw, bool) or not isinstance(raw, int | float | str | Decimal):
                raise ValueError(f"price of {model!r}: {key!r} must be a number, got {raw!r}")
            try:
                price = Decimal(str(raw))
            except ArithmeticError:
                raise ValueError(f"price of {model!r}: {key!r} must be a number, got {raw!r}") from None
            if not price.is_finite() or price < 0:
                raise ValueError(f"price of {model!r}: {key!r} must be a non-negative number, got {raw!r}")
            return price

        return cls(
            input=number("input", True) or Decimal(0),
            output=number("output", True) or Decimal(0),
            cached_input=number("cached_input", False),
            cache_write=number("cache_write", False),
        )

    def cost(self, usage: Usage) -> Decimal:
        """Return the cost of ``usage`` at this price, in USD."""
        cached = min(usage.cached_input_tokens, usage.input_tokens)
        written = min(usage.cache_creation_input_tokens, usage.input_tokens - cached)
        plain = usage.input_tokens - cached - written
        total = (
            plain * self.input
            + cached * (self.cached_input if self.cached_input is not None else self.input)
            + written * (self.cache_write if self.cache_write is not None else self.input)
            + usage.output_tokens * self.output
        )
        return total / _MILLION


def _price(input: str, output: str, cached_input: str, cache_write: str | None = None) -> ModelPrice:
    return ModelPrice(
        Decimal(input),
        Decimal(output),
        Decimal(cached_input),
        Decimal(cache_write) if cache_write is not None else None,
    )


#: List prices (USD per million tokens) of a few well-known models, as last checked by hand.
#: Check them and override them from configuration; do not rely on them for billing.
DEFAULT_PRICES: Mapping[str, ModelPrice] = {
    "gpt-4o": _price("2.50", "10.00", "1.25"),
    "gpt-4o-mini": _price("0.15", "0.60", "0.075"),
    "gpt-4.1": _price("2.00", "8.00", "0.50"),
    "gpt-4.1-mini": _price("0.40", "1.60", "0.10"),
    "gpt-4.1-nano": _price("0.10", "0.40", "0.025"),
    "gpt-5": _price("1.25", "10.00", "0.125"),
    "gpt-5-mini": _price("0.25", "2.00", "0.025"),
    "gpt-5-nano": _price("0.05", "0.40", "0.005"),
    "claude-haiku-4-5": _price("1.00", "5.00", "0.10", "1.25"),
    "claude-sonnet-4": _price("3.00", "15.00", "0.30", "3.75"),
    "claude-sonnet-4-5": _price("3.00", "15.00", "0.30", "3.75"),
    "claude-opus-4-1": _price("15.00", "75.00", "1.50", "18.75"),
}


class PriceTable:
    """Model name → :class:`ModelPrice`, with exact then longest-prefix lookup.

    Args:
        prices: The prices; None means :data:`DEFAULT_PRICES`. Pass ``{}`` for no prices.
    """

    def __init__(self, prices: Mapping[str, ModelPrice] | None = None) -> None:
        """Create a table; see the class docstring."""
        self._prices = dict(DEFAULT_PRICES if prices is None else prices)
        # Longest names first, so the first prefix that matches is the longest one.
        self._by_length = sorted(self._prices, key=len, reverse=True)

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Mapping[str, Any]], *, include_defaults: bool = True
    ) -> PriceTable:
        """Build a table from plain data, e.g. parsed configuration JSON.

        Args:
            data: ``{"gpt-4o": {"input": 2.5, "output": 10, "cached_input": 1.25}, ...}``
                (USD per million tokens; ``cached_input`` and ``cache_write`` optional).
            include_defaults: Start from :data:`DEFAULT_PRICES` and override them (True),
                or use only ``data`` (False).

        Raises:
            ValueError: An entry is malformed; the message names the model.
        """
        prices = dict(DEFAULT_PRICES) if include_defaults else {}
        for model, value in data.items():
            if not isinstance(value, Mapping):
                raise ValueError(f"price of {model!r} must be an object, got {value!r}")
            prices[model] = ModelPrice.parse(model, value)
        return cls(prices)

    def lookup(self, model: str) -> ModelPrice | None:
        """Return the price of ``model``: exact name, else longest known ``name-`` prefix, else None."""
        price = self._prices.get(model)
        if price is not None:
            return price
        for known in self._by_length:
            if model.startswith(known + "-"):
                return self._prices[known]
        return None

    def cost(self, model: str, usage: Usage) -> Decimal | None:
        """Return the cost of ``usage`` on ``model`` in USD, or None when the model's price is unknown."""
        price = self.lookup(model)
        return None if price is None else price.cost(usage)

    def __contains__(self, model: object) -> bool:
        """Return whether ``model`` has a price (exactly or by prefix)."""
        return isinstance(model, str) and self.lookup(model) is not None
