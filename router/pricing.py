"""List prices and the cost of a call, computed only from the usage the API returned."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any, ClassVar, Literal

from router.config import ModelPrice

__all__ = [
    "BATCH_DISCOUNT",
    "CostSummary",
    "LaneTotals",
    "PriceTable",
    "cost",
    "provider_for",
]

Lane = Literal["realtime", "batch"]

# Message Batches bill every token component at half the real-time price.
BATCH_DISCOUNT = 0.5
_PER_TOKEN = 1e-6  # prices are USD per million tokens


def _list_price(input_price: float, output_price: float) -> ModelPrice:
    return ModelPrice(input=input_price, output=output_price)


# Public list prices, USD per million tokens. Cache rates follow the published
# multipliers (write 5m 1.25x, write 1h 2x, read 0.1x input) via ModelPrice defaults.
_BUNDLED: dict[str, ModelPrice] = {
    "claude-opus-4-6": _list_price(5.0, 25.0),
    "claude-opus-4-5": _list_price(5.0, 25.0),
    "claude-opus-4-1": _list_price(15.0, 75.0),
    "claude-opus-4": _list_price(15.0, 75.0),
    "claude-opus-4-0": _list_price(15.0, 75.0),
    "claude-sonnet-4-6": _list_price(3.0, 15.0),
    "claude-sonnet-4-5": _list_price(3.0, 15.0),
    "claude-sonnet-4": _list_price(3.0, 15.0),
    "claude-sonnet-4-0": _list_price(3.0, 15.0),
    "claude-sonnet-3-7": _list_price(3.0, 15.0),
    # The 3.x generation's API ids put the family after the version.
    "claude-3-7-sonnet": _list_price(3.0, 15.0),
    "claude-haiku-4-5": _list_price(1.0, 5.0),
    "claude-3-5-haiku": _list_price(0.8, 4.0),
    "claude-3-haiku": _list_price(0.25, 1.25),
}

# The minimum cacheable prefix, in tokens, by the same keys: a marked prefix shorter than
# this is silently not cached. From the provider tables of the Anthropic prompt-caching docs
# (as gateway docs reproduce them, e.g. docs.orq.ai "Prompt caching").
_MIN_CACHEABLE: dict[str, int] = {
    "claude-opus-4-6": 4096,
    "claude-opus-4-5": 4096,
    "claude-opus-4-1": 1024,
    "claude-opus-4": 1024,
    "claude-opus-4-0": 1024,
    "claude-sonnet-4-6": 2048,
    "claude-sonnet-4-5": 1024,
    "claude-sonnet-4": 1024,
    "claude-sonnet-4-0": 1024,
    "claude-sonnet-3-7": 1024,
    "claude-3-7-sonnet": 1024,
    "claude-haiku-4-5": 4096,
    "claude-3-5-haiku": 2048,
    "claude-3-haiku": 2048,
}


def _load_prices(name: str) -> dict[str, ModelPrice]:
    """A bundled price table of router/data/ (the form of the config's [pricing] tables)."""
    table = tomllib.loads((files("router") / "data" / name).read_text(encoding="utf-8"))
    return {model: ModelPrice.model_validate(price) for model, price in table["pricing"].items()}


# OpenAI's list prices, with their source and date, in router/data/prices_openai.toml.
_OPENAI = _load_prices("prices_openai.toml")

# Each provider's models: a model belongs to the provider whose table prices it.
PROVIDER_PRICES: Mapping[str, Mapping[str, ModelPrice]] = {"anthropic": _BUNDLED, "openai": _OPENAI}

# What may follow a price key in a model id: a snapshot date or an alias suffix
# ("claude-sonnet-4-5-20250929", "claude-3-5-haiku-latest", "...@20250929",
# OpenAI's "gpt-4o-2024-08-06"). Anything else is a different model: "claude-opus-4-7"
# must not be priced as "claude-opus-4", nor "gpt-5-mini" as "gpt-5".
_VERSION_SUFFIX = re.compile(r"[-@](\d{8}|\d{4}-\d{2}-\d{2}|latest)([-@:].*)?")


def _count(usage: Any, name: str) -> int:
    # dict and int first: ingest calls this six times per result line, and the ABC checks
    # (Mapping, int | float) cost more than the rest of the line's bookkeeping.
    value = _part(usage, name)
    if type(value) is int:
        return value
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _part(usage: Any, name: str) -> Any:
    if isinstance(usage, dict):
        return usage.get(name)
    # An SDK object answers by attribute (the real-time lane's every reply): no Mapping check.
    value = getattr(usage, name, _MISSING)
    if value is not _MISSING:
        return value
    return usage.get(name) if isinstance(usage, Mapping) else None


_MISSING = object()


def _counts_read_one_by_one(usage: Any) -> tuple[int, int, int, int, int]:
    """counts_from_usage for any usage: an SDK object, a Mapping, counts of other types."""
    created = _count(usage, "cache_creation_input_tokens")
    split = _part(usage, "cache_creation")
    write_5m = _count(split, "ephemeral_5m_input_tokens") if split is not None else 0
    write_1h = _count(split, "ephemeral_1h_input_tokens") if split is not None else 0
    # Tokens the split does not account for (or all of them, when there is no split)
    # are billed at the 5-minute rate, the default TTL.
    write_5m += max(0, created - write_5m - write_1h)
    read = _count(usage, "cache_read_input_tokens")
    return _count(usage, "input_tokens"), _count(usage, "output_tokens"), write_5m, write_1h, read


def counts_from_usage(usage: Any) -> tuple[int, int, int, int, int]:
    """TokenCounts.from_usage's five counts (input, output, 5-minute and 1-hour cache writes,
    cache reads) as a tuple: the ingest reads one usage per result line, and a reply's usage
    as the API writes it (a dict of ints, with the cache split) is read here in one pass."""
    if type(usage) is dict:
        get = usage.get
        inputs, outputs = get("input_tokens"), get("output_tokens")
        created, read = get("cache_creation_input_tokens"), get("cache_read_input_tokens")
        split = get("cache_creation")
        if type(inputs) is int and type(outputs) is int and type(created) is int and type(read) is int:
            if split is None:
                return inputs, outputs, max(0, created), 0, read
            if type(split) is dict:
                write_5m = split.get("ephemeral_5m_input_tokens")
                write_1h = split.get("ephemeral_1h_input_tokens")
                if type(write_5m) is int and type(write_1h) is int:
                    return inputs, outputs, write_5m + max(0, created - write_5m - write_1h), write_1h, read
    return _counts_read_one_by_one(usage)


@dataclass(frozen=True)
class TokenCounts:
    """The billed token components of one usage object."""

    input: int = 0
    output: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cache_read: int = 0

    @classmethod
    def from_usage(cls, usage: Any) -> TokenCounts:
        """Read a Usage (SDK object or mapping); missing or null counts are 0."""
        return cls(*counts_from_usage(usage))

    # The usage fields from_usage reads, as JSON paths below a usage object (the store's
    # ingest reads them in SQL: store/usage.py).
    USAGE_FIELDS: ClassVar[tuple[str, ...]] = (
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_creation.ephemeral_5m_input_tokens",
        "cache_creation.ephemeral_1h_input_tokens",
        "cache_read_input_tokens",
    )

    @property
    def total(self) -> int:
        """All tokens, cached or not."""
        return self.input + self.output + self.cache_write_5m + self.cache_write_1h + self.cache_read

    def price(self, price: ModelPrice, lane: Lane) -> float:
        """USD for these counts at `price`, halved on the batch lane."""
        usd = (
            self.input * price.input
            + self.output * price.output
            + self.cache_write_5m * price.effective_cache_write_5m
            + self.cache_write_1h * price.effective_cache_write_1h
            + self.cache_read * price.effective_cache_read
        ) * _PER_TOKEN
        return usd * BATCH_DISCOUNT if lane == "batch" else usd


@dataclass(frozen=True)
class PriceTable:
    """Model prices by id; look-ups fall back to the longest key the id starts with."""

    prices: Mapping[str, ModelPrice]

    @classmethod
    def bundled(cls) -> PriceTable:
        """The public list prices shipped with hybrid-router, every provider's."""
        return cls({**_BUNDLED, **_OPENAI})

    def with_overrides(self, overrides: Mapping[str, ModelPrice]) -> PriceTable:
        """A table where `overrides` (e.g. `config.pricing`) replace or add entries."""
        return PriceTable({**self.prices, **overrides})

    def price(self, model: str) -> ModelPrice | None:
        """The price for `model`, or None when it is unknown (callers report it, never guess)."""
        key = _key_for(model, self.prices)
        return self.prices[key] if key is not None else None

    def min_cacheable(self, model: str) -> int | None:
        """The minimum cacheable prefix of `model` in tokens: its entry's `min_cacheable_tokens`,
        else the bundled figure; None when neither knows the model."""
        price = self.price(model)
        if price is not None and price.min_cacheable_tokens is not None:
            return price.min_cacheable_tokens
        key = _key_for(model, _MIN_CACHEABLE)
        return _MIN_CACHEABLE[key] if key is not None else None

    def cost(self, model: str, usage: Any, lane: Lane) -> float | None:
        """USD for one call from its returned usage; None if the model has no price."""
        price = self.price(model)
        if price is None:
            return None
        return TokenCounts.from_usage(usage).price(price, lane)


def _key_for(model: str, table: Mapping[str, object]) -> str | None:
    """The key of `table` that names `model`: itself, else the longest key it extends by a
    version suffix."""
    if model in table:
        return model
    best: str | None = None
    for key in table:
        if model.startswith(key) and _VERSION_SUFFIX.fullmatch(model[len(key) :]):
            if best is None or len(key) > len(best):
                best = key
    return best


def provider_for(model: str) -> str | None:
    """The provider whose bundled price table knows `model` ("anthropic", "openai"), else None."""
    for provider, table in PROVIDER_PRICES.items():
        if _key_for(model, table) is not None:
            return provider
    return None


def cost(model: str, usage: Any, lane: Lane, table: PriceTable | None = None) -> float | None:
    """USD for one call at `table` (default: bundled list prices); None for an unknown model."""
    return (table or PriceTable.bundled()).cost(model, usage, lane)


@dataclass
class LaneTotals:
    """What one lane carried and cost."""

    requests: int = 0
    tokens: int = 0
    cost: float = 0.0
    realtime_cost: float = 0.0  # the same usage at real-time prices
    unpriced: int = 0  # requests whose model has no known price
    duplicates: int = 0  # billed results for requests already answered elsewhere
    duplicate_cost: float = 0.0  # their cost, included in `cost`


@dataclass
class CostSummary:
    """Accumulates actual cost per lane against what sending everything real time would have cost."""

    prices: PriceTable = field(default_factory=PriceTable.bundled)
    realtime: LaneTotals = field(default_factory=LaneTotals)
    batch: LaneTotals = field(default_factory=LaneTotals)
    unknown_models: set[str] = field(default_factory=set)

    def lane(self, lane: Lane) -> LaneTotals:
        """Totals of `lane`."""
        return self.batch if lane == "batch" else self.realtime

    def add(
        self, model: str, usage: Any, lane: Lane, *, requests: int = 1, duplicate: bool = False
    ) -> float | None:
        """Count `requests` calls whose summed usage is `usage`; returns their cost (None: no price).

        A `duplicate` is a billed result for a request already answered elsewhere: it adds
        to the actual cost but not to the all-real-time baseline, where it would not exist.
        """
        totals = self.lane(lane)
        counts = TokenCounts.from_usage(usage)
        totals.tokens += counts.total
        if duplicate:
            totals.duplicates += requests
        else:
            totals.requests += requests
        price = self.prices.price(model)
        if price is None:
            totals.unpriced += requests
            self.unknown_models.add(model)
            return None
        actual = counts.price(price, lane)
        totals.cost += actual
        if duplicate:
            totals.duplicate_cost += actual
        else:
            totals.realtime_cost += counts.price(price, "realtime")
        return actual

    @property
    def requests(self) -> int:
        """Calls counted on both lanes."""
        return self.realtime.requests + self.batch.requests

    @property
    def tokens(self) -> int:
        """Tokens counted on both lanes."""
        return self.realtime.tokens + self.batch.tokens

    @property
    def total_cost(self) -> float:
        """USD actually billed (priced calls only)."""
        return self.realtime.cost + self.batch.cost

    @property
    def all_realtime_cost(self) -> float:
        """USD the same calls would have cost on the real-time endpoint."""
        return self.realtime.realtime_cost + self.batch.realtime_cost

    @property
    def saving(self) -> float:
        """USD saved versus sending everything real time."""
        return self.all_realtime_cost - self.total_cost

    @property
    def saving_pct(self) -> float:
        """The saving as a percentage of the all-real-time cost (0 when nothing was priced)."""
        baseline = self.all_realtime_cost
        return 100.0 * self.saving / baseline if baseline > 0 else 0.0

    def render(self) -> str:
        """A short text report."""
        header = ("lane", "requests", "tokens", "cost", "all-realtime")
        rows = [
            (name, str(t.requests), f"{t.tokens:,}", f"${t.cost:,.4f}", f"${t.realtime_cost:,.4f}")
            for name, t in (("realtime", self.realtime), ("batch", self.batch))
        ]
        rows.append(
            (
                "total",
                str(self.requests),
                f"{self.tokens:,}",
                f"${self.total_cost:,.4f}",
                f"${self.all_realtime_cost:,.4f}",
            )
        )
        widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
        lines = [
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
            for row in (header, *rows)
        ]
        lines.append(
            f"saving: ${self.saving:,.4f} ({self.saving_pct:.1f}%) versus sending everything real time"
        )
        duplicates = self.realtime.duplicates + self.batch.duplicates
        if duplicates:
            duplicate_cost = self.realtime.duplicate_cost + self.batch.duplicate_cost
            lines.append(
                f"duplicates: {duplicates} result(s) for requests already answered, "
                f"${duplicate_cost:,.4f} (included in cost)"
            )
        unpriced = self.realtime.unpriced + self.batch.unpriced
        if unpriced:
            models = ", ".join(sorted(self.unknown_models))
            lines.append(f"not priced: {unpriced} request(s) for models with no known price ({models})")
        return "\n".join(lines) + "\n"
