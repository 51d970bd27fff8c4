"""Message Batches: their state, the clock that ends them, and the results they end with.

A batch ends when ``clock.now() >= created_at + batch_seconds`` (the
`batch_seconds` in force when it was created, plus `late_seconds` for a late
batch), or 24 h after creation, whichever comes first; ending at the 24 h limit
leaves every request `expired`. A partial batch (`OutcomeConfig.partial_rate`) runs to the
24 h limit and ends with only its first `partial_done` share processed, the rest `expired`
(also when `end_batches` ends it early). A canceled batch stays `canceling` until the
clock has moved past the moment of the cancel, then ends with every request
`canceled`. Checks are lazy: `BatchStore.refresh` runs whenever anything reads
batches, so no background task is needed, and a real-time clock works the same.

When a batch ends, its requests are processed in request order, in waves of the
`batch_parallelism` in force when it was created: the requests of one wave run in
parallel, so none reads another's prompt-cache write, and the next wave reads them all
(`PromptCache.use_wave`; the model and its sources are in ``CACHING.md``). A wave width
of 1 processes them one after another. Errored and expired requests touch no cache.

Each request is kept as a small `ReplyPlan` until its batch ends; then it becomes
one encoded JSONL line and the plan is dropped. Lines are stored shuffled
(deterministically, from the seed and the batch's sequence number), never in
request order, as the API documents.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from router.emulator.cache import PromptCache
from router.emulator.clock import Clock
from router.emulator.config import EmulatorConfig, OutcomeConfig
from router.emulator.errors import ApiError, error_body
from router.emulator.ids import new_id
from router.emulator.replies import ReplyPlan, message_body

__all__ = ["BATCH_LIFETIME_SECONDS", "RESULTS_RETENTION_SECONDS", "BatchStore", "StoredBatch", "rfc3339"]

BATCH_LIFETIME_SECONDS = 24 * 3600.0
RESULTS_RETENTION_SECONDS = 29 * 24 * 3600.0
ProcessingStatus = Literal["in_progress", "canceling", "ended"]
_RESULT_TYPES = ("succeeded", "errored", "canceled", "expired")


def rfc3339(moment: float) -> str:
    """Unix seconds as the API writes times: ``2026-01-02T03:04:05.678901Z``."""
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


_COMPACT = json.JSONEncoder(separators=(",", ":"))


def _line(custom_id: str, result: Mapping[str, Any]) -> bytes:
    return _COMPACT.encode({"custom_id": custom_id, "result": result}).encode() + b"\n"


class StoredBatch:
    """One batch as the emulator holds it; read it through `emu.batches` in assertions."""

    def __init__(
        self,
        *,
        batch_id: str,
        seq: int,
        created_at: float,
        turnaround: float,
        requests: list[tuple[str, ReplyPlan]],
        parallelism: int,
    ) -> None:
        self.id = batch_id
        self.seq = seq
        self.created_at = created_at
        self.expires_at = created_at + BATCH_LIFETIME_SECONDS
        self.ends_at = min(created_at + turnaround, self.expires_at)
        """When the batch ends by itself (the clock decides)."""
        self.parallelism = parallelism
        """Width of the waves its requests are processed in (the setting when it was created)."""
        self.processing_status: ProcessingStatus = "in_progress"
        self.cancel_initiated_at: float | None = None
        self.ended_at: float | None = None
        self.archived_at: float | None = None
        self.custom_ids: tuple[str, ...] = tuple(custom_id for custom_id, _ in requests)
        self.request_counts: dict[str, int] = {"processing": len(requests), **dict.fromkeys(_RESULT_TYPES, 0)}
        self._requests: list[tuple[str, ReplyPlan]] | None = requests
        self.partial_done: float | None = None
        """Set for a batch that runs out of time: the share of its requests processed."""
        self._lines: list[bytes] | None = None

    @property
    def request_count(self) -> int:
        """Number of requests in the batch."""
        return len(self.custom_ids)

    @property
    def ended(self) -> bool:
        return self.processing_status == "ended"

    def result_lines(self) -> Iterator[bytes]:
        """The JSONL lines of the results (each newline-terminated), in download order."""
        return iter(self._lines or ())

    def results(self) -> list[dict[str, Any]]:
        """The results as parsed objects, in download order (empty until ended)."""
        return [json.loads(line) for line in self.result_lines()]

    def to_api(self, base_url: str) -> dict[str, Any]:
        """The `MessageBatch` object the API returns."""
        results_url = f"{base_url}/v1/messages/batches/{self.id}/results" if self.ended else None
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.processing_status,
            "request_counts": dict(self.request_counts),
            "ended_at": None if self.ended_at is None else rfc3339(self.ended_at),
            "created_at": rfc3339(self.created_at),
            "expires_at": rfc3339(self.expires_at),
            "archived_at": None if self.archived_at is None else rfc3339(self.archived_at),
            "cancel_initiated_at": None
            if self.cancel_initiated_at is None
            else rfc3339(self.cancel_initiated_at),
            "results_url": results_url,
        }

    def _finish(self, lines: list[bytes], counts: dict[str, int], at: float) -> None:
        self._lines = lines
        self._requests = None
        self.request_counts = {"processing": 0, **counts}
        self.processing_status = "ended"
        self.ended_at = at

    def __repr__(self) -> str:
        return (
            f"StoredBatch(id={self.id!r}, status={self.processing_status!r}, requests={self.request_count})"
        )


class BatchStore:
    """Every batch of one emulator, and the rules that move them along."""

    def __init__(self, *, clock: Clock, config: EmulatorConfig, cache: PromptCache, seed: int) -> None:
        self._clock = clock
        self._config = config
        self._cache = cache
        self._seed = seed
        self._seq = 0
        self._batches: dict[str, StoredBatch] = {}
        # Sequence numbers outlive deletion so a page cursor on a deleted batch still works.
        self._seq_by_id: dict[str, int] = {}

    @property
    def batches(self) -> Mapping[str, StoredBatch]:
        """Batches by id, oldest first (deleted ones are gone)."""
        return self._batches

    def create(self, requests: list[tuple[str, ReplyPlan]]) -> StoredBatch:
        """Store a new, already validated batch."""
        self._seq += 1
        turnaround = self._config.batch_seconds
        outcomes = self._config.outcomes
        partial: float | None = None
        if (
            outcomes.partial_rate > 0
            and random.Random(f"{self._seed}:partial:{self._seq}").random() < outcomes.partial_rate
        ):
            partial = outcomes.partial_done
            turnaround = BATCH_LIFETIME_SECONDS  # it runs until the 24 h limit stops it
        if (
            outcomes.late_rate > 0
            and random.Random(f"{self._seed}:late:{self._seq}").random() < outcomes.late_rate
        ):
            turnaround += outcomes.late_seconds
        batch = StoredBatch(
            batch_id=new_id("msgbatch_emu_"),
            seq=self._seq,
            created_at=self._clock.now(),
            turnaround=turnaround,
            requests=requests,
            parallelism=self._config.batch_parallelism,
        )
        batch.partial_done = partial
        self._batches[batch.id] = batch
        self._seq_by_id[batch.id] = batch.seq
        return batch

    def get(self, batch_id: str) -> StoredBatch:
        """The batch, or a 404 `not_found_error`."""
        batch = self._batches.get(batch_id)
        if batch is None:
            raise ApiError.not_found(f"No message batch found with id '{batch_id}'")
        return batch

    def refresh(self) -> int:
        """End every batch whose time has come; returns how many ended."""
        now = self._clock.now()
        due: list[tuple[float, int, StoredBatch]] = []
        for batch in self._batches.values():
            if batch.ended:
                if batch.archived_at is None and now >= batch.created_at + RESULTS_RETENTION_SECONDS:
                    batch.archived_at = batch.created_at + RESULTS_RETENTION_SECONDS
                    batch._lines = None
                continue
            if batch.processing_status == "canceling":
                assert batch.cancel_initiated_at is not None
                if now > batch.cancel_initiated_at or now >= batch.ends_at:
                    due.append((min(now, batch.ends_at), batch.seq, batch))
            elif now >= batch.ends_at:
                due.append((batch.ends_at, batch.seq, batch))
        # In order of their end, so the prompt cache sees requests in time order.
        for at, _, batch in sorted(due, key=lambda item: (item[0], item[1])):
            self._end(batch, at)
        return len(due)

    def end_all(self) -> int:
        """End every in-progress or canceling batch now; returns how many ended."""
        self.refresh()
        now = self._clock.now()
        pending = [batch for batch in self._batches.values() if not batch.ended]
        for batch in pending:
            self._end(batch, now)
        return len(pending)

    def cancel(self, batch_id: str) -> StoredBatch:
        """Start canceling a batch (no-op if it is canceling or has ended already)."""
        batch = self.get(batch_id)
        if batch.processing_status == "in_progress":
            batch.processing_status = "canceling"
            batch.cancel_initiated_at = self._clock.now()
        return batch

    def delete(self, batch_id: str) -> None:
        """Delete an ended batch; a 400 `invalid_request_error` if it is still processing."""
        batch = self.get(batch_id)
        if not batch.ended:
            raise ApiError.invalid(
                f"Message batch '{batch_id}' is {batch.processing_status} and cannot be deleted "
                "until it has ended; cancel it first"
            )
        del self._batches[batch_id]

    def page(
        self, *, limit: int, after_id: str | None, before_id: str | None
    ) -> tuple[list[StoredBatch], bool]:
        """One page of the newest-first listing, and whether more lie beyond it."""
        newest_first = sorted(self._batches.values(), key=lambda b: b.seq, reverse=True)
        if after_id is not None:
            cursor = self._cursor("after_id", after_id)
            older = [b for b in newest_first if b.seq < cursor]
            return older[:limit], len(older) > limit
        if before_id is not None:
            cursor = self._cursor("before_id", before_id)
            newer = [b for b in newest_first if b.seq > cursor]
            return newer[-limit:], len(newer) > limit
        return newest_first[:limit], len(newest_first) > limit

    def _cursor(self, name: str, batch_id: str) -> int:
        seq = self._seq_by_id.get(batch_id)
        if seq is None:
            raise ApiError.invalid(f"{name}: no message batch with id '{batch_id}'")
        return seq

    def _end(self, batch: StoredBatch, at: float) -> None:
        requests = batch._requests or []
        if batch.processing_status == "canceling":
            lines, counts = self._uniform(requests, "canceled")
        elif batch.partial_done is not None:
            done = math.floor(len(requests) * batch.partial_done)
            lines, counts = self._process(batch, requests[:done], at)
            rest, expired = self._uniform(requests[done:], "expired")
            lines += rest
            counts["expired"] += expired["expired"]
        elif at >= batch.expires_at and batch.ends_at >= batch.expires_at:
            lines, counts = self._uniform(requests, "expired")
        else:
            lines, counts = self._process(batch, requests, at)
        order = random.Random(f"{self._seed}:order:{batch.seq}")
        shuffled = list(lines)
        order.shuffle(shuffled)
        if len(shuffled) > 1 and shuffled == lines:
            # Request order must never come back, even by chance: clients have to match on custom_id.
            shuffled = shuffled[1:] + shuffled[:1]
        del lines
        batch._finish(shuffled, counts, at)

    @staticmethod
    def _uniform(requests: list[tuple[str, ReplyPlan]], kind: str) -> tuple[list[bytes], dict[str, int]]:
        counts = dict.fromkeys(_RESULT_TYPES, 0)
        counts[kind] = len(requests)
        return [_line(custom_id, {"type": kind}) for custom_id, _ in requests], counts

    @staticmethod
    def _outcome(
        custom_id: str, plan: ReplyPlan, draw: float | None, outcomes: OutcomeConfig
    ) -> dict[str, Any] | None:
        """The errored or expired result of a request, or None when it succeeds.

        `draw` is its share of the random outcome rates (None: no rates are set).
        """
        error_type = plan.error_type
        expired = plan.expire
        if error_type is None and not expired and draw is not None:
            if draw < outcomes.expired:
                expired = True
            else:
                draw -= outcomes.expired
                for kind, rate in outcomes.errored.items():
                    if draw < rate:
                        error_type = kind
                        break
                    draw -= rate
        if error_type is not None:
            message = f"Emulated {error_type} for request '{custom_id}'"
            return {"type": "errored", "error": error_body(error_type, message, new_id("req_emu_"))}
        return {"type": "expired"} if expired else None

    def _process(
        self, batch: StoredBatch, requests: list[tuple[str, ReplyPlan]], at: float
    ) -> tuple[list[bytes], dict[str, int]]:
        outcomes = self._config.outcomes
        draws = random.Random(f"{self._seed}:outcomes:{batch.seq}")
        random_outcomes = outcomes.expired > 0 or any(rate > 0 for rate in outcomes.errored.values())
        counts = dict.fromkeys(_RESULT_TYPES, 0)
        lines: list[bytes] = []
        width = batch.parallelism
        for start in range(0, len(requests), width):
            wave = requests[start : start + width]
            results: list[dict[str, Any] | None] = []
            for custom_id, plan in wave:
                # One draw per request that may turn out randomly, in request order, as seeded.
                chance = plan.error_type is None and not plan.expire and random_outcomes
                results.append(self._outcome(custom_id, plan, draws.random() if chance else None, outcomes))
            # The succeeding requests of the wave run in parallel against the prompt cache.
            runs = [plan.input for (_, plan), result in zip(wave, results, strict=True) if result is None]
            usages = iter(self._cache.use_wave(runs, at))
            for (custom_id, plan), result in zip(wave, results, strict=True):
                if result is None:
                    body = message_body(plan, new_id("msg_emu_"), next(usages), service_tier="batch")
                    result = {"type": "succeeded", "message": body}
                counts[result["type"]] += 1
                lines.append(_line(custom_id, result))
        return lines, counts
