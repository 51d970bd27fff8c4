"""The cost report: what was billed per lane, per day and per tag, against sending everything
real time; where real-time calls could have gone through a batch; how long batches took.

Every figure comes from the store's history (`StoreEngine.history_rows`: the ledger rows
still kept plus the daily totals of purged ones), priced with the configured prices, so a
purge changes nothing here. `Report` holds the figures once; the terminal text
(`render_text`, a sequence of sections), `report --json` (`Report.to_json`) and the HTML page
(router/report_html.py) all show that one object.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import LatencyClass, RouterConfig
from .pricing import CostSummary, PriceTable
from .store import StoreEngine
from .units import format_duration

DAY = 86400.0
# The turnaround samples a report reads: every one the store keeps, up to this many.
TURNAROUND_LIMIT = 100_000
PERCENTILES = (50, 90, 99)


async def cost_summary(store: StoreEngine, config: RouterConfig) -> CostSummary:
    """Sum the ledger's history (usage as the API returned it) into a CostSummary with the
    configured prices."""
    return summary_of(billed(await store.history_rows(-math.inf)), config)


def billed(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows of succeeded results: the calls the API billed."""
    return [r for r in rows if r["result_type"] == "succeeded"]


def summary_of(rows: Iterable[Mapping[str, Any]], config: RouterConfig) -> CostSummary:
    """A CostSummary of billed ledger sums (rows with `Store.ledger_totals`' keys), configured prices."""
    summary = CostSummary(prices=prices_of(config))
    for row in rows:
        add_row(summary, row, row["lane"])
    return summary


def prices_of(config: RouterConfig) -> PriceTable:
    """The bundled list prices with the config's `[pricing]` overrides."""
    return PriceTable.bundled().with_overrides(config.pricing)


def add_row(summary: CostSummary, row: Mapping[str, Any], lane: str) -> None:
    """Add one ledger sum to `summary` as if its calls went through `lane`."""
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
        row["model"],
        usage,
        "batch" if lane == "batch" else "realtime",
        requests=int(row["requests"] or 0),
        duplicate=bool(row["duplicate"]),
    )


# ---------------------------------------------------------------------------- the figures


@dataclass(frozen=True)
class DaySpend:
    """What one UTC day cost per lane, and what all-real-time would have cost."""

    day: float  # start of the day, epoch seconds
    realtime: float
    batch: float
    all_realtime: float

    @property
    def date(self) -> str:
        return time.strftime("%Y-%m-%d", time.gmtime(self.day))


@dataclass(frozen=True)
class TagFigures:
    """One tag's calls, lane mix, cost and saving, share of input read from the cache, and deadlines."""

    tag: str | None
    calls: int  # billed calls, duplicates left out
    realtime_calls: int
    batch_calls: int
    cost: float
    all_realtime: float
    cache_hit_rate: float | None  # input tokens read from the cache / all input tokens
    escalated: int  # deferred calls a deadline sent real time
    missed: int  # requests finished after their deadline, or failed for it

    @property
    def saving(self) -> float:
        return self.all_realtime - self.cost


@dataclass(frozen=True)
class ProviderFigures:
    """One provider's billed calls and what they cost. `cost` is None when none of its
    calls has a known price: unknown, never zero."""

    provider: str
    calls: int
    cost: float | None
    all_realtime: float | None
    unpriced: int  # calls whose model no price table knows
    unknown_models: tuple[str, ...]

    @property
    def saving(self) -> float | None:
        if self.cost is None or self.all_realtime is None:
            return None
        return self.all_realtime - self.cost


@dataclass(frozen=True)
class ClassOption:
    """What a tag's real-time calls would have cost through one batch class."""

    name: str
    flushes: str  # when the class flushes, in words
    cost: float
    saving: float


@dataclass(frozen=True)
class Opportunity:
    """A tag whose calls went real time, and what they would have cost on the batch path."""

    tag: str | None
    calls: int
    escalated: int
    cost: float
    options: tuple[ClassOption, ...]


@dataclass(frozen=True)
class ModelTurnaround:
    """Batch turnaround (API created -> ended) of one model: percentiles and a histogram."""

    model: str
    batches: int
    percentiles: dict[int, float]  # p50, p90, p99 in seconds
    bounds: tuple[float, ...]  # the histogram's buckets' upper bounds, seconds
    histogram: tuple[int, ...]  # batches at most each bound (above the one before), then above the last


@dataclass
class Report:
    """Every figure of one report."""

    generated_at: float
    since_day: float | None
    summary: CostSummary
    days: list[DaySpend] = field(default_factory=list)
    tags: list[TagFigures] = field(default_factory=list)
    providers: list[ProviderFigures] = field(default_factory=list)
    opportunities: list[Opportunity] = field(default_factory=list)
    turnarounds: list[ModelTurnaround] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The figures as plain JSON values (`report --json`)."""
        s = self.summary
        return {
            "generated_at": self.generated_at,
            "since": _date(self.since_day) if self.since_day is not None else None,
            "totals": {
                "requests": s.requests,
                "tokens": s.tokens,
                "cost": s.total_cost,
                "all_realtime": s.all_realtime_cost,
                "saving": s.saving,
                "saving_pct": s.saving_pct,
                "lanes": {
                    name: {
                        "requests": t.requests,
                        "tokens": t.tokens,
                        "cost": t.cost,
                        "all_realtime": t.realtime_cost,
                        "duplicates": t.duplicates,
                        "duplicate_cost": t.duplicate_cost,
                        "unpriced": t.unpriced,
                    }
                    for name, t in (("realtime", s.realtime), ("batch", s.batch))
                },
                "unknown_models": sorted(s.unknown_models),
            },
            "days": [
                {
                    "date": d.date,
                    "realtime": d.realtime,
                    "batch": d.batch,
                    "all_realtime": d.all_realtime,
                }
                for d in self.days
            ],
            "providers": [
                {
                    "provider": p.provider,
                    "calls": p.calls,
                    "cost": p.cost,
                    "all_realtime": p.all_realtime,
                    "saving": p.saving,
                    "unpriced": p.unpriced,
                    "unknown_models": list(p.unknown_models),
                }
                for p in self.providers
            ],
            "tags": [
                {
                    "tag": t.tag,
                    "calls": t.calls,
                    "realtime_calls": t.realtime_calls,
                    "batch_calls": t.batch_calls,
                    "cost": t.cost,
                    "all_realtime": t.all_realtime,
                    "saving": t.saving,
                    "cache_hit_rate": t.cache_hit_rate,
                    "escalated": t.escalated,
                    "missed": t.missed,
                }
                for t in self.tags
            ],
            "opportunities": [
                {
                    "tag": o.tag,
                    "calls": o.calls,
                    "escalated": o.escalated,
                    "cost": o.cost,
                    "classes": [
                        {"class": c.name, "flushes": c.flushes, "cost": c.cost, "saving": c.saving}
                        for c in o.options
                    ],
                }
                for o in self.opportunities
            ],
            "turnarounds": [
                {
                    "model": m.model,
                    "batches": m.batches,
                    **{f"p{p}": m.percentiles[p] for p in PERCENTILES},
                    "histogram": [
                        {"at_most": bound, "batches": n}
                        for bound, n in zip((*m.bounds, None), m.histogram, strict=True)
                    ],
                }
                for m in self.turnarounds
            ],
        }


async def build_report(
    store: StoreEngine, config: RouterConfig, *, since: float | None = None, now: float | None = None
) -> Report:
    """The report of everything from the UTC day of `since` on (everything, when None)."""
    now = time.time() if now is None else now
    since_day = day_of(since) if since is not None else None
    rows = await store.history_rows(since_day if since_day is not None else -math.inf)
    turnarounds = await store.recent_turnarounds(TURNAROUND_LIMIT)
    return report_of(rows, turnarounds, config, since_day=since_day, now=now)


def report_of(
    rows: Sequence[Mapping[str, Any]],
    turnarounds: Sequence[tuple[str, float]],
    config: RouterConfig,
    *,
    since_day: float | None,
    now: float,
) -> Report:
    """The figures of history rows (`StoreEngine.history_rows`) and (model, seconds) turnarounds."""
    from .observe import TURNAROUND_BUCKETS  # the metrics' buckets; observe.py imports this module

    paid = billed(rows)
    return Report(
        generated_at=now,
        since_day=since_day,
        summary=summary_of(paid, config),
        days=_days(paid, config, since_day, now),
        tags=_tags(rows, config),
        providers=_providers(paid, config),
        opportunities=_opportunities(paid, config),
        turnarounds=_turnarounds(turnarounds, TURNAROUND_BUCKETS),
    )


def day_of(at: float) -> float:
    """The start of the UTC day of `at`."""
    return math.floor(at / DAY) * DAY


def _date(day: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day))


def _tag(row: Mapping[str, Any]) -> str | None:
    return row["tag"] or None


def _days(
    rows: Sequence[Mapping[str, Any]], config: RouterConfig, since_day: float | None, now: float
) -> list[DaySpend]:
    by_day: dict[float, CostSummary] = {}
    for row in rows:
        day = float(row["day"])
        if day not in by_day:
            by_day[day] = CostSummary(prices=prices_of(config))
        add_row(by_day[day], row, row["lane"])
    if not by_day:
        return []
    first = since_day if since_day is not None else min(by_day)
    last = max(max(by_day), day_of(now))
    empty = CostSummary()
    out: list[DaySpend] = []
    day = first
    while day <= last:  # every day of the range, spent on or not, so the chart's axis is even
        s = by_day.get(day, empty)
        out.append(DaySpend(day, s.realtime.cost, s.batch.cost, s.all_realtime_cost))
        day += DAY
    return out


def _providers(paid: Sequence[Mapping[str, Any]], config: RouterConfig) -> list[ProviderFigures]:
    by_provider: dict[str, list[Mapping[str, Any]]] = {}
    for row in paid:
        by_provider.setdefault(str(row.get("provider") or "anthropic"), []).append(row)
    out = []
    for name in sorted(by_provider):
        s = summary_of(by_provider[name], config)
        unpriced = s.realtime.unpriced + s.batch.unpriced
        priced = s.requests + s.realtime.duplicates + s.batch.duplicates - unpriced > 0
        out.append(
            ProviderFigures(
                provider=name,
                calls=s.requests,
                cost=s.total_cost if priced else None,
                all_realtime=s.all_realtime_cost if priced else None,
                unpriced=unpriced,
                unknown_models=tuple(sorted(s.unknown_models)),
            )
        )
    return out


def _tags(rows: Sequence[Mapping[str, Any]], config: RouterConfig) -> list[TagFigures]:
    grouped: dict[str | None, list[Mapping[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(_tag(row), []).append(row)
    out: list[TagFigures] = []
    for tag, group in grouped.items():
        paid = billed(group)
        summary = summary_of(paid, config)
        read = sum(int(r["cache_read"] or 0) for r in paid)
        uncached = sum(
            int(r["input_tokens"] or 0) + int(r["cache_write_5m"] or 0) + int(r["cache_write_1h"] or 0)
            for r in paid
        )
        out.append(
            TagFigures(
                tag=tag,
                calls=summary.requests,
                realtime_calls=summary.realtime.requests,
                batch_calls=summary.batch.requests,
                cost=summary.total_cost,
                all_realtime=summary.all_realtime_cost,
                cache_hit_rate=read / (read + uncached) if read + uncached else None,
                escalated=sum(int(r["escalated"] or 0) for r in group),
                missed=sum(int(r["missed"] or 0) for r in group),
            )
        )
    out.sort(key=lambda t: (-t.cost, t.tag or ""))
    return out


def flushes(cls: LatencyClass) -> str:
    """When a batch class flushes, in words."""
    parts = []
    if cls.every is not None:
        parts.append(f"every {format_duration(cls.every)}")
    if cls.cron is not None:
        parts.append(f"cron {cls.cron}")
    if cls.max_wait is not None:
        parts.append(f"waits at most {format_duration(cls.max_wait)}")
    if cls.deadline is not None:
        parts.append(f"deadline {format_duration(cls.deadline)}")
    return ", ".join(parts) or "on demand"


def _opportunities(rows: Sequence[Mapping[str, Any]], config: RouterConfig) -> list[Opportunity]:
    realtime: dict[str | None, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row["lane"] != "batch" and not row["duplicate"]:
            realtime.setdefault(_tag(row), []).append(row)
    classes = [c for c in config.classes.values() if c.is_batch]
    out: list[Opportunity] = []
    for tag, group in realtime.items():
        now = summary_of(group, config)
        if not now.requests:
            continue
        batched = CostSummary(prices=prices_of(config))
        for row in group:
            add_row(batched, row, "batch")
        options = tuple(
            ClassOption(c.name, flushes(c), batched.total_cost, now.total_cost - batched.total_cost)
            for c in classes
        )
        out.append(
            Opportunity(
                tag=tag,
                calls=now.requests,
                escalated=sum(int(r["escalated"] or 0) for r in group),
                cost=now.total_cost,
                options=options,
            )
        )
    out.sort(key=lambda o: (-o.cost, o.tag or ""))
    return out


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The nearest-rank percentile of ascending values (the smallest value with p % at or below)."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _turnarounds(samples: Sequence[tuple[str, float]], bounds: tuple[float, ...]) -> list[ModelTurnaround]:
    by_model: dict[str, list[float]] = {}
    for model, seconds in samples:
        by_model.setdefault(model, []).append(float(seconds))
    out: list[ModelTurnaround] = []
    for model in sorted(by_model):
        values = sorted(by_model[model])
        histogram = [0] * (len(bounds) + 1)
        for v in values:
            histogram[bisect.bisect_left(bounds, v)] += 1  # the first bound >= v
        out.append(
            ModelTurnaround(
                model=model,
                batches=len(values),
                percentiles={p: percentile(values, p) for p in PERCENTILES},
                bounds=bounds,
                histogram=tuple(histogram),
            )
        )
    return out


# ---------------------------------------------------------------------------- the terminal text


def money(usd: float) -> str:
    return f"${usd:,.4f}"


def share(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.0f}%" if whole else "-"


def tag_name(tag: str | None) -> str:
    return tag if tag is not None else "(no tag)"


def seconds_text(seconds: float) -> str:
    """A turnaround in the units a person reads: 42s, 13m, 2.5h."""
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def text_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns padded to their widest cell: the first left-aligned, the others right-aligned."""
    body = [tuple(header), *(tuple(r) for r in rows)]
    widths = [max(len(row[i]) for row in body) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in body
    )


def tag_rows(report: Report) -> list[tuple[str, ...]]:
    """The per-tag table's cells, as the terminal and the HTML page show them."""
    return [
        (
            tag_name(t.tag),
            f"{t.calls:,}",
            f"{share(t.realtime_calls, t.calls)} / {share(t.batch_calls, t.calls)}",
            money(t.cost),
            money(t.saving),
            f"{100.0 * t.cache_hit_rate:.1f}%" if t.cache_hit_rate is not None else "-",
            f"{t.escalated:,}",
            f"{t.missed:,}",
        )
        for t in report.tags
    ]


def provider_rows(report: Report) -> list[tuple[str, ...]]:
    """The per-provider table's cells: a cost no price is known for reads "unknown"."""

    def priced(usd: float | None, unpriced: int) -> str:
        if usd is None:
            return "unknown"
        return money(usd) + (f" + unknown ({unpriced:,} unpriced)" if unpriced else "")

    return [
        (
            p.provider,
            f"{p.calls:,}",
            priced(p.cost, p.unpriced),
            priced(p.all_realtime, p.unpriced),
            priced(p.saving, p.unpriced),
        )
        for p in report.providers
    ]


PROVIDER_HEADER = ("provider", "calls", "cost", "all real time", "saving")

TAG_HEADER = ("tag", "calls", "real time / batch", "cost", "saving", "input cached", "escalated", "missed")


def opportunity_header(report: Report) -> tuple[str, ...]:
    names = report.opportunities[0].options if report.opportunities else ()
    return ("tag", "real-time calls", "escalated", "cost", *(f"as {c.name}" for c in names))


def opportunity_rows(report: Report) -> list[tuple[str, ...]]:
    return [
        (
            tag_name(o.tag),
            f"{o.calls:,}",
            f"{o.escalated:,}",
            money(o.cost),
            *(f"{money(c.cost)} (saves {money(c.saving)})" for c in o.options),
        )
        for o in report.opportunities
    ]


TURNAROUND_HEADER = ("model", "batches", *(f"p{p}" for p in PERCENTILES))


def turnaround_rows(report: Report) -> list[tuple[str, ...]]:
    return [
        (m.model, f"{m.batches:,}", *(seconds_text(m.percentiles[p]) for p in PERCENTILES))
        for m in report.turnarounds
    ]


def _totals_text(report: Report) -> str:
    return report.summary.render()


def _providers_text(report: Report) -> str:
    # One provider's figures are the totals already shown.
    if len(report.providers) < 2:
        return ""
    return "by provider\n" + text_table(PROVIDER_HEADER, provider_rows(report)) + "\n"


def _tags_text(report: Report) -> str:
    if not report.tags:
        return ""
    return "by tag\n" + text_table(TAG_HEADER, tag_rows(report)) + "\n"


def _opportunities_text(report: Report) -> str:
    if not report.opportunities:
        return ""
    return (
        "opportunities: tags whose calls went real time, at each batch class's price\n"
        + text_table(opportunity_header(report), opportunity_rows(report))
        + "\n"
    )


def _turnarounds_text(report: Report) -> str:
    if not report.turnarounds:
        return ""
    return (
        "batch turnaround (every batch on record)\n"
        + text_table(TURNAROUND_HEADER, turnaround_rows(report))
        + "\n"
    )


# The terminal report, section by section; an empty section is left out.
TEXT_SECTIONS: list[Callable[[Report], str]] = [
    _totals_text,
    _providers_text,
    _tags_text,
    _opportunities_text,
    _turnarounds_text,
]


def render_text(report: Report) -> str:
    """The terminal report: the lane totals, then the tags, opportunities and turnarounds."""
    return "\n".join(text for section in TEXT_SECTIONS if (text := section(report)))
