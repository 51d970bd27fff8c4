"""Flushing: pending rows -> the provider's batch create, with the body streamed from the store.

The body is never built as Python objects: each request's params are stored as the JSON
bytes that will be sent, and the create body is streamed from the store, framed by the
provider's `BatchFormat`, with an exact length known before the first byte.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ._crashpoints import crash_point
from .config import LatencyClass
from .errors import causes
from .grouping import Calibration, ClaimJob, FlushPlan, plan_flush
from .logs import get_logger
from .prefix import rewrite_ttl_1h
from .pricing import PriceTable
from .providers.base import Provider, RemoteBatch
from .store import BatchClaim, ClaimSelector, StoreEngine, custom_id_for

log = get_logger(__name__)


class BodyLengthMismatchError(RuntimeError):
    """The streamed body did not have the length announced; the store changed under the flush."""


@dataclass
class FlushReport:
    """What one flush did."""

    batches: list[str] = field(default_factory=list)  # API batch ids created
    requests: int = 0  # requests now in those batches
    released: int = 0  # requests put back to pending after a certain create failure
    uncertain: int = 0  # batches whose create answer was lost (reconciled later)
    failure: BaseException | None = None  # why the flush stopped early, for the caller's backoff
    uncertain_ids: list[int] = field(default_factory=list)  # their local batch ids
    primers: int = 0  # requests sent ahead of their prefix group (router/grouping.py)
    plan: FlushPlan | None = None  # how prefix groups were handled (None: no request marks one)
    failed_provider: str | None = None  # the provider whose create raised `failure`

    def merge(self, other: FlushReport) -> None:
        """Add another provider's flush to this one."""
        self.batches.extend(other.batches)
        self.requests += other.requests
        self.released += other.released
        self.uncertain += other.uncertain
        self.uncertain_ids.extend(other.uncertain_ids)
        self.primers += other.primers
        if other.plan is not None:
            self.plan = other.plan
        if other.failure is not None and self.failure is None:
            self.failure, self.failed_provider = other.failure, other.failed_provider


@dataclass(frozen=True)
class CacheContext:
    """What a cache-aware flush needs besides the store: the classes' cache settings, the
    batch turnaround estimate per model and the deadline margin, and the model table (the
    minimum cacheable prefix)."""

    classes: Mapping[str, LatencyClass]
    turnaround: Callable[[str], float]
    margin: float
    prices: PriceTable


@dataclass
class Upload:
    """How far a create's request got. The body is read only once a connection is open and
    the request line and headers are written, so a body never started means the API cannot
    have acted on the request."""

    body_started: bool = False


async def stream_body(
    store: StoreEngine, claim: BatchClaim, provider: Provider, upload: Upload | None = None
) -> AsyncIterator[bytes]:
    """Yield the batch body for a claim, chunk by chunk, from the store, in the provider's
    framing.

    `upload`, when given, records that the body was started."""
    if upload is not None:
        upload.body_started = True
    frame = provider.batch_format
    head, tail, separator = frame.entry_head, frame.entry_tail, frame.separator
    sent = 0
    yield frame.body_head
    sent += len(frame.body_head)
    first = True
    async for rows in store.iter_claimed(claim.batch_id):
        parts: list[bytes] = []
        for request_id, params in rows:
            if claim.ttl_1h:  # the stored params stay as the caller sent them
                params = rewrite_ttl_1h(params)
            if not first:
                parts.append(separator)
            first = False
            parts.append(head % custom_id_for(request_id).encode())
            parts.append(params)
            parts.append(tail)
        chunk = b"".join(parts)
        sent += len(chunk)
        yield chunk
        crash_point("create.mid_body")
    yield frame.body_tail
    sent += len(frame.body_tail)
    if sent != claim.body_bytes:
        raise BodyLengthMismatchError(f"batch body was {sent} bytes, announced {claim.body_bytes}")


def is_certain_failure(provider: Provider, exc: BaseException, *, body_started: bool = True) -> bool:
    """True when a batch create surely did not create a batch: the provider says so (the API
    answered with an error, or the request never got as far as its body), or the body was
    found to be wrong before it was all sent."""
    if provider.is_certain_failure(exc, body_started=body_started):
        return True
    return any(isinstance(e, BodyLengthMismatchError) for e in causes(exc))


def describe_failure(exc: BaseException) -> str:
    """The error and its cause (`APIConnectionError` says only "Connection error.")."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    return f"{text} ({type(cause).__name__}: {cause})" if cause is not None else text


async def create_batch(
    provider: Provider, store: StoreEngine, claim: BatchClaim, upload: Upload | None = None
) -> RemoteBatch:
    """Create the claimed requests as one batch. SDK retries are off: a retried create could
    create a second batch (the API takes no idempotency key); the caller decides what to do.
    `upload` records whether the body was started (see `is_certain_failure`)."""
    return await provider.create_batch(
        stream_body(store, claim, provider, upload),
        length=claim.body_bytes,
        intent_id=claim.batch_id,
        model=claim.model,
    )


async def flush(
    store: StoreEngine,
    provider: Provider,
    *,
    latencies: Sequence[str] | None,
    max_requests: int,
    max_bytes: int,
    now: float,
    first_poll_after: float,
    max_batches: int | None = None,
    in_flight: set[int] | None = None,
    cache: CacheContext | None = None,
) -> FlushReport:
    """Claim pending requests into as many batches as needed and create them.

    With `cache`, requests that mark a cacheable prefix are grouped, primed and sent with the
    TTL their class asks for (router/grouping.py). `in_flight` holds the local ids of batches
    being created right now, so that reconciliation leaves them alone."""
    report = FlushReport()
    jobs: list[ClaimJob | None] = [None]  # None: the oldest pending requests, in id order
    if cache is not None:
        groups = await store.pending_groups(latencies)
        if groups:  # else no pending request marks a prefix: claim plainly, in id order
            names = (
                list(latencies)
                if latencies is not None
                else [n for n, c in cache.classes.items() if c.is_batch]
            )
            report.plan = plan_flush(
                groups,
                cache.classes,
                latencies=names,
                status=await store.prefix_status([g.prefix_key for g in groups]),
                now=now,
                turnaround=cache.turnaround,
                margin=cache.margin,
                prices=cache.prices,
                calibration=Calibration.from_sums(await store.cache_calibration()),
            )
            jobs = list(report.plan.jobs)
            if report.plan.held or report.plan.too_short:
                log.info(
                    "flush_cache_plan",
                    primed=len(report.plan.primed),
                    waiting=len(report.plan.waiting),
                    awaiting_primer=len(report.plan.awaiting_primer),
                    too_short=len(report.plan.too_short),
                )
    for job in jobs:
        job_latencies = latencies if job is None else job.latencies
        select: ClaimSelector | None = None if job is None else job.select
        while max_batches is None or len(report.batches) + report.uncertain < max_batches:
            claim = await store.claim_batch(
                latencies=job_latencies,
                max_requests=max_requests,
                max_bytes=max_bytes,
                now=now,
                frame=provider.batch_format,
                select=select,
                provider=provider.name,
                one_model=provider.limits.one_model_per_batch,
            )
            if claim is None:
                break
            crash_point("flush.after_claim")
            if in_flight is not None:
                in_flight.add(claim.batch_id)
            upload = Upload()
            try:
                batch = await create_batch(provider, store, claim, upload)
            except Exception as exc:  # not only API errors: a create refused before sending is certain too
                report.failure = exc
                report.failed_provider = provider.name
                if is_certain_failure(provider, exc, body_started=upload.body_started):
                    released = await store.release_batch(claim.batch_id)
                    report.released += released
                    log.warning("batch_create_failed", error=describe_failure(exc), requests=released)
                else:
                    report.uncertain += 1
                    report.uncertain_ids.append(claim.batch_id)
                    log.warning(
                        "batch_create_uncertain", error=describe_failure(exc), local_batch=claim.batch_id
                    )
                return report  # the API is unhappy: leave the rest for the next flush
            finally:
                if in_flight is not None:
                    in_flight.discard(claim.batch_id)
            crash_point("flush.after_create")
            await store.mark_submitted(claim.batch_id, batch.id, now=now, next_poll_at=now + first_poll_after)
            crash_point("flush.after_mark_submitted")
            report.batches.append(batch.id)
            report.requests += claim.request_count
            log.info(
                "batch_submitted",
                batch_id=batch.id,
                requests=claim.request_count,
                body_bytes=claim.body_bytes,
            )
            if job is not None and job.primers:
                report.primers += claim.request_count
            if job is not None and job.once:
                break
    return report
