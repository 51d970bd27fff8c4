"""Prompt-cache figures of deferred requests, per prefix group and per tag, from returned usage.

For each group (requests sharing a cacheable prefix, router/prefix.py) and each tag:

- cache read and written tokens, as the API returned them;
- uncached prefix tokens: the prefix billed as plain input. A group's prefix size is the
  most cache tokens (read + written) one of its results returned; a group none of whose
  results touched the cache has its calibrated estimate instead;
- hit rate: the share of results that read the cache;
- prefix cost as a percentage of list: what the prefix tokens cost (batch price, cache
  rates) against the same tokens at the real-time input price with no cache;
- not cacheable (too short): requests of groups whose prefix is below the model's minimum
  cacheable length, which the router sends as they are (whatever an API that caches them
  anyway returned).
"""

from __future__ import annotations

import fnmatch
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .config import RouterConfig
from .grouping import Calibration
from .pricing import BATCH_DISCOUNT, PriceTable
from .store import StoreEngine

_PER_TOKEN = 1e-6


@dataclass
class CacheLine:
    """Cache figures of one prefix group, one tag, or all of them."""

    name: str
    model: str = ""
    requests: int = 0
    hits: int = 0
    read: int = 0
    write_5m: int = 0
    write_1h: int = 0
    uncached_prefix: int = 0
    too_short: int = 0
    prefix_cost: float = 0.0  # USD the prefix tokens cost
    prefix_list: float = 0.0  # USD they would cost at the real-time input price, uncached
    unpriced: int = 0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.requests if self.requests else 0.0

    @property
    def prefix_pct(self) -> float | None:
        return 100.0 * self.prefix_cost / self.prefix_list if self.prefix_list > 0 else None

    def add(self, other: CacheLine) -> None:
        self.requests += other.requests
        self.hits += other.hits
        self.read += other.read
        self.write_5m += other.write_5m
        self.write_1h += other.write_1h
        self.uncached_prefix += other.uncached_prefix
        self.too_short += other.too_short
        self.prefix_cost += other.prefix_cost
        self.prefix_list += other.prefix_list
        self.unpriced += other.unpriced


@dataclass
class CacheReport:
    """Cache figures by prefix group, by tag, and in all."""

    groups: list[CacheLine]
    tags: list[CacheLine]
    total: CacheLine

    def render(self) -> str:
        """The report's cache section ("" when no deferred request marked a prefix)."""
        if not self.groups:
            return ""
        lines = ["Prompt cache (batch results of requests that mark a cacheable prefix)"]
        lines += _table("group", self.groups)
        lines.append("")
        lines += _table("tag", self.tags)
        if self.total.too_short:
            short = sum(1 for g in self.groups if g.too_short)
            lines.append(
                f"not cacheable (too short): {self.total.too_short} request(s) in {short} group(s),"
                " below the model's minimum cacheable prefix; sent as they were"
            )
        if self.total.unpriced:
            lines.append(f"not priced: {self.total.unpriced} request(s) of models with no known price")
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        def line(c: CacheLine) -> dict[str, Any]:
            return {
                "name": c.name,
                "model": c.model,
                "requests": c.requests,
                "hit_rate": round(c.hit_rate, 4),
                "cache_read_tokens": c.read,
                "cache_write_tokens": c.write_5m + c.write_1h,
                "uncached_prefix_tokens": c.uncached_prefix,
                "prefix_cost_pct_of_list": None if c.prefix_pct is None else round(c.prefix_pct, 2),
                "not_cacheable_too_short": c.too_short,
            }

        return {
            "groups": [line(g) for g in self.groups],
            "tags": [line(t) for t in self.tags],
            "total": line(self.total),
        }


def _table(first: str, rows: Iterable[CacheLine]) -> list[str]:
    header: tuple[str, ...] = (first, "model", "requests", "hit rate", "read", "written", "uncached prefix")
    header += ("prefix % of list",)
    body = [
        (
            r.name,
            r.model,
            f"{r.requests:,}",
            f"{100 * r.hit_rate:.1f}%",
            f"{r.read:,}",
            f"{r.write_5m + r.write_1h:,}",
            f"{r.uncached_prefix:,}",
            "-" if r.prefix_pct is None else f"{r.prefix_pct:.1f}%",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in (header, *body)) for i in range(len(header))]
    lines = []
    for row in (header, *body):
        pairs = enumerate(zip(row, widths, strict=True))
        cells = (c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in pairs)
        lines.append("  " + "  ".join(cells))
    return lines


async def cache_report(store: StoreEngine, config: RouterConfig) -> CacheReport:
    """The cache figures of the store's billed batch results, at the configured prices."""
    prices = PriceTable.bundled().with_overrides(config.pricing)
    calibration = Calibration.from_sums(await store.cache_calibration())
    return report_of(await store.cache_figures(), prices, calibration)


def report_of(rows: Iterable[Mapping[str, Any]], prices: PriceTable, calibration: Calibration) -> CacheReport:
    """A CacheReport of `StoreEngine.cache_figures` rows."""
    rows = list(rows)
    size: dict[str, int] = {}
    for row in rows:
        key = str(row["prefix_key"])
        size[key] = max(size.get(key, 0), int(row["cached"] or 0))
    groups: dict[str, CacheLine] = {}
    tags: dict[str, CacheLine] = {}
    total = CacheLine("all")
    for row in rows:
        key, model = str(row["prefix_key"]), str(row["model"])
        requests = int(row["requests"] or 0)
        prefix = size[key] or calibration.tokens(model, int(row["prefix_tokens"] or 0))
        minimum = prices.min_cacheable(model)
        line = CacheLine(
            key[:12],
            model,
            requests=requests,
            hits=int(row["hits"] or 0),
            read=int(row["cache_read"] or 0),
            write_5m=int(row["cache_write_5m"] or 0),
            write_1h=int(row["cache_write_1h"] or 0),
            uncached_prefix=requests * max(0, prefix - int(row["cached"] or 0)),
            too_short=requests if minimum is not None and prefix < minimum else 0,
        )
        price = prices.price(model)
        if price is None:
            line.unpriced = requests
        else:
            line.prefix_cost = (
                BATCH_DISCOUNT
                * _PER_TOKEN
                * (
                    line.read * price.effective_cache_read
                    + line.write_5m * price.effective_cache_write_5m
                    + line.write_1h * price.effective_cache_write_1h
                    + line.uncached_prefix * price.input
                )
            )
            line.prefix_list = _PER_TOKEN * requests * prefix * price.input
        groups.setdefault(key, CacheLine(key[:12], model)).add(line)
        tag = row["tag"] if row["tag"] is not None else "(no tag)"
        tags.setdefault(tag, CacheLine(tag, model)).add(line)
        total.add(line)
    models: dict[str, set[str]] = {}
    for row in rows:
        models.setdefault(row["tag"] if row["tag"] is not None else "(no tag)", set()).add(str(row["model"]))
    for name, tag_line in tags.items():
        tag_line.model = next(iter(models[name])) if len(models[name]) == 1 else "(several)"
    return CacheReport(list(groups.values()), sorted(tags.values(), key=lambda t: t.name), total)


async def typical_prefixes(store: StoreEngine, config: RouterConfig, limit: int = 5000) -> str:
    """`validate --store`: the typical marked prefix of each class, tag and model among the
    latest `limit` stored requests (the median of their calibrated estimates) against the
    model's minimum cacheable length, naming the rules that route that tag to that class."""
    prices = PriceTable.bundled().with_overrides(config.pricing)
    calibration = Calibration.from_sums(await store.cache_calibration())
    sizes: dict[tuple[str, str | None, str], list[int]] = {}
    for latency, tag, model, tokens in await store.prefix_sizes(limit):
        sizes.setdefault((latency, tag, model), []).append(calibration.tokens(model, tokens))
    title = f"Typical cached prefixes (median of the latest {limit:,} stored requests that mark one)"
    if not sizes:
        return f"{title}\n  (none stored yet: prefix sizes are known once requests are stored)\n"
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    for (latency, tag, model), values in sorted(sizes.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        typical = int(statistics.median(values))
        minimum = prices.min_cacheable(model)
        rules = [
            f"rules[{i}]"
            for i, rule in enumerate(config.rules)
            if tag is not None
            and rule.class_ == latency
            and (rule.tag is None or fnmatch.fnmatchcase(tag, rule.tag))
            and (rule.model is None or fnmatch.fnmatchcase(model, rule.model))
            and (rule.provider is None or fnmatch.fnmatchcase("anthropic", rule.provider))
        ]
        rows.append(
            (
                latency,
                tag or "-",
                ", ".join(rules) or "-",
                model,
                f"{len(values):,}",
                f"{typical:,}",
                f"{minimum:,}" if minimum is not None else "?",
            )
        )
        if minimum is not None and typical < minimum:
            named = (
                f"class {latency}"
                + (f", tag {tag}" if tag else "")
                + (f" ({', '.join(rules)})" if rules else "")
            )
            notes.append(
                f"  note: {named}: the typical marked prefix (~{typical:,} tokens) is below {model}'s minimum"
                f" cacheable length ({minimum:,}); such requests are sent as they are, never cached"
            )
    header = ("class", "tag", "rules", "model", "requests", "typical tokens", "minimum")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = [title]
    for row in (header, *rows):
        pairs = enumerate(zip(row, widths, strict=True))
        lines.append("  " + "  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in pairs))
    return "\n".join([*lines, *notes]) + "\n"
