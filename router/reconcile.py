"""Reconciling batches whose create answer was lost (a crash, a timeout, a dropped line).

The intent row (state `creating`) is committed before `batches.create`, with the request
count and the time. When the answer never made it into the store, the batch may or may not
exist. Where the provider keeps the intent id with the batch (`RemoteBatch.intent_id`, the
OpenAI batch's `metadata`), the listed batch carrying it is adopted, exactly. Where it keeps
none (Anthropic: no idempotency key, no metadata), the only evidence is the listing: a batch
not known to this store, created around the intent's time, with the intent's request count,
is adopted (its results then land by `custom_id`). A successful
listing that shows no such batch means the create never happened: the requests go back to
pending. When the listing itself fails past the grace period the router cannot be sure; it
resubmits and keeps looking (state `released`): a late-found batch is adopted as a duplicate,
whose results the ingest records in the ledger (duplicate=1) without delivering them twice.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from ._crashpoints import crash_point
from .logs import get_logger
from .poller import Providers, by_name
from .providers.base import Provider, RemoteBatch
from .store import BatchRow, StoreEngine, states

log = get_logger(__name__)

CLOCK_SKEW = 60.0  # seconds of disagreement tolerated between our clock and the API's
LIST_LIMIT = 10_000  # batches read at most per reconciliation


@dataclass
class ReconcileReport:
    adopted: list[str] = field(default_factory=list)  # remote batch ids attached to intents
    resubmitted: int = 0  # requests put back to pending
    listing_failed: bool = False


async def _list_since(provider: Provider, since: float) -> list[RemoteBatch]:
    """Remote batches created at or after `since`, at most LIST_LIMIT of them."""
    found: list[RemoteBatch] = []
    async for batch in provider.list_batches(since=since):
        if len(found) >= LIST_LIMIT:
            break
        found.append(batch)
    return found


async def reconcile(
    providers: Providers,
    store: StoreEngine,
    *,
    now: float,
    grace: float,
    in_flight: Collection[int] = (),
    settled: Collection[int] = (),
    settled_before: float = float("-inf"),
) -> ReconcileReport:
    """Resolve intents whose create answer is unknown, each through its batch row's provider
    (see `reconcile_provider`)."""
    report = ReconcileReport()
    due = [
        b
        for b in await store.open_batches()
        if b.api_id is None
        and b.state in (states.B_CREATING, states.B_RELEASED)
        and b.id not in in_flight
        and (b.id in settled or b.created_at < settled_before or now - b.created_at >= grace)
    ]
    for name, provider in by_name(providers).items():
        mine = [b for b in due if b.provider == name]
        if not mine:
            continue
        part = await _reconcile(provider, store, mine, now=now, grace=grace)
        report.adopted.extend(part.adopted)
        report.resubmitted += part.resubmitted
        report.listing_failed = report.listing_failed or part.listing_failed
    return report


async def _reconcile(
    provider: Provider, store: StoreEngine, due: list[BatchRow], *, now: float, grace: float
) -> ReconcileReport:
    report = ReconcileReport()
    try:
        remote = await _list_since(provider, min(b.created_at for b in due) - CLOCK_SKEW)
    except Exception as exc:
        if not provider.is_transient(exc):
            raise
        report.listing_failed = True
        log.warning("reconcile_list_failed", error=str(exc), intents=len(due))
        for intent in due:
            # Not sure whether the batch exists: resubmit after the grace period, keep looking.
            if intent.state == states.B_CREATING and now - intent.created_at >= grace:
                released = await store.release_intent(intent.id, state=intent.state, to=states.B_RELEASED)
                report.resubmitted += released
                log.warning("batch_intent_resubmitted", local_batch=intent.id, requests=released)
        return report
    crash_point("reconcile.after_list")
    known = await store.known_api_ids([b.id for b in remote])
    candidates = sorted((b for b in remote if b.id not in known), key=lambda b: b.created_at)
    taken: set[str] = set()
    by_intent = {b.intent_id: b for b in candidates if b.intent_id is not None}
    exact = provider.keeps_intent_id
    for intent in sorted(due, key=lambda b: b.created_at):
        low, high = intent.created_at - CLOCK_SKEW, intent.created_at + max(grace, 0.0) + CLOCK_SKEW
        if exact:
            # The provider keeps the intent id: the batch that carries it, or none. Count and
            # time must agree too: another router on the same account numbers its own intents.
            found = by_intent.get(intent.id)
            match = (
                found
                if found is not None
                and found.id not in taken
                and found.request_total == intent.request_count
                and low <= found.created_at <= high
                else None
            )
        else:
            match = next(
                (
                    b
                    for b in candidates
                    if b.id not in taken
                    and b.request_total == intent.request_count
                    and low <= b.created_at <= high
                ),
                None,
            )
        if match is not None:
            if await store.adopt_batch(intent.id, match.id, state=intent.state, now=now):
                taken.add(match.id)
                report.adopted.append(match.id)
                log.info(
                    "batch_adopted",
                    batch_id=match.id,
                    local_batch=intent.id,
                    requests=intent.request_count,
                    duplicate=intent.state == states.B_RELEASED,
                )
                crash_point("reconcile.after_adopt")
            continue
        if intent.state == states.B_CREATING:
            # The listing covers the intent's time and shows no such batch: it was never created.
            crash_point("reconcile.before_release")
            released = await store.release_intent(intent.id, state=intent.state, to=states.B_DONE)
            report.resubmitted += released
            log.info("batch_intent_released", local_batch=intent.id, requests=released)
        else:
            # Listed successfully after the grace period and nothing there: stop looking.
            await store.close_released_intent(intent.id)
    return report
