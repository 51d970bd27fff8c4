"""Which events go where: the store's outbox policy from `[[webhooks]]`, and the endpoints
each stored event is delivered to."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..config import RouterConfig, WebhookSettings
from ..pricing import CostSummary, PriceTable
from ..store import OutboxEvent, OutboxPolicy, events


def outbox_policy(config: RouterConfig) -> OutboxPolicy | None:
    """The events some endpoint wants, for the store to write (None: no endpoint, no events)."""
    if not config.webhooks:
        return None
    wanted = frozenset(e for e in events.EVENT_TYPES if any(w.wants(e) for w in config.webhooks))
    keys: list[str] = []
    tags: list[str] = []
    for hook in config.webhooks:
        if any(hook.wants(e) for e in events.PER_REQUEST):
            if not hook.keys and not hook.tags:
                keys.append("*")  # every keyed request
            keys.extend(hook.keys)
            tags.extend(hook.tags)
    prices = PriceTable.bundled().with_overrides(config.pricing)

    def costs(rows: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
        summary = CostSummary(prices=prices)
        for row in rows:
            summary.add(
                row["model"],
                _usage(row),
                row["lane"],
                requests=row["requests"],
                duplicate=bool(row["duplicate"]),
            )
        return summary.total_cost, summary.saving

    return OutboxPolicy(wanted, tuple(dict.fromkeys(keys)), tuple(dict.fromkeys(tags)), costs)


def _usage(row: Mapping[str, Any]) -> dict[str, Any]:
    write_5m, write_1h = row["cache_write_5m"] or 0, row["cache_write_1h"] or 0
    return {
        "input_tokens": row["input_tokens"] or 0,
        "output_tokens": row["output_tokens"] or 0,
        "cache_read_input_tokens": row["cache_read"] or 0,
        "cache_creation_input_tokens": write_5m + write_1h,
        "cache_creation": {"ephemeral_5m_input_tokens": write_5m, "ephemeral_1h_input_tokens": write_1h},
    }


def wants_event(hook: WebhookSettings, event: OutboxEvent) -> bool:
    """True when `hook` takes this stored event: its type, its tag, and for per-request events
    the request's key or tag."""
    if not hook.wants(event.type):
        return False
    if event.type in events.PER_REQUEST:
        if not hook.keys and not hook.tags:
            return True
        key = str(json.loads(event.payload).get("key", ""))
        return any(fnmatch.fnmatchcase(key, g) for g in hook.keys) or (
            event.tag is not None and any(fnmatch.fnmatchcase(event.tag, g) for g in hook.tags)
        )
    if hook.tags and event.tag is not None:
        return any(fnmatch.fnmatchcase(event.tag, g) for g in hook.tags)
    return True


def routes(hooks: Sequence[WebhookSettings], batch: Sequence[OutboxEvent]) -> list[tuple[int, str]]:
    """(event id, endpoint url) of every delivery to make for these events."""
    urls = list(dict.fromkeys(h.url for h in hooks))
    by_url = {url: [h for h in hooks if h.url == url] for url in urls}
    return [
        (event.id, url) for event in batch for url in urls if any(wants_event(h, event) for h in by_url[url])
    ]
