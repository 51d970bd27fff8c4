"""Polling in-flight batches and ingesting their results into the store.

There are no batch webhooks: retrieving each open batch is the only way to learn that it
ended. Results are read as a stream of lines and applied in chunks, one transaction each;
a crash mid-ingest re-reads the stream and the store skips what it already has.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ._crashpoints import crash_point
from .logs import get_logger
from .providers.base import Provider, RemoteBatch
from .store import BatchRow, FinalRow, IngestStats, RetryPolicy, StoreEngine, custom_id_for, states
from .store.missing import RESULTS_RETENTION_SECONDS

log = get_logger(__name__)

INGEST_CHUNK = 10000  # 2,000 cost ~1.4 s more per 100,000 lines (five times the commits)
# The first chunks of a stream, smaller: nothing commits before the first chunk is read and
# applied whole, and the chunks behind it wait for its completion numbers.
INGEST_RAMP = (1000, 4000)
CHUNKS_IN_FLIGHT = 2

# Takes a chunk's final rows and the completion numbers they are (IngestStats.completions).
OnFinal = Callable[[Sequence[FinalRow], range], None]


@dataclass
class PollReport:
    """What one poll did."""

    polled: int = 0
    ended: list[str] = field(default_factory=list)
    delivered: int = 0
    retried: int = 0
    duplicates: int = 0
    errors: int = 0


def _missing_reason(batch: BatchRow, age: float) -> str:
    return (
        f"the results of batch {batch.api_id} could not be downloaded: it was created"
        f" {age / 86400:.1f} days ago and the API keeps batch results for 29 days"
    )


Providers = Provider | Mapping[str, Provider]


def by_name(providers: Providers) -> Mapping[str, Provider]:
    """The providers by name (one given alone stands for itself)."""
    if isinstance(providers, Mapping):
        return providers
    return {providers.name: providers}


def next_poll_delay(age: float, *, base: float, ceiling: float) -> float:
    """Poll often while a batch is young, less as it ages (most end within the hour)."""
    return min(ceiling, max(base, age / 10.0))


async def ingest(
    provider: Provider,
    store: StoreEngine,
    batch: BatchRow,
    *,
    now: float,
    max_attempts: Mapping[str, int],
    retry: RetryPolicy,
    on_finished: Callable[[Sequence[int]], None],
    on_final: OnFinal | None = None,
) -> IngestStats:
    """Stream a batch's results into the store in chunks; returns the summed stats.

    `retry` decides the results that are not `succeeded` (resubmit or fail).

    Each chunk's final rows go to `on_final` when given, with the chunk's completion numbers
    (resolves this process's waiters without reading the rows back; it must not block:
    reading the next chunks waits for it), else their ids to `on_finished`.
    """
    assert batch.api_id is not None
    totals = IngestStats()
    chunk: list[bytes] = []
    # Up to CHUNKS_IN_FLIGHT chunks handed over, applied in order (each waits for the write
    # lock): one in SQLite's thread, the next queued behind it, so the thread never waits
    # for the event loop to read more lines.
    in_flight: collections.deque[asyncio.Task[tuple[IngestStats, list[FinalRow]]]] = collections.deque()

    async def collect() -> None:
        """Wait for the oldest chunk in flight and hand its final rows on."""
        nonlocal totals
        task = in_flight.popleft()
        stats, finished = await task
        totals = _added(totals, stats)
        _hand_on(finished, stats.completions, on_final, on_finished)
        crash_point("ingest.after_chunk")

    sizes = itertools.chain((min(n, INGEST_CHUNK) for n in INGEST_RAMP), itertools.repeat(INGEST_CHUNK))
    size = next(sizes)

    async def apply() -> None:
        nonlocal size
        lines = chunk[:size]
        del chunk[:size]
        size = next(sizes)
        in_flight.append(
            asyncio.create_task(
                store.apply_results(batch.id, lines, now=now, max_attempts=max_attempts, retry=retry)
            )
        )
        if len(in_flight) > CHUNKS_IN_FLIGHT:
            await collect()

    try:
        async with provider.result_lines(batch.api_id) as blocks:
            async for lines in blocks:
                chunk.extend(lines)
                while len(chunk) >= size:
                    await apply()
        if chunk:
            await apply()
        while in_flight:
            await collect()
    except asyncio.CancelledError:
        await _abandon(in_flight)
        raise
    except BaseException:
        # The stream broke (or a chunk failed): the chunk read whole before that still counts.
        try:
            while in_flight:
                await collect()
        except Exception:
            await _abandon(in_flight)
        raise
    crash_point("ingest.before_finish")
    orphans = await store.finish_batch(batch.id, now=now)
    if orphans:
        log.warning("batch_results_missing", batch_id=batch.api_id, requests=orphans)
    return totals


async def _abandon(tasks: collections.deque[asyncio.Task[tuple[IngestStats, list[FinalRow]]]]) -> None:
    """Stop the chunks still in flight after an error and wait for them, so nothing writes
    after ingest returned. A chunk not yet in SQLite's thread is dropped (a re-read applies
    it); one already there runs to its COMMIT, and the completion watcher delivers its rows."""
    for task in tasks:
        task.cancel()
    while tasks:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await tasks.popleft()


async def _close_failed(
    provider: Provider,
    store: StoreEngine,
    batch: BatchRow,
    remote: RemoteBatch,
    *,
    now: float,
    max_attempts: Mapping[str, int],
    retry: RetryPolicy,
    on_finished: Callable[[Sequence[int]], None],
    on_final: OnFinal | None,
) -> IngestStats:
    """A batch the provider refused as a whole: each request still waiting gets the
    provider's result for the refusal (`failure_result`) as its result line, and the retry
    policy decides as for any errored line: a moment's refusal goes back to pending while
    the class's attempts allow, a refusal of the input fails with the error the real-time
    call would have raised. Then the batch is closed."""
    assert batch.api_id is not None
    result = remote.failure_result or {
        "type": "errored",
        "error": {"type": "error", "error": {"type": "api_error", "message": remote.failure or ""}},
    }
    ids = await store.unanswered(batch.id)
    totals = IngestStats()
    for start in range(0, len(ids), INGEST_CHUNK):
        lines = [
            json.dumps({"custom_id": custom_id_for(rid), "result": result}, separators=(",", ":")).encode()
            for rid in ids[start : start + INGEST_CHUNK]
        ]
        stats, finished = await store.apply_results(
            batch.id, lines, now=now, max_attempts=max_attempts, retry=retry
        )
        totals = _added(totals, stats)
        _hand_on(finished, stats.completions, on_final, on_finished)
    await store.finish_batch(batch.id, now=now)
    counts = {"final": totals.delivered, "retried": totals.retried}
    log.error("batch_refused", batch_id=batch.api_id, provider=provider.name, error=remote.failure, **counts)
    await discard(provider, batch)
    return totals


async def discard(provider: Provider, batch: BatchRow) -> None:
    """Best effort: delete what the provider keeps of an ingested batch (its files). A
    failure is logged and left to the daemon's next sweep (router/leftovers.py)."""
    assert batch.api_id is not None
    try:
        await provider.discard_results(batch.api_id)
    except Exception as exc:
        log.warning(
            "batch_results_not_discarded", batch_id=batch.api_id, provider=provider.name, error=str(exc)
        )


def _added(totals: IngestStats, stats: IngestStats) -> IngestStats:
    """The counts summed (the completions of many chunks are no one range: left empty)."""
    delivered, retried, duplicates, skipped, unknown = (
        a + b for a, b in zip(_as_tuple(totals), _as_tuple(stats), strict=True)
    )
    return IngestStats(delivered, retried, duplicates, skipped, unknown)


def _hand_on(
    finished: Sequence[FinalRow],
    completions: range,
    on_final: OnFinal | None,
    on_finished: Callable[[Sequence[int]], None],
) -> None:
    """Final rows (and the completion numbers they are, if known) to `on_final` when given,
    else their ids to `on_finished`."""
    if not finished:
        return
    if on_final is not None:
        on_final(finished, completions)
    else:
        on_finished([row[0] for row in finished])


def _as_tuple(stats: IngestStats) -> tuple[int, int, int, int, int]:
    return (stats.delivered, stats.retried, stats.duplicates, stats.skipped, stats.unknown)


async def poll(
    providers: Providers,
    store: StoreEngine,
    *,
    now: float,
    base_interval: float,
    max_interval: float,
    max_attempts: Mapping[str, int],
    retry: RetryPolicy,
    on_finished: Callable[[Sequence[int]], None],
    on_final: OnFinal | None = None,
    ingesting: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
    force: bool = False,
) -> PollReport:
    """Retrieve every open batch that is due (all of them with `force`) and ingest ended ones.

    Each batch is polled through the provider its row names. Each ingest runs inside
    `ingesting()` (the watcher holds its done_seq pass meanwhile).
    """
    report = PollReport()
    named = by_name(providers)
    for batch in await store.open_batches():
        if batch.api_id is None:
            continue  # a create whose answer is unknown: see reconcile
        provider = named.get(batch.provider)
        if provider is None:
            log.warning("batch_provider_not_configured", batch_id=batch.api_id, provider=batch.provider)
            continue
        if (
            not force
            and batch.state in (states.B_IN_PROGRESS, states.B_ENDED)
            and (batch.next_poll_at or 0) > now
        ):
            continue  # not due yet, or backing off after an error
        try:
            if batch.state in (states.B_IN_PROGRESS, states.B_CANCELING):
                remote = await provider.retrieve_batch(batch.api_id)
                report.polled += 1
                crash_point("poll.after_retrieve")
                if not remote.ended:
                    age = now - (batch.submitted_at or batch.created_at)
                    delay = next_poll_delay(age, base=base_interval, ceiling=max_interval)
                    await store.update_batch(batch.id, next_poll_at=now + delay)
                    continue
                if remote.failed:
                    # Closed in one step, never left `ended`: a re-read of a refused batch finds
                    # no lines, and would put every request back. No turnaround either: a
                    # refusal says nothing of how long batches take.
                    log.info("batch_ended", batch_id=batch.api_id, counts=dict(remote.counts))
                    with ingesting():
                        refused = await _close_failed(
                            provider,
                            store,
                            batch,
                            remote,
                            now=now,
                            max_attempts=max_attempts,
                            retry=retry,
                            on_finished=on_finished,
                            on_final=on_final,
                        )
                    report.ended.append(batch.api_id)
                    report.delivered += refused.delivered
                    report.retried += refused.retried
                    continue
                ended_at = remote.ended_at if remote.ended_at is not None else now
                await store.update_batch(batch.id, state=states.B_ENDED, ended_at=ended_at)
                if not remote.cancel_requested and remote.ended_at is not None:
                    # Both times from the API's clock; a canceled batch says nothing of turnaround.
                    # Rounded to the microsecond, the clock's resolution, which the difference
                    # of two epoch floats blurs.
                    turnaround = round(remote.ended_at - remote.created_at, 6)
                    await store.record_turnaround(batch.id, turnaround)
                log.info("batch_ended", batch_id=batch.api_id, counts=dict(remote.counts))
                crash_point("poll.after_ended")
            with ingesting():
                stats = await ingest(
                    provider,
                    store,
                    batch,
                    now=now,
                    max_attempts=max_attempts,
                    retry=retry,
                    on_finished=on_finished,
                    on_final=on_final,
                )
        except Exception as exc:
            # ValueError: a results line cut mid-way. Whatever it was, the batch stays open
            # and is polled again after a backoff; what was ingested is skipped on re-read.
            if not (provider.is_transient(exc) or isinstance(exc, ValueError)):
                raise
            age = now - (batch.submitted_at or batch.created_at)
            if provider.is_not_found(exc) and age >= RESULTS_RETENTION_SECONDS:
                lost = await store.fail_missing(batch.id, now=now, reason=_missing_reason(batch, age))
                log.error("batch_results_lost", batch_id=batch.api_id, requests=len(lost))
                if lost:
                    on_finished(lost)
                report.delivered += len(lost)
                continue
            report.errors += 1
            delay = max(base_interval, min(provider.retry_after(exc) or 0.0, max_interval))
            await store.update_batch(batch.id, next_poll_at=now + delay)
            log.warning("batch_poll_failed", batch_id=batch.api_id, error=str(exc), retry_in=delay)
            continue
        await discard(provider, batch)
        report.ended.append(batch.api_id)
        report.delivered += stats.delivered
        report.retried += stats.retried
        report.duplicates += stats.duplicates
        log.info(
            "batch_ingested",
            batch_id=batch.api_id,
            delivered=stats.delivered,
            retried=stats.retried,
            duplicates=stats.duplicates,
            skipped=stats.skipped,
        )
    return report
