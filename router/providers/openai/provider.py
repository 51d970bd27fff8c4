"""`OpenAIProvider`: the OpenAI Batch API (files + batches) and chat completions behind `Provider`."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import httpx2
import openai
from openai._models import add_request_id, construct_type, validate_type
from openai.types import Batch, FileObject
from openai.types.chat import ChatCompletion

from router.logs import get_logger
from router.pricing import TokenCounts
from router.providers.base import BatchFormat, BatchLimits, ClosedBatches, Provider, RemoteBatch
from router.providers.openai import errors
from router.providers.openai.codec import (
    STATUS_BY_ERROR_TYPE,
    canonical_line,
    canonical_message,
    canonical_result,
    provider_usage,
)
from router.providers.openai.framing import JSONL_FORMAT, MultipartUpload

__all__ = [
    "INPUT_FILE_PREFIX",
    "INTENT_METADATA_KEY",
    "OPENAI_LIMITS",
    "ORPHAN_AGE",
    "OpenAIProvider",
    "OpenAIRemoteBatch",
]

log = get_logger(__name__)

INTENT_METADATA_KEY: Final = "hybrid_router_intent"
INPUT_FILE_PREFIX: Final = "hybrid-router-"  # an input file is named <prefix><intent id>.jsonl
OPENAI_LIMITS = BatchLimits(
    max_requests=50_000,
    max_bytes=200 * 1024 * 1024,
    one_model_per_batch=True,
    # OpenAI publishes no request size limit for chat completions; the emulator's is 32 MB.
    realtime_max_bytes=32_000_000,
)
_ENDED = frozenset({"completed", "expired", "cancelled", "failed"})
_CANCELLING = frozenset({"cancelling", "cancelled"})
_BLOCK_LINES = 1000  # canonical lines per block handed to the ingest
# An input file no batch reads this long after its upload never will: the create follows
# the upload within one flush.
ORPHAN_AGE: Final = 3600.0
_CLOCK_SKEW = 60.0  # seconds of disagreement tolerated between our clock and the API's
_LIST_PAGE = 100  # the most `GET /v1/batches` returns a page


@dataclass(frozen=True, slots=True)
class OpenAIRemoteBatch(RemoteBatch):
    """A `RemoteBatch` with what OpenAI keeps besides: its status and its three files."""

    status: str = ""
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None


def _intent_of(metadata: Mapping[str, str] | None) -> int | None:
    raw = (metadata or {}).get(INTENT_METADATA_KEY)
    if raw is None or not raw.isdigit():
        return None
    return int(raw)


def _failure_of(batch: Batch) -> str | None:
    data = batch.errors.data if batch.errors is not None else None
    if not data:
        return None if batch.status != "failed" else "the batch failed validation"
    parts = []
    for error in data:
        where = f"line {error.line}: " if error.line is not None else ""
        parts.append(f"{where}{error.code or 'error'}: {error.message or ''}".rstrip(": "))
    return "; ".join(parts)


# The HTTP status a real-time call answers for the cause of a batch error (`errors.data[].code`).
# The account's moment, not the file (the same file may pass later): the enqueued token limit
# and rate limits are a 429, a server error a 500, both retried by the retry policy. A model
# the API does not serve is a 404 (`model_not_found`) there too. Every other refusal of the
# input (`invalid_json_line`, `missing_required_parameter`, `too_many_tokens`,
# `model_mismatch`, ...) is a request the API cannot take: a 400, never retried.
_FAILURE_STATUS = {
    "token_limit_exceeded": 429,
    "rate_limit_exceeded": 429,
    "server_error": 500,
    "model_not_found": 404,
}
_ERROR_TYPE_OF_STATUS = {429: "tokens", 500: "server_error"}  # OpenAI's; else invalid_request_error


def _failure_result(batch: Batch) -> dict[str, Any]:
    """The canonical `errored` result of each request of a refused batch, its `openai` part
    the error response the real-time call would have had (so `outcome` raises the same
    `openai` exception: `BadRequestError`, `NotFoundError`, `RateLimitError`). The first
    error that a retry cannot mend gives the status, code and param, else the first error
    (then every one may pass later). The message names every error listed."""
    data = list(batch.errors.data or []) if batch.errors is not None else []
    final = [e for e in data if _FAILURE_STATUS.get(e.code or "", 400) < 429]
    first = final[0] if final else data[0] if data else None
    code = first.code if first is not None else None
    status = _FAILURE_STATUS.get(code or "", 400)
    body = {
        "error": {
            "message": f"batch {batch.id} was refused: {_failure_of(batch)}",
            "type": _ERROR_TYPE_OF_STATUS.get(status, "invalid_request_error"),
            "param": first.param if first is not None else None,
            "code": code,
        }
    }
    return canonical_result({"response": {"status_code": status, "request_id": None, "body": body}})


# The upload's Content-Type travels under this header through the SDK's request building:
# given as Content-Type, a "multipart/form-data" value makes `_build_request` encode a
# multipart body itself (httpx's encoder, which takes no async stream) and refuse the
# streamed `content`. `_streaming_uploads` moves it back just before the request is sent.
_MULTIPART_HEADER: Final = "X-Hybrid-Router-Multipart-Content-Type"


def _streaming_uploads(client: openai.AsyncOpenAI) -> openai.AsyncOpenAI:
    """A copy of `client`, retries off, whose requests carrying `_MULTIPART_HEADER` go out
    with it as their Content-Type, so a streamed upload is sent as the SDK's own
    `files.create` sends one. Through the SDK's documented `_prepare_request` hook, set on
    this copy only: the caller's client and its other copies are untouched."""
    uploads = client.with_options(max_retries=0)

    async def prepare(request: httpx2.Request) -> None:
        content_type = request.headers.pop(_MULTIPART_HEADER, None)
        if content_type is not None:
            request.headers["Content-Type"] = content_type

    uploads._prepare_request = prepare  # type: ignore[method-assign]
    return uploads


def remote_batch(batch: Batch) -> OpenAIRemoteBatch:
    """The engine's view of an OpenAI `Batch`."""
    counts = batch.request_counts
    ended_at = batch.completed_at or batch.expired_at or batch.cancelled_at or batch.failed_at
    return OpenAIRemoteBatch(
        id=batch.id,
        ended=batch.status in _ENDED,
        created_at=float(batch.created_at),
        ended_at=float(ended_at) if ended_at is not None and batch.status in _ENDED else None,
        cancel_requested=batch.status in _CANCELLING or batch.cancelling_at is not None,
        request_total=counts.total if counts is not None else 0,
        intent_id=_intent_of(batch.metadata),
        counts=(
            {"total": counts.total, "completed": counts.completed, "failed": counts.failed}
            if counts is not None
            else {}
        ),
        failed=batch.status == "failed",
        failure=_failure_of(batch) if batch.status == "failed" else None,
        failure_result=_failure_result(batch) if batch.status == "failed" else None,
        status=batch.status,
        input_file_id=batch.input_file_id,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
    )


class OpenAIProvider:
    """The OpenAI Batch API for `/v1/chat/completions`, through an `openai.AsyncOpenAI`.

    A batch is two calls: the input file's upload (`files.create(purpose="batch")`,
    streamed with an exact Content-Length), then `batches.create` with the router's
    intent id in `metadata`. Both go with SDK retries off; see `is_certain_failure`.
    """

    name = "openai"
    keeps_intent_id = True  # in the batch's `metadata` (INTENT_METADATA_KEY)
    limits: BatchLimits = OPENAI_LIMITS
    batch_format: BatchFormat = JSONL_FORMAT

    def __init__(self, client: openai.AsyncOpenAI) -> None:
        self._client = client
        self._once = client.with_options(max_retries=0)
        self._uploads = _streaming_uploads(client)

    # -- real time ----------------------------------------------------------------------------

    @property
    def client(self) -> openai.AsyncOpenAI:
        """The SDK client this provider calls through (its base URL, key, timeout)."""
        return self._client

    async def send(self, params: dict[str, Any]) -> Any:
        """`chat.completions.create` with the stored params."""
        return await self._client.chat.completions.create(**params)

    def reply_usage(self, reply: Any) -> tuple[str, TokenCounts] | None:
        """The model and canonical token counts of a `ChatCompletion` (prompt tokens read
        from the cache counted apart); None for anything else (a stream)."""
        if not isinstance(reply, ChatCompletion):
            return None
        body = canonical_message(reply.model_dump(mode="json"))
        return reply.model, TokenCounts.from_usage(body["usage"])

    def reply_result(self, reply: Any) -> dict[str, Any]:
        """The canonical `succeeded` result of a real-time `ChatCompletion`."""
        return {
            "type": "succeeded",
            "message": canonical_message(json.loads(reply.model_dump_json())),
            "openai": {"status_code": 200, "request_id": getattr(reply, "_request_id", None)},
        }

    def error_result(self, exc: BaseException) -> dict[str, Any] | None:
        """The canonical `errored` result of an `openai.APIStatusError`, its body kept."""
        if not isinstance(exc, openai.APIStatusError):
            return None
        body = exc.body if isinstance(exc.body, dict) else None
        if body is not None and "error" not in body:
            body = {"error": body}
        return canonical_result(
            {"response": {"status_code": exc.status_code, "request_id": exc.request_id, "body": body}}
        )

    # -- batches ------------------------------------------------------------------------------

    async def create_batch(
        self, body: AsyncIterator[bytes], *, length: int, intent_id: int, model: str | None
    ) -> RemoteBatch:
        """Upload `body` (the JSONL input file, `length` bytes) and create a batch of it.

        A failed upload raises `InputFileUploadError` (from the SDK's error): no batch can
        exist. A `batches.create` refused with an error status deletes the uploaded file
        first; a lost answer leaves it, since the batch may exist and read it (`sweep`
        deletes it once no batch does)."""
        upload = MultipartUpload.new(f"{INPUT_FILE_PREFIX}{intent_id}.jsonl", length)
        try:
            uploaded = await self._uploads.post(
                "/files",
                content=upload.stream(body),
                cast_to=FileObject,
                options={
                    "headers": {
                        _MULTIPART_HEADER: upload.content_type,
                        "Content-Length": str(upload.content_length),
                    }
                },
            )
        except Exception as exc:
            raise errors.InputFileUploadError(
                f"the batch input file ({length} bytes) did not upload: {exc}"
            ) from exc
        try:
            batch = await self._once.batches.create(
                input_file_id=uploaded.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata={INTENT_METADATA_KEY: str(intent_id)},
            )
        except openai.APIStatusError:
            await self._delete_file(uploaded.id)
            raise
        log.info("openai_batch_created", batch_id=batch.id, input_file=uploaded.id, bytes=length, model=model)
        return remote_batch(batch)

    async def retrieve_batch(self, api_id: str) -> RemoteBatch:
        return remote_batch(await self._client.batches.retrieve(api_id))

    async def list_batches(self, *, since: float) -> AsyncIterator[RemoteBatch]:
        """Batches created at or after `since`, newest first (the API's own order)."""
        async for batch in self._client.batches.list(limit=_LIST_PAGE):
            if batch.created_at < since:
                return
            yield remote_batch(batch)

    async def cancel_batch(self, api_id: str) -> None:
        await self._client.batches.cancel(api_id)

    async def _files_of(self, batch: str | RemoteBatch) -> OpenAIRemoteBatch:
        if isinstance(batch, OpenAIRemoteBatch):
            return batch
        api_id = batch if isinstance(batch, str) else batch.id
        return remote_batch(await self._client.batches.retrieve(api_id))

    @asynccontextmanager
    async def result_lines(self, batch: str | RemoteBatch) -> AsyncIterator[AsyncIterator[list[bytes]]]:
        """The output file's lines, then the error file's, as canonical lines in blocks.
        Given an id, the batch is retrieved first for its file ids."""
        known = await self._files_of(batch)
        blocks = self._blocks([known.output_file_id, known.error_file_id])
        try:
            yield blocks
        finally:
            await blocks.aclose()

    async def _blocks(self, file_ids: list[str | None]) -> AsyncGenerator[list[bytes]]:
        block: list[bytes] = []
        for file_id in file_ids:
            if file_id is None:
                continue
            # aclosing: a reader that stops early closes the file's stream at once.
            async with aclosing(self._file_lines(file_id)) as lines:
                async for raw in lines:
                    block.append(canonical_line(raw))
                    if len(block) >= _BLOCK_LINES:
                        yield block
                        block = []
        if block:
            yield block

    async def _file_lines(self, file_id: str) -> AsyncGenerator[bytes]:
        """A file's non-blank lines as they stream in; a last line with no newline only once
        the stream has ended cleanly (a broken stream raises before it is seen)."""
        pending = b""
        async with self._client.files.with_streaming_response.content(file_id) as response:
            async for chunk in response.iter_bytes():
                pending += chunk
                lines = pending.split(b"\n")
                pending = lines.pop()
                for line in lines:
                    if line.strip():
                        yield line
        if pending.strip():
            yield pending

    async def discard_results(self, batch: str | RemoteBatch) -> None:
        """Delete the batch's input, output and error files; a file already gone is fine.
        Every file is tried; the first error is raised once all have been."""
        known = await self._files_of(batch)
        first: openai.OpenAIError | None = None
        for file_id in (known.input_file_id, known.output_file_id, known.error_file_id):
            if file_id is not None:
                try:
                    await self._client.files.delete(file_id)
                except openai.NotFoundError:
                    pass
                except openai.OpenAIError as exc:
                    first = first or exc
        if first is not None:
            raise first

    async def sweep(self, *, now: float, closed: ClosedBatches) -> int:
        """Delete the files of batches the store has closed, and every input file this router
        names (`INPUT_FILE_PREFIX`) that no batch reads `ORPHAN_AGE` after its upload (its
        create was lost, or refused and its delete failed). Such a file is an orphan
        whichever router on the account uploaded it: a create follows its upload at once.
        A delete that fails is logged and left to the next sweep."""
        files: list[FileObject] = []
        for purpose in ("batch", "batch_output"):
            files.extend([f async for f in self._client.files.list(purpose=purpose)])
        if not files:
            return 0
        present = {f.id for f in files}
        since = min(f.created_at for f in files) - _CLOCK_SKEW
        listed = [b async for b in self.list_batches(since=since)]
        batches = [b for b in listed if isinstance(b, OpenAIRemoteBatch)]
        done = set(await closed([b.id for b in batches]))
        read = {fid for b in batches for fid in (b.input_file_id, b.output_file_id, b.error_file_id)}
        doomed = [
            fid
            for b in batches
            if b.id in done
            for fid in (b.input_file_id, b.output_file_id, b.error_file_id)
            if fid in present
        ]
        doomed += [
            f.id
            for f in files
            if f.purpose == "batch"
            and f.filename.startswith(INPUT_FILE_PREFIX)
            and f.id not in read
            and f.created_at <= now - ORPHAN_AGE
        ]
        return sum([await self._delete_file(file_id) for file_id in dict.fromkeys(doomed)])

    async def _delete_file(self, file_id: str) -> bool:
        """Whether the file was deleted here. One already gone is not; a failed delete is
        logged and harmless meanwhile (the next `sweep` deletes the orphan)."""
        try:
            await self._client.files.delete(file_id)
        except openai.NotFoundError:
            return False
        except openai.OpenAIError as exc:
            log.warning("openai_file_not_deleted", file_id=file_id, error=str(exc))
            return False
        return True

    # -- results to the caller ----------------------------------------------------------------

    def outcome(self, result: Mapping[str, Any]) -> Any:
        """The `ChatCompletion` of a `succeeded` result (usage as OpenAI sent it), or the
        `openai` exception an `errored` one would have raised in real time."""
        kind = result.get("type")
        if kind == "succeeded":
            kept = result.get("openai")
            request_id = kept.get("request_id") if isinstance(kept, Mapping) else None
            return self._completion(result["message"], request_id if isinstance(request_id, str) else None)
        if kind == "errored":
            return self._exception(result)
        raise ValueError(f"no outcome object for a {kind!r} result")

    def _completion(self, message: Mapping[str, Any], request_id: str | None) -> ChatCompletion:
        body = dict(message)
        usage = body.get("usage")
        if isinstance(usage, Mapping):
            body["usage"] = provider_usage(usage)
        # As the SDK parses a real-time reply: validated in strict mode, else constructed.
        completion: object
        if self._client._strict_response_validation:
            completion = validate_type(type_=ChatCompletion, value=body)
        else:
            completion = construct_type(type_=ChatCompletion, value=body)
        assert isinstance(completion, ChatCompletion)
        add_request_id(completion, request_id)
        return completion

    def _exception(self, result: Mapping[str, Any]) -> openai.OpenAIError:
        kept = result.get("openai")
        request = httpx2.Request("POST", str(self._client.base_url).rstrip("/") + "/chat/completions")
        if not isinstance(kept, Mapping):
            # A canonical line the codec did not write: rebuild from the canonical error.
            error = result.get("error")
            inner = error.get("error") if isinstance(error, Mapping) else None
            inner = inner if isinstance(inner, Mapping) else {}
            kind = str(inner.get("type") or "api_error")
            kept = {
                "status_code": STATUS_BY_ERROR_TYPE.get(kind, 500),
                "body": {"error": {"message": inner.get("message"), "type": kind, "param": None}},
            }
        status = kept.get("status_code")
        if not isinstance(status, int):
            # A request that failed without an HTTP answer: no status exception fits it.
            failure = kept.get("error")
            message = str(failure.get("message")) if isinstance(failure, Mapping) else "the request failed"
            return openai.APIError(message, request, body=failure)
        request_id = kept.get("request_id")
        headers = {"x-request-id": request_id} if isinstance(request_id, str) else {}
        response = httpx2.Response(status, request=request, json=kept.get("body"), headers=headers)
        return self._client._make_status_error_from_response(response)

    # -- errors -------------------------------------------------------------------------------

    def is_certain_failure(self, exc: BaseException, *, body_started: bool) -> bool:
        return errors.is_certain_failure(exc, body_started=body_started)

    def is_not_found(self, exc: BaseException) -> bool:
        return errors.is_not_found(exc)

    def is_transient(self, exc: BaseException) -> bool:
        return errors.is_transient(exc)

    def is_retryable(self, exc: BaseException) -> bool:
        return errors.is_retryable(exc)

    def retry_after(self, exc: BaseException | None) -> float | None:
        return errors.retry_after(exc)


if TYPE_CHECKING:  # mypy proves the class implements the interface

    def _implements(client: openai.AsyncOpenAI) -> Provider:
        return OpenAIProvider(client)
