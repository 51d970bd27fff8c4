"""Prices and costs, from the usage the API returned, with exact figures."""

from __future__ import annotations

import pytest
from anthropic.types import CacheCreation, Usage

from router.config import ModelPrice, RouterConfig
from router.pricing import CostSummary, PriceTable, TokenCounts, cost
from router.store.sqlite.usage import usage_counts_sql


def approx(value: float) -> object:
    return pytest.approx(value, rel=1e-12, abs=1e-15)


BUNDLED = PriceTable.bundled()


@pytest.mark.parametrize(
    ("model", "input_price", "output_price"),
    [
        ("claude-opus-4-6", 5.0, 25.0),
        ("claude-opus-4-5", 5.0, 25.0),
        ("claude-opus-4-1", 15.0, 75.0),
        ("claude-opus-4", 15.0, 75.0),
        ("claude-sonnet-4-6", 3.0, 15.0),
        ("claude-sonnet-4-5", 3.0, 15.0),
        ("claude-sonnet-4", 3.0, 15.0),
        ("claude-sonnet-3-7", 3.0, 15.0),
        ("claude-haiku-4-5", 1.0, 5.0),
        ("claude-3-5-haiku", 0.8, 4.0),
        ("claude-3-haiku", 0.25, 1.25),
        # Dated snapshots and aliases resolve to their base entry.
        ("claude-sonnet-4-5-20250929", 3.0, 15.0),
        ("claude-opus-4-20250514", 15.0, 75.0),
        ("claude-opus-4-1-20250805", 15.0, 75.0),
        ("claude-3-5-haiku-latest", 0.8, 4.0),
        ("claude-3-haiku-20240307", 0.25, 1.25),
        ("claude-3-7-sonnet-20250219", 3.0, 15.0),
        ("claude-haiku-4-5@20251001", 1.0, 5.0),
    ],
)
def test_bundled_list_prices(model: str, input_price: float, output_price: float) -> None:
    price = BUNDLED.price(model)
    assert price is not None
    assert (price.input, price.output) == (input_price, output_price)
    assert price.effective_cache_write_5m == approx(1.25 * input_price)
    assert price.effective_cache_write_1h == approx(2.0 * input_price)
    assert price.effective_cache_read == approx(0.1 * input_price)


@pytest.mark.parametrize(
    "model", ["gpt-4", "claude-opus-4-7", "claude-sonnet-4-5x", "claude", "", "claude-unknown-1"]
)
def test_unknown_models_have_no_price(model: str) -> None:
    assert BUNDLED.price(model) is None
    assert BUNDLED.cost(model, {"input_tokens": 10, "output_tokens": 10}, "realtime") is None


def test_longest_prefix_wins() -> None:
    # "claude-opus-4" is also a prefix of this id; the longer key is the right model.
    price = BUNDLED.price("claude-opus-4-5-20251101")
    assert price is not None and price.input == 5.0


def test_plain_input_and_output_cost() -> None:
    usage = {"input_tokens": 1000, "output_tokens": 500}
    # 1000 x $3/M + 500 x $15/M = 0.003 + 0.0075
    assert BUNDLED.cost("claude-sonnet-4-5", usage, "realtime") == approx(0.0105)
    assert BUNDLED.cost("claude-sonnet-4-5", usage, "batch") == approx(0.00525)
    assert cost("claude-sonnet-4-5-20250929", usage, "batch") == approx(0.00525)


def test_cache_split_from_the_sdk_usage_object() -> None:
    usage = Usage(
        input_tokens=100,
        output_tokens=200,
        cache_creation_input_tokens=3000,
        cache_read_input_tokens=10_000,
        cache_creation=CacheCreation(ephemeral_5m_input_tokens=1000, ephemeral_1h_input_tokens=2000),
    )
    # input 100 x 3 = 300; output 200 x 15 = 3000; 5m write 1000 x 3.75 = 3750;
    # 1h write 2000 x 6 = 12000; read 10000 x 0.3 = 3000 -> 22050 / 1e6
    assert BUNDLED.cost("claude-sonnet-4-5", usage, "realtime") == approx(0.02205)
    assert BUNDLED.cost("claude-sonnet-4-5", usage, "batch") == approx(0.011025)


def test_cache_creation_without_split_is_billed_at_the_5m_rate() -> None:
    usage = {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 2000}
    # 2000 x $1.25/M (haiku 4.5: 1.25 x $1)
    assert BUNDLED.cost("claude-haiku-4-5", usage, "realtime") == approx(0.0025)
    nulls = {**usage, "cache_creation": None, "cache_read_input_tokens": None}
    assert BUNDLED.cost("claude-haiku-4-5", nulls, "batch") == approx(0.00125)


def test_token_counts_read_mappings_and_objects_alike() -> None:
    mapping = {
        "input_tokens": 7,
        "output_tokens": 11,
        "cache_creation_input_tokens": 5,
        "cache_read_input_tokens": 3,
        "cache_creation": {"ephemeral_5m_input_tokens": 1, "ephemeral_1h_input_tokens": 4},
    }
    counts = TokenCounts.from_usage(mapping)
    assert counts == TokenCounts(input=7, output=11, cache_write_5m=1, cache_write_1h=4, cache_read=3)
    assert counts.total == 26
    assert TokenCounts.from_usage(Usage.model_validate(mapping)) == counts
    assert TokenCounts.from_usage({}) == TokenCounts()


API_USAGES = [
    {"input_tokens": 7, "output_tokens": 11, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    {
        "input_tokens": 7,
        "output_tokens": 11,
        "cache_creation_input_tokens": 9,
        "cache_read_input_tokens": 3,
        "cache_creation": {"ephemeral_5m_input_tokens": 1, "ephemeral_1h_input_tokens": 4},
    },
    {
        "input_tokens": 7,
        "output_tokens": 11,
        "cache_creation_input_tokens": 2,
        "cache_read_input_tokens": 3,
        "cache_creation": {"ephemeral_5m_input_tokens": 3, "ephemeral_1h_input_tokens": 0},
    },
    {
        "input_tokens": 7,
        "output_tokens": 11,
        "cache_creation_input_tokens": 5,
        "cache_read_input_tokens": 0,
        "cache_creation": None,
        "service_tier": "batch",
    },
]


@pytest.mark.parametrize("usage", API_USAGES)
def test_a_usage_as_the_api_writes_it_counts_as_its_sdk_object_does(usage: dict[str, object]) -> None:
    # A dict of ints is read in one pass (the ingest's every line); an SDK object field by field.
    assert TokenCounts.from_usage(usage) == TokenCounts.from_usage(Usage.model_validate(usage))


def test_overrides_replace_and_add_prices() -> None:
    config = RouterConfig.from_toml_text(
        '[pricing."claude-sonnet-4-5"]\ninput = 2.0\noutput = 10.0\ncache_read = 0.5\n'
        '[pricing."my-finetune"]\ninput = 1.0\noutput = 2.0\n'
    )
    table = PriceTable.bundled().with_overrides(config.pricing)
    usage = {"input_tokens": 1_000_000, "output_tokens": 1_000_000, "cache_read_input_tokens": 1_000_000}
    assert table.cost("claude-sonnet-4-5-20250929", usage, "realtime") == approx(12.5)
    assert table.cost("my-finetune", usage, "batch") == approx(0.5 * (1.0 + 2.0 + 0.1))
    assert table.cost("claude-haiku-4-5", usage, "realtime") == approx(1.0 + 5.0 + 0.1)
    # The bundled table itself is untouched.
    assert PriceTable.bundled().price("my-finetune") is None


def test_explicit_cache_prices() -> None:
    price = ModelPrice(input=3.0, output=15.0, cache_write_5m=4.0, cache_write_1h=7.0, cache_read=0.25)
    table = PriceTable({"m": price})
    usage = {
        "cache_creation_input_tokens": 2_000_000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1_000_000, "ephemeral_1h_input_tokens": 1_000_000},
        "cache_read_input_tokens": 4_000_000,
    }
    assert table.cost("m", usage, "realtime") == approx(4.0 + 7.0 + 1.0)


def test_cost_summary_compares_with_all_realtime() -> None:
    summary = CostSummary()
    usage = {"input_tokens": 1000, "output_tokens": 500}
    assert summary.add("claude-sonnet-4-5", usage, "realtime") == approx(0.0105)
    assert summary.add("claude-sonnet-4-5", usage, "batch") == approx(0.00525)
    assert summary.add("claude-sonnet-4-5", usage, "batch") == approx(0.00525)
    assert summary.add("mystery-model", usage, "batch") is None

    assert summary.realtime.requests == 1 and summary.batch.requests == 3
    assert summary.requests == 4
    assert summary.tokens == 6000
    assert summary.batch.unpriced == 1
    assert summary.unknown_models == {"mystery-model"}
    assert summary.total_cost == approx(0.021)
    assert summary.all_realtime_cost == approx(0.0315)
    assert summary.saving == approx(0.0105)
    assert summary.saving_pct == approx(100.0 / 3.0)
    assert summary.lane("batch").cost == approx(0.0105)
    assert summary.lane("batch").realtime_cost == approx(0.021)

    report = summary.render()
    assert "realtime" in report and "batch" in report and "total" in report
    assert "$0.0210" in report and "$0.0315" in report
    assert "saving: $0.0105 (33.3%)" in report
    assert "mystery-model" in report


def test_cost_summary_takes_aggregated_ledger_rows_and_duplicates() -> None:
    summary = CostSummary()
    # Ten batch calls summed into one ledger row: 10 x (1000 in + 500 out) on sonnet 4.5.
    ten = {"input_tokens": 10_000, "output_tokens": 5_000}
    assert summary.add("claude-sonnet-4-5", ten, "batch", requests=10) == approx(0.0525)
    # One duplicate result: billed, but absent from the all-real-time baseline.
    one = {"input_tokens": 1000, "output_tokens": 500}
    assert summary.add("claude-sonnet-4-5", one, "batch", requests=1, duplicate=True) == approx(0.00525)
    assert summary.batch.requests == 10
    assert summary.batch.duplicates == 1
    assert summary.batch.duplicate_cost == approx(0.00525)
    assert summary.total_cost == approx(0.05775)
    assert summary.all_realtime_cost == approx(0.105)
    assert summary.saving == approx(0.04725)
    assert summary.saving_pct == approx(45.0)
    report = summary.render()
    assert "saving: $0.0473 (45.0%)" in report
    assert "duplicates: 1 result(s) for requests already answered, $0.005" in report


def test_empty_summary() -> None:
    summary = CostSummary()
    assert summary.saving == 0.0
    assert summary.saving_pct == 0.0
    assert "saving: $0.0000 (0.0%)" in summary.render()


USAGES = [
    {"input_tokens": 11, "output_tokens": 3},
    {"input_tokens": 11, "output_tokens": 3, "cache_read_input_tokens": 2, "cache_creation_input_tokens": 5},
    {
        "input_tokens": 1,
        "output_tokens": 2,
        "cache_creation_input_tokens": 5,
        "cache_creation": {"ephemeral_5m_input_tokens": 1, "ephemeral_1h_input_tokens": 4},
    },
    # A split that accounts for more than the total, or for part of it.
    {"cache_creation_input_tokens": 2, "cache_creation": {"ephemeral_5m_input_tokens": 3}},
    {"cache_creation_input_tokens": 9, "cache_creation": {"ephemeral_1h_input_tokens": 4}},
    {"cache_creation_input_tokens": 9, "cache_creation": None},
    # Odd values: floats truncate; booleans, strings, nulls and objects count 0.
    {
        "input_tokens": 7.9,
        "output_tokens": True,
        "cache_read_input_tokens": "12",
        "cache_creation_input_tokens": None,
    },
    {"input_tokens": {"n": 1}, "output_tokens": [1], "cache_creation": 5},
    {},
]


@pytest.mark.parametrize("usage", USAGES)
def test_sql_mirror_of_from_usage_counts_the_same(usage: dict[str, object]) -> None:
    # Ingest reads usage inside SQLite (router/store/sqlite/ingest.py); the SQL must say what Python says.
    import json
    import sqlite3

    at = {name: f"$.{name}" for name in TokenCounts.USAGE_FIELDS}
    sql = "SELECT " + ", ".join(usage_counts_sql("?1", at))
    got = sqlite3.connect(":memory:").execute(sql, (json.dumps(usage),)).fetchone()
    want = TokenCounts.from_usage(usage)
    assert got == (want.input, want.output, want.cache_write_5m, want.cache_write_1h, want.cache_read)
