"""Which latency class a call belongs to, and the text view of the effective policy."""

from __future__ import annotations

import difflib
from fnmatch import fnmatchcase

from router.config import LatencyClass, RouterConfig, Rule
from router.errors import InvalidRequestError
from router.units import format_duration, format_size

__all__ = ["Policy", "format_effective_policy"]


def _matches(glob: str | None, value: str | None) -> bool:
    """A rule's glob matches the call's value; a glob it does not give matches anything."""
    if glob is None:
        return True
    return value is not None and fnmatchcase(value, glob)


class Policy:
    """Resolves a call's latency class from its explicit `latency`, its tag and model, or the default."""

    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self._classes = dict(config.classes)
        self._rules = tuple(config.rules)
        self._default = self._classes[config.router.default_class]

    @property
    def class_names(self) -> tuple[str, ...]:
        """Every defined class name, sorted."""
        return tuple(sorted(self._classes))

    def resolve(
        self,
        latency: str | None,
        tag: str | None = None,
        model: str | None = None,
        *,
        provider: str = "anthropic",
    ) -> LatencyClass:
        """The class for a call: `latency` if given, else the first matching rule, else the default class.

        Raises InvalidRequestError when `latency` names no defined class.
        """
        if latency is not None:
            return self._named(latency)
        rule = self.matching_rule(tag, model, provider=provider)
        if rule is not None:
            return self._classes[rule.class_]
        return self._default

    def matching_rule(
        self, tag: str | None, model: str | None = None, *, provider: str = "anthropic"
    ) -> Rule | None:
        """The first rule whose globs (tag, model, provider: those it gives) all match."""
        for rule in self._rules:
            # Case-sensitive on every platform: routing must not depend on the OS.
            if not _matches(rule.tag, tag) or not _matches(rule.model, model):
                continue
            if not _matches(rule.provider, provider):
                continue
            return rule
        return None

    def _named(self, latency: object) -> LatencyClass:
        found = self._classes.get(latency) if isinstance(latency, str) else None
        if found is not None:
            return found
        # Only a bad name gets here: the error text is built for it alone (not per call).
        known = ", ".join(f'"{name}"' for name in self.class_names)
        if not isinstance(latency, str):
            raise InvalidRequestError(
                f"latency: expected the name of a latency class ({known}), got {latency!r}"
            )
        close = difflib.get_close_matches(latency, self.class_names, n=1)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        raise InvalidRequestError(
            f'latency: unknown latency class "{latency}"{hint}; expected one of: {known}'
        )


def _triggers(latency_class: LatencyClass) -> str:
    parts: list[str] = []
    if latency_class.every is not None:
        parts.append(f"every {format_duration(latency_class.every)}")
    if latency_class.cron is not None:
        parts.append(f"cron '{latency_class.cron}' {latency_class.timezone}")
    if latency_class.max_pending is not None:
        parts.append(f"max_pending {latency_class.max_pending}")
    if latency_class.max_pending_bytes is not None:
        parts.append(f"max_pending_bytes {format_size(latency_class.max_pending_bytes)}")
    if latency_class.max_wait is not None:
        parts.append(f"max_wait {format_duration(latency_class.max_wait)}")
    return "; ".join(parts) or "-"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return [
        (indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))).rstrip()
        for row in (header, *rows)
    ]


def _deadline_warnings(config: RouterConfig) -> list[str]:
    """Classes whose deadline the turnaround prior cannot meet: their requests go real time at first."""
    batch = config.batch
    needed = batch.turnaround_prior + batch.deadline_margin
    out: list[str] = []
    for latency_class in config.classes.values():
        if latency_class.is_batch and latency_class.deadline is not None and latency_class.deadline <= needed:
            out.append(
                f"  note: {latency_class.name}: deadline {format_duration(latency_class.deadline)}"
                f" <= turnaround prior {format_duration(batch.turnaround_prior)} + margin"
                f" {format_duration(batch.deadline_margin)}; its requests go real time until batch history"
                " shows batches fast enough ([batch] turnaround_prior)"
            )
    return out


def _cache_rows(config: RouterConfig) -> tuple[list[tuple[str, ...]], list[str]]:
    """The batch classes' prompt-caching settings, and notes on classes whose deadline leaves no
    room for priming (two batch turnarounds) or for the group wait (see router/grouping.py)."""
    batch = config.batch
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    for c in config.classes.values():
        if not c.is_batch or c.deadline is None:
            continue
        wait = c.cache_group_wait
        priming = f"{c.cache_priming} (>= {c.cache_prime_min})" if c.cache_priming == "batch" else "off"
        rows.append((c.name, c.cache_ttl, priming, format_duration(wait) if wait else "-"))
        primed = 2 * batch.turnaround_prior + batch.deadline_margin
        if c.cache_priming == "batch" and "cache_priming" in c.model_fields_set and c.deadline <= primed:
            notes.append(
                f'  note: {c.name}: cache_priming = "batch" but its deadline {format_duration(c.deadline)}'
                " leaves no room for priming (two batch turnarounds of"
                f" {format_duration(batch.turnaround_prior)} + margin"
                f" {format_duration(batch.deadline_margin)}); its groups are sent unprimed"
            )
        if wait is not None and c.deadline <= wait + batch.turnaround_prior + batch.deadline_margin:
            notes.append(
                f"  note: {c.name}: cache_group_wait {format_duration(wait)} does not fit before its deadline"
                f" {format_duration(c.deadline)} with one batch turnaround and the margin; groups do not wait"
            )
    return rows, notes


def format_effective_policy(config: RouterConfig, source: str) -> str:
    """Plain-text tables of classes, rules, batch limits and store settings, for `hybrid-router validate`."""
    lines = [f"hybrid-router effective policy (from {source})", ""]

    class_rows: list[tuple[str, ...]] = []
    for latency_class in config.classes.values():
        if latency_class.is_batch:
            deadline = format_duration(latency_class.deadline) if latency_class.deadline is not None else "-"
            row: tuple[str, ...] = (
                deadline,
                _triggers(latency_class),
                latency_class.on_deadline_risk,
                str(latency_class.max_attempts),
                "-",
            )
        else:
            on_rate_limit: str = latency_class.on_rate_limit
            if on_rate_limit == "defer":
                on_rate_limit = f"defer -> {latency_class.defer_class}"
            row = ("-", "-", "-", "-", on_rate_limit)
        class_rows.append((latency_class.name, latency_class.route, *row))
    lines.append("Classes")
    lines += _table(
        ("name", "route", "deadline", "triggers", "on_deadline_risk", "max_attempts", "on_rate_limit"),
        class_rows,
    )
    lines += _deadline_warnings(config)
    lines.append("")

    default = config.router.default_class
    lines.append(f'Rules (first match wins; calls with no latency and no match use "{default}")')
    if config.rules:
        rule_rows: list[tuple[str, ...]] = [
            (f"rules[{index}]", rule.tag or "*", rule.model or "*", rule.provider or "*", rule.class_)
            for index, rule in enumerate(config.rules)
        ]
        lines += _table(("rule", "tag", "model", "provider", "-> class"), rule_rows)
    else:
        lines.append("  (none)")
    lines.append("")

    batch = config.batch
    lines.append("Batch")
    lines += _table(
        ("setting", "value"),
        [
            ("max_requests", str(batch.max_requests)),
            ("max_bytes", format_size(batch.max_bytes)),
            (
                "poll_interval",
                f"{format_duration(batch.poll_interval)} (up to {format_duration(batch.poll_max_interval)})",
            ),
            (
                "turnaround",
                f"p{batch.turnaround_percentile * 100:g} of history, "
                f"prior {format_duration(batch.turnaround_prior)}",
            ),
            ("deadline_margin", format_duration(batch.deadline_margin)),
            ("flush_interval", f"{format_duration(batch.flush_interval)} (batch classes with no trigger)"),
        ],
    )
    lines.append("")

    cache_rows, cache_notes = _cache_rows(config)
    if cache_rows:
        lines.append("Prompt caching (requests that mark a cacheable prefix; batch classes)")
        lines += _table(("class", "cache_ttl", "cache_priming", "cache_group_wait"), cache_rows)
        lines += cache_notes
        lines.append("")

    store = config.store
    if store.url is not None:  # the location is the URL without its password
        where = [
            ("engine", "postgresql"),
            ("url", store.location),
            ("pool_size", str(store.pool_size)),
            ("retry_for", format_duration(store.retry_for)),
        ]
    else:
        synchronous = "synchronous=FULL" if store.durability == "full" else "synchronous=NORMAL"
        where = [
            ("engine", "sqlite"),
            ("path", str(store.path)),
            ("durability", f"{store.durability} ({synchronous})"),
        ]
    lines.append("Store")
    lines += _table(("setting", "value"), [*where, ("retention", format_duration(store.retention))])
    lines.append("")

    if config.pricing:
        lines.append("Pricing overrides (USD per million tokens)")
        lines += _table(
            ("model", "input", "output", "cache_write_5m", "cache_write_1h", "cache_read"),
            [
                (
                    model,
                    f"{price.input:g}",
                    f"{price.output:g}",
                    f"{price.effective_cache_write_5m:g}",
                    f"{price.effective_cache_write_1h:g}",
                    f"{price.effective_cache_read:g}",
                )
                for model, price in config.pricing.items()
            ],
        )
        lines.append("")

    anthropic = config.anthropic
    lines.append("Router")
    lines += _table(
        ("setting", "value"),
        [
            ("flusher", config.router.flusher),
            ("default_class", default),
            ("watch_interval", format_duration(config.router.watch_interval)),
            ("base_url", anthropic.base_url or "(SDK default)"),
            ("realtime_concurrency", str(anthropic.realtime_concurrency)),
            ("timeout", format_duration(anthropic.timeout)),
            ("max_retries", str(anthropic.max_retries)),
        ],
    )
    return "\n".join(lines) + "\n"
