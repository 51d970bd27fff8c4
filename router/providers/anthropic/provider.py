"""`AnthropicProvider`: the Messages and Message Batches APIs through the SDK's AsyncAnthropic.

Result lines of the Message Batches API are the canonical form (router/providers/base.py),
so the codec is the identity: lines go to the store as the API streams them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anthropic
import httpx2
from anthropic.types import Message
from anthropic.types.messages import MessageBatch

from ...config import BATCH_MAX_BYTES, BATCH_MAX_REQUESTS
from ...pricing import TokenCounts
from ..base import BatchFormat, BatchLimits, ClosedBatches, RemoteBatch
from ..lines import line_blocks
from . import errors
from .outcome import message_from
from .params import REALTIME_MAX_BYTES

BATCHES_PATH = "/v1/messages/batches"

# {"requests":[{"custom_id":"r1","params":{...}},{"custom_id":"r2","params":{...}}]}
BATCH_FORMAT = BatchFormat(
    body_head=b'{"requests":[',
    body_tail=b"]}",
    separator=b",",
    entry_overhead=26,
    entry_head=b'{"custom_id":"%s","params":',
    entry_tail=b"}",
)
BATCH_LIMITS = BatchLimits(
    max_requests=BATCH_MAX_REQUESTS,
    max_bytes=BATCH_MAX_BYTES,
    one_model_per_batch=False,
    realtime_max_bytes=REALTIME_MAX_BYTES,
)


class AnthropicProvider:
    """The `Provider` of the Anthropic API, over one SDK client (its base URL, key, timeout)."""

    name = "anthropic"
    keeps_intent_id = False  # no metadata on a message batch
    limits = BATCH_LIMITS
    batch_format = BATCH_FORMAT

    def __init__(self, client: anthropic.AsyncAnthropic) -> None:
        self.client = client

    # ------------------------------------------------------------------ real time

    async def send(self, params: dict[str, Any]) -> Message:
        reply: Message = await self.client.messages.create(**params)
        return reply

    def reply_usage(self, reply: Any) -> tuple[str, TokenCounts] | None:
        if isinstance(reply, Message):
            return reply.model, TokenCounts.from_usage(reply.usage)
        return None

    def reply_result(self, reply: Any) -> dict[str, Any]:
        return {"type": "succeeded", "message": json.loads(reply.model_dump_json())}

    def error_result(self, exc: BaseException) -> dict[str, Any] | None:
        if isinstance(exc, anthropic.APIStatusError):
            return {"type": "errored", "error": errors.error_body(exc)}
        return None

    # ------------------------------------------------------------------ batches

    async def create_batch(
        self, body: AsyncIterator[bytes], *, length: int, intent_id: int, model: str | None
    ) -> RemoteBatch:
        """POST the streamed body to /v1/messages/batches with its exact Content-Length (the
        API may not accept a chunked upload). The API keeps no metadata: `intent_id` and
        `model` are not sent."""
        batch = await self.client.with_options(max_retries=0).post(
            BATCHES_PATH,
            content=body,
            cast_to=MessageBatch,
            options={"headers": {"Content-Type": "application/json", "Content-Length": str(length)}},
        )
        return _remote(batch)

    async def retrieve_batch(self, api_id: str) -> RemoteBatch:
        return _remote(await self.client.messages.batches.retrieve(api_id))

    async def list_batches(self, *, since: float) -> AsyncIterator[RemoteBatch]:
        """Batches created at or after `since`: the listing is newest first, read page by page
        only as far as it is consumed."""
        async for batch in self.client.messages.batches.list(limit=100):
            if batch.created_at.timestamp() < since:
                return
            yield _remote(batch)

    async def cancel_batch(self, api_id: str) -> None:
        await self.client.messages.batches.cancel(api_id)

    @contextlib.asynccontextmanager
    async def result_lines(self, api_id: str) -> AsyncIterator[AsyncIterator[list[bytes]]]:
        """The results JSONL, streamed: its lines are canonical as they come."""
        async with self.client.messages.batches.with_streaming_response.results(api_id) as response:
            yield line_blocks(response.iter_bytes())

    async def discard_results(self, api_id: str) -> None:
        """Nothing to delete: the API drops batch results itself after 29 days."""

    async def sweep(self, *, now: float, closed: ClosedBatches) -> int:
        """Nothing to delete: a batch is one call, and its results go after 29 days."""
        return 0

    # ------------------------------------------------------------------ results to the caller

    def outcome(self, result: Mapping[str, Any]) -> Message | anthropic.APIStatusError:
        """The Message of a `succeeded` result, the SDK exception of an `errored` one."""
        kind = result.get("type")
        if kind == "succeeded":
            return message_from(result["message"])
        if kind == "errored":
            return errors.api_error_from_body(result.get("error") or {})
        raise ValueError(f"no provider outcome for a {kind!r} result")

    # ------------------------------------------------------------------ errors

    def is_certain_failure(self, exc: BaseException, *, body_started: bool) -> bool:
        """The API answered with an error, or the request never got as far as its body: no
        credentials (the SDK refuses before sending), connection refused, a name that does
        not resolve, a connect timeout. Once the body is on its way, a timeout or a dropped
        connection leaves it unknown: the batch may exist."""
        return not body_started or isinstance(exc, anthropic.APIStatusError)

    def is_not_found(self, exc: BaseException) -> bool:
        return isinstance(exc, anthropic.NotFoundError)

    def is_transient(self, exc: BaseException) -> bool:
        # httpx2 errors: a results stream broken mid-read is not wrapped by the SDK.
        return isinstance(exc, anthropic.APIError | httpx2.HTTPError)

    def is_retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, anthropic.APIStatusError):
            return exc.status_code in errors.RETRYABLE_STATUS
        return isinstance(exc, anthropic.APIConnectionError)

    def retry_after(self, exc: BaseException | None) -> float | None:
        return errors.retry_after(exc)


def _remote(batch: MessageBatch) -> RemoteBatch:
    counts = batch.request_counts
    total = counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
    return RemoteBatch(
        id=batch.id,
        ended=batch.processing_status == "ended",
        created_at=batch.created_at.timestamp(),
        ended_at=batch.ended_at.timestamp() if batch.ended_at is not None else None,
        cancel_requested=batch.cancel_initiated_at is not None,
        request_total=total,
        counts=counts.model_dump(),
    )
