"""The cost report: what was billed per lane, against sending everything real time."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .config import RouterConfig
from .pricing import CostSummary, PriceTable
from .store import StoreEngine


async def cost_summary(store: StoreEngine, config: RouterConfig) -> CostSummary:
    """Sum the ledger (usage as the API returned it) into a CostSummary with the configured prices."""
    return summary_of(await store.ledger_totals(), config)


def summary_of(rows: Iterable[Mapping[str, Any]], config: RouterConfig) -> CostSummary:
    """A CostSummary of billed ledger sums (rows with `Store.ledger_totals`' keys), configured prices."""
    summary = CostSummary(prices=PriceTable.bundled().with_overrides(config.pricing))
    for row in rows:
        usage = {
            "input_tokens": row["input_tokens"] or 0,
            "output_tokens": row["output_tokens"] or 0,
            "cache_read_input_tokens": row["cache_read"] or 0,
            "cache_creation_input_tokens": (row["cache_write_5m"] or 0) + (row["cache_write_1h"] or 0),
            "cache_creation": {
                "ephemeral_5m_input_tokens": row["cache_write_5m"] or 0,
                "ephemeral_1h_input_tokens": row["cache_write_1h"] or 0,
            },
        }
        summary.add(
            row["model"], usage, row["lane"], requests=row["requests"], duplicate=bool(row["duplicate"])
        )
    return summary


# ---------------------------------------------------------------- prompt cache (router/cache_report.py)


async def cache_section(store: StoreEngine, config: RouterConfig) -> str:
    """The report's prompt-cache section, per prefix group and per tag ("" when no deferred
    request marked a cacheable prefix)."""
    from .cache_report import cache_report

    return (await cache_report(store, config)).render()
