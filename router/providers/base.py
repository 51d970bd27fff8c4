"""The provider interface: everything that knows one provider's wire format.

The engine (flush, poll, reconcile, escalate, watch) and the store know a provider only
through `Provider`. Two facts shape it:

- **Result lines reach the store in one canonical form**, the Anthropic Message Batches
  result line: ``{"custom_id": ..., "result": {"type": "succeeded" | "errored" |
  "canceled" | "expired", "message" | "error": ...}}`` with the token counts at
  ``result.message.usage.{input_tokens, output_tokens, cache_read_input_tokens,
  cache_creation_input_tokens}`` and the reply's model at ``result.message.model``. The
  Anthropic codec is therefore the identity (the SQLite ingest keeps reading lines in
  SQL, at full speed); another provider's codec maps its lines onto that form and keeps
  its own payload in it, so `outcome` can rebuild the provider's SDK object or exception
  exactly. Error types in canonical lines are the Anthropic names
  (`invalid_request_error`, `rate_limit_error`, `api_error`, ...), which is what the
  retry decision reads.
- **A batch body is framed by the provider** (`BatchFormat`): the store adds up each
  claimed request's params size and custom_id length, and the provider's framing turns
  that into the exact Content-Length before a byte is sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..pricing import TokenCounts


# Which of these provider batch ids the store has closed (their results all stored).
ClosedBatches = Callable[[Collection[str]], Awaitable[Collection[str]]]


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """What one batch of this provider may hold."""

    max_requests: int
    max_bytes: int
    one_model_per_batch: bool  # OpenAI: one model per input file
    realtime_max_bytes: int  # the largest real-time request body


@dataclass(frozen=True, slots=True)
class BatchFormat:
    """The bytes around each request in a batch body, so a claim can size the body exactly.

    An entry is ``entry_head % custom_id + params + entry_tail``; entries are joined by
    `separator`; the body is ``body_head + entries + body_tail``.
    """

    body_head: bytes
    body_tail: bytes
    separator: bytes
    entry_overhead: int  # bytes an entry adds besides its params and its custom_id's characters
    entry_head: bytes  # the bytes before an entry's params, with one `%s` for its custom_id
    entry_tail: bytes  # the bytes after an entry's params

    def __post_init__(self) -> None:
        if self.entry_head.count(b"%s") != 1 or self.entry_head.count(b"%") != 1:
            raise ValueError(f"BatchFormat.entry_head must hold one %s and no other %: {self.entry_head!r}")
        framing = len(self.entry_head) - 2 + len(self.entry_tail)
        if framing != self.entry_overhead:
            raise ValueError(
                f"BatchFormat.entry_overhead is {self.entry_overhead}, but entry_head and entry_tail"
                f" add {framing} bytes"
            )

    def body_bytes(self, *, requests: int, params_bytes: int, custom_id_bytes: int) -> int:
        """The exact length of a body of `requests` entries."""
        if requests == 0:
            return len(self.body_head) + len(self.body_tail)
        return (
            len(self.body_head)
            + len(self.body_tail)
            + (requests - 1) * len(self.separator)
            + requests * self.entry_overhead
            + params_bytes
            + custom_id_bytes
        )


@dataclass(frozen=True, slots=True)
class RemoteBatch:
    """A provider's batch as the engine needs it, whatever the provider calls its fields."""

    id: str
    ended: bool  # processing is over (results, partial or whole, can be read)
    created_at: float  # the provider's clock, Unix seconds
    ended_at: float | None
    cancel_requested: bool
    request_total: int  # requests the batch holds (reconciliation matches on it)
    intent_id: int | None = None  # the router's local batch id, where the provider keeps metadata
    counts: Mapping[str, int] = field(default_factory=dict)  # the provider's own, for logs
    failed: bool = False  # the provider refused the batch as a whole (OpenAI `failed`)
    failure: str | None = None  # why, when `failed`
    # The canonical `errored` result of each request of a `failed` batch: the error the
    # provider's real-time call would have answered, whose type the retry policy reads
    # (a moment's refusal, such as a queue limit, is retried; a refusal of the input is not).
    failure_result: Mapping[str, Any] | None = None


class Provider(Protocol):
    """One provider's API, wire format, limits and prices."""

    name: str  # "anthropic", "openai": the `provider` label of the ledger, report and metrics
    # The provider keeps the router's intent id with each batch (`RemoteBatch.intent_id`): a
    # lost create is then reconciled by that id alone, never by count and time.
    keeps_intent_id: bool
    limits: BatchLimits
    batch_format: BatchFormat

    # Real time.
    async def send(self, params: dict[str, Any]) -> Any:
        """Send stored params on the real-time endpoint (escalation); the SDK's reply object."""
        ...

    def reply_usage(self, reply: Any) -> tuple[str, TokenCounts] | None:
        """The model and token counts of a real-time reply, for the cost ledger; None for a
        reply that carries none (a stream)."""
        ...

    def reply_result(self, reply: Any) -> dict[str, Any]:
        """The canonical `succeeded` result of a real-time reply (what an escalation stores)."""
        ...

    def error_result(self, exc: BaseException) -> dict[str, Any] | None:
        """The canonical `errored` result of an error the API answered a real-time send with;
        None when `exc` is no such answer."""
        ...

    # Batches.
    async def create_batch(
        self, body: AsyncIterator[bytes], *, length: int, intent_id: int, model: str | None
    ) -> RemoteBatch:
        """Create a batch from a streamed body of exactly `length` bytes, SDK retries off
        (a retried create could create a second batch). `model`: the one model of the body,
        where the provider wants it."""
        ...

    async def retrieve_batch(self, api_id: str) -> RemoteBatch: ...

    def list_batches(self, *, since: float) -> AsyncIterator[RemoteBatch]:
        """Batches created at or after `since`, newest first."""
        ...

    async def cancel_batch(self, api_id: str) -> None: ...

    def result_lines(self, api_id: str) -> AbstractAsyncContextManager[AsyncIterator[list[bytes]]]:
        """The ended batch's results as blocks of canonical lines (see the module docstring).

        Given the id only: a batch found ended by an earlier poll is read again after a
        failed or interrupted ingest, with no retrieve in between. A line cut by a broken
        stream is never yielded: the read raises first."""
        ...

    async def discard_results(self, api_id: str) -> None:
        """Delete what the provider keeps of a batch once its results are stored (its files);
        nothing where the provider keeps nothing deletable."""
        ...

    async def sweep(self, *, now: float, closed: ClosedBatches) -> int:
        """Delete what the provider still keeps that no batch needs: the files of batches the
        store has closed (`closed` tells which of some batch ids those are: a delete after
        ingest failed) and the input files of batches never created. How many were deleted;
        0 where the provider keeps nothing deletable."""
        ...

    # Results to the caller.
    def outcome(self, result: Mapping[str, Any]) -> Any:
        """The SDK object of a canonical `succeeded` result, or the SDK exception of an
        `errored` one: what the same request would have returned or raised in real time."""
        ...

    # Errors.
    def is_certain_failure(self, exc: BaseException, *, body_started: bool) -> bool:
        """True when a failed create surely created no batch."""
        ...

    def is_not_found(self, exc: BaseException) -> bool: ...

    def is_transient(self, exc: BaseException) -> bool:
        """An API or transport error of a batch call (retrieve, results, list, cancel): the
        engine tries the call again later, whatever the status."""
        ...

    def is_retryable(self, exc: BaseException) -> bool:
        """A real-time send that failed so may work if sent again (connection lost, 408,
        409, 429, 5xx); an answer about the request itself (400, 401, ...) is not."""
        ...

    def retry_after(self, exc: BaseException | None) -> float | None:
        """Seconds the provider asked to wait (retry-after headers), if any."""
        ...
