"""OpenAI batches: validation of the input file, their statuses on the clock, output and error files.

A batch is created `validating`. When `OpenAIConfig.validating_seconds` have passed
(0: on the next request), its input file is checked line by line; any problem fails
the batch (`failed`, with `errors.data` naming the line and a code: `invalid_json_line`,
`missing_required_parameter`, `invalid_value`, `url_mismatch`, `duplicate_custom_id`,
`model_mismatch`, `empty_file`, `too_many_tasks`, `file_too_large`), as does a refusal
queued by `OpenAIConfig.refuse_next` (any code, e.g. `token_limit_exceeded`). Otherwise it is
`in_progress` until ``created_at + batch_seconds`` (the turnaround in force at creation,
plus `late_seconds` for a late batch), then `finalizing` for
`OpenAIConfig.finalizing_seconds`, then `completed`. A batch whose turnaround reaches
the 24 h window ends `expired`: a partial batch (`OutcomeConfig.partial_rate`) with its
first `partial_done` share processed, any other with none; the rest are error lines
with code `batch_expired`. A cancelled batch is `cancelling` until the clock moves past
the cancel, then `cancelled`, every request an error line with code `batch_cancelled`.

Per request, as on the Anthropic side: a body that fails validation, an
``[emulator:error=TYPE]`` directive, or an `OutcomeConfig.errored` draw gives an error
line with that HTTP status and OpenAI's error body; ``[emulator:expire]`` or an
`OutcomeConfig.expired` draw gives a `batch_expired` line. Lines are written shuffled
(seeded), never in input order. Checks are lazy, run whenever anything reads batches.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from router.emulator.clock import Clock
from router.emulator.config import EmulatorConfig
from router.emulator.errors import STATUS_BY_ERROR_TYPE
from router.emulator.ids import new_id
from router.emulator.openai.chat import (
    ChatPlan,
    PrefixCache,
    chat_completion,
    check_metadata,
    plan_chat,
    validate_chat,
)
from router.emulator.openai.errors import OpenAIError, error_object, openai_status
from router.emulator.openai.files import FileStore, StoredFile, check_expires_after, int_param

__all__ = ["BATCH_ENDPOINTS", "BATCH_WINDOW_SECONDS", "SERVED_ENDPOINTS", "OpenAIBatch", "OpenAIBatchStore"]

BATCH_WINDOW_SECONDS = 24 * 3600.0
# Every endpoint the SDK's `batches.create` names; the emulator runs chat completions only.
BATCH_ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
SERVED_ENDPOINTS = ("/v1/chat/completions",)
CREATE_FIELDS = frozenset(
    {"input_file_id", "endpoint", "completion_window", "metadata", "output_expires_after"}
)
MAX_LISTED_ERRORS = 100
BatchStatus = Literal[
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"
]
FINAL_STATUSES = frozenset({"failed", "completed", "expired", "cancelled"})
_EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
_CANCELLED_MESSAGE = "This request was not executed because the batch was cancelled."
_COMPACT = json.JSONEncoder(separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class _Request:
    """One line of a validated input file: a plan to answer, or the 4xx its body earns."""

    custom_id: str
    plan: ChatPlan | None
    error: OpenAIError | None


def _line(custom_id: str, response: dict[str, Any] | None, error: dict[str, Any] | None) -> bytes:
    body = {"id": new_id("batch_req_emu"), "custom_id": custom_id, "response": response, "error": error}
    return _COMPACT.encode(body).encode() + b"\n"


def _response(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"status_code": status, "request_id": new_id("req_emu"), "body": body}


class _Problems:
    """Validation errors of an input file, in OpenAI's `BatchError` shape."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, code: str, message: str, *, line: int | None = None, param: str | None = None) -> None:
        if len(self.items) < MAX_LISTED_ERRORS:
            self.items.append({"code": code, "message": message, "param": param, "line": line})


class OpenAIBatch:
    """One batch as the emulator holds it; read them through `emu.openai.batches`."""

    def __init__(
        self,
        *,
        seq: int,
        input_file: StoredFile,
        endpoint: str,
        metadata: dict[str, str] | None,
        created_at: float,
        validates_at: float,
        turnaround: float,
    ) -> None:
        self.id = new_id("batch_emu")
        self.seq = seq
        self.input_file_id = input_file.id
        self.endpoint = endpoint
        self.metadata = metadata
        self.created_at = created_at
        self.expires_at = created_at + BATCH_WINDOW_SECONDS
        self.validates_at = validates_at
        self.ends_at = min(created_at + turnaround, self.expires_at)
        """When processing ends by itself (the clock decides)."""
        self.status: BatchStatus = "validating"
        self.model: str | None = None
        self.errors: list[dict[str, Any]] | None = None
        self.request_counts = {"total": 0, "completed": 0, "failed": 0}
        self.usage = {"input_tokens": 0, "cached_tokens": 0, "output_tokens": 0}
        self.output_file_id: str | None = None
        self.error_file_id: str | None = None
        self.partial_done: float | None = None
        """Set for a batch that runs out of time: the share of its requests processed."""
        self.output_expires_after: float | None = None
        self.times: dict[str, float] = {}
        """`in_progress_at`, `finalizing_at`, `completed_at`, ... as they happen."""
        self._data: bytes | None = input_file.data
        self._requests: list[_Request] | None = None

    @property
    def final(self) -> bool:
        """True once the batch can no longer change."""
        return self.status in FINAL_STATUSES

    def to_api(self) -> dict[str, Any]:
        """The `Batch` object the API returns."""
        usage = self.usage

        def at(name: str) -> int | None:
            moment = self.times.get(name)
            return None if moment is None else int(moment)

        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": None if self.errors is None else {"object": "list", "data": list(self.errors)},
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created_at),
            "in_progress_at": at("in_progress_at"),
            "expires_at": int(self.expires_at),
            "finalizing_at": at("finalizing_at"),
            "completed_at": at("completed_at"),
            "failed_at": at("failed_at"),
            "expired_at": at("expired_at"),
            "cancelling_at": at("cancelling_at"),
            "cancelled_at": at("cancelled_at"),
            "request_counts": dict(self.request_counts),
            "usage": {
                "input_tokens": usage["input_tokens"],
                "input_tokens_details": {"cached_tokens": usage["cached_tokens"]},
                "output_tokens": usage["output_tokens"],
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": usage["input_tokens"] + usage["output_tokens"],
            },
            "metadata": None if self.metadata is None else dict(self.metadata),
        }

    def __repr__(self) -> str:
        return f"OpenAIBatch(id={self.id!r}, status={self.status!r}, requests={self.request_counts['total']})"


class OpenAIBatchStore:
    """Every OpenAI batch of one emulator, and the rules that move them along."""

    def __init__(
        self, *, clock: Clock, config: EmulatorConfig, files: FileStore, cache: PrefixCache, seed: int
    ) -> None:
        self._clock = clock
        self._config = config
        self._files = files
        self._cache = cache
        self._seed = seed
        self._seq = 0
        self._batches: dict[str, OpenAIBatch] = {}

    @property
    def batches(self) -> Mapping[str, OpenAIBatch]:
        """Batches by id, oldest first."""
        return self._batches

    # -- API operations ---------------------------------------------------------------------

    def create(self, body: object) -> OpenAIBatch:
        """Check a `POST /v1/batches` body (the input file's lines wait for validation); store it."""
        if not isinstance(body, dict):
            raise OpenAIError.invalid("Invalid type for 'body': expected an object.", code="invalid_type")
        unknown = sorted(set(body) - CREATE_FIELDS)
        if unknown:
            raise OpenAIError.invalid(
                f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0]
            )
        for name in ("input_file_id", "endpoint", "completion_window"):
            if name not in body:
                raise OpenAIError.invalid(
                    f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter"
                )
        if body["completion_window"] != "24h":
            raise OpenAIError.invalid(
                f"Invalid value: '{body['completion_window']}'. Supported values are: '24h'.",
                param="completion_window",
                code="invalid_value",
            )
        endpoint = body["endpoint"]
        if endpoint not in BATCH_ENDPOINTS:
            raise OpenAIError.invalid(
                f"Invalid value: '{endpoint}'. Supported values are: "
                + ", ".join(f"'{e}'" for e in BATCH_ENDPOINTS)
                + ".",
                param="endpoint",
                code="invalid_value",
            )
        if endpoint not in SERVED_ENDPOINTS:
            raise OpenAIError.invalid(
                f"Invalid value: '{endpoint}'. The emulator runs batches of "
                + ", ".join(SERVED_ENDPOINTS)
                + " only.",
                param="endpoint",
                code="invalid_value",
            )
        file_id = body["input_file_id"]
        if not isinstance(file_id, str):
            raise OpenAIError.invalid(
                "Invalid type for 'input_file_id': expected a string.",
                param="input_file_id",
                code="invalid_type",
            )
        stored = self._files.files.get(file_id)
        if stored is None:
            raise OpenAIError.not_found(
                f"Invalid 'input_file_id': '{file_id}'. File with id '{file_id}' not found.",
                param="input_file_id",
            )
        if stored.purpose != "batch":
            raise OpenAIError.invalid(
                f"Invalid 'input_file_id': '{file_id}' was uploaded with purpose '{stored.purpose}'; "
                "a batch needs purpose 'batch'.",
                param="input_file_id",
            )
        metadata = body.get("metadata")
        if metadata is not None:
            metadata = dict(check_metadata(metadata, "metadata"))
        expires_after = check_expires_after(body.get("output_expires_after"), "output_expires_after")
        self._seq += 1
        now = self._clock.now()
        turnaround, partial = self._draw_turnaround()
        batch = OpenAIBatch(
            seq=self._seq,
            input_file=stored,
            endpoint=endpoint,
            metadata=metadata,
            created_at=now,
            validates_at=now + self._config.openai.validating_seconds,
            turnaround=turnaround,
        )
        batch.partial_done = partial
        batch.output_expires_after = expires_after
        self._batches[batch.id] = batch
        return batch

    def get(self, batch_id: str) -> OpenAIBatch:
        """The batch, or OpenAI's 404."""
        batch = self._batches.get(batch_id)
        if batch is None:
            raise OpenAIError.not_found(f"No batch found with id '{batch_id}'.", param="batch_id")
        return batch

    def cancel(self, batch_id: str) -> OpenAIBatch:
        """Start cancelling; a no-op while cancelling, a 409 once the batch is final."""
        batch = self.get(batch_id)
        if batch.final:
            raise OpenAIError(409, f"Cannot cancel a batch with status '{batch.status}'.")
        if batch.status != "cancelling":
            batch.status = "cancelling"
            batch.times["cancelling_at"] = self._clock.now()
        return batch

    def page(self, query: Mapping[str, str]) -> dict[str, Any]:
        """The body of `GET /v1/batches` (newest first; `limit`, `after`)."""
        limit = int_param(query, "limit", 1, 100, 20)
        listed = sorted(self._batches.values(), key=lambda b: b.seq, reverse=True)
        after = query.get("after")
        if after:
            cursor = self._batches.get(after)
            if cursor is None:
                raise OpenAIError.invalid(f"Invalid 'after': no batch with id '{after}'.", param="after")
            listed = [b for b in listed if b.seq < cursor.seq]
        page = listed[:limit]
        return {
            "object": "list",
            "data": [b.to_api() for b in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(listed) > limit,
        }

    # -- the clock --------------------------------------------------------------------------

    def refresh(self) -> int:
        """Move every batch as far as the clock allows; returns how many became final."""
        now = self._clock.now()
        finalizing = self._config.openai.finalizing_seconds
        ended = 0
        # In order of their end, so the prompt cache sees requests in time order.
        for batch in sorted(self._batches.values(), key=lambda b: (b.ends_at, b.seq)):
            if batch.final:
                continue
            if batch.status == "validating" and now >= batch.validates_at:
                self._validate(batch, batch.validates_at)
            if batch.status == "cancelling":
                cancelling_at = batch.times["cancelling_at"]
                if now > cancelling_at:
                    self._cancel(batch, cancelling_at)
            elif batch.status in ("in_progress", "finalizing") and now >= batch.ends_at:
                if batch.ends_at >= batch.expires_at:
                    self._process(batch, batch.ends_at, expired=True)
                elif now >= batch.ends_at + finalizing:
                    batch.times.setdefault("finalizing_at", batch.ends_at)
                    self._process(batch, batch.ends_at + finalizing, expired=False)
                else:
                    batch.status = "finalizing"
                    batch.times["finalizing_at"] = batch.ends_at
            ended += batch.final
        return ended

    def end_all(self) -> int:
        """Take every batch that is not final to its end now; returns how many ended."""
        self.refresh()
        now = self._clock.now()
        pending = [batch for batch in self._batches.values() if not batch.final]
        for batch in pending:
            if batch.status == "validating":
                self._validate(batch, now)
            if batch.status == "cancelling":
                self._cancel(batch, now)
            elif batch.status in ("in_progress", "finalizing"):
                batch.times.setdefault("finalizing_at", now)
                self._process(batch, now, expired=batch.partial_done is not None)
        return len(pending)

    # -- transitions ------------------------------------------------------------------------

    def _draw_turnaround(self) -> tuple[float, float | None]:
        turnaround = self._config.batch_seconds
        outcomes = self._config.outcomes
        partial: float | None = None
        draw = random.Random(f"{self._seed}:openai:partial:{self._seq}").random()
        if outcomes.partial_rate > 0 and draw < outcomes.partial_rate:
            partial = outcomes.partial_done
            turnaround = BATCH_WINDOW_SECONDS  # it runs until the 24 h window stops it
        late = random.Random(f"{self._seed}:openai:late:{self._seq}").random()
        if outcomes.late_rate > 0 and late < outcomes.late_rate:
            turnaround += outcomes.late_seconds
        return turnaround, partial

    def _validate(self, batch: OpenAIBatch, at: float) -> None:
        data, batch._data = batch._data or b"", None
        limits = self._config.openai
        problems = _Problems()
        requests: list[_Request] = []
        refusal = limits.take_refusal()
        if refusal is not None:
            problems.add(refusal.code, refusal.message, line=refusal.line, param=refusal.param)
        elif len(data) > limits.max_batch_bytes:
            problems.add(
                "file_too_large",
                f"The input file is {len(data):,} bytes; a batch input file holds at most "
                f"{limits.max_batch_bytes:,} bytes.",
            )
        else:
            requests = self._parse(data, batch.endpoint, problems, batch)
        if not problems.items and not requests:
            problems.add("empty_file", "The input file holds no requests.")
        if not problems.items and len(requests) > limits.max_batch_requests:
            problems.add(
                "too_many_tasks",
                f"The input file holds {len(requests):,} requests; a batch holds at most "
                f"{limits.max_batch_requests:,}.",
            )
        if problems.items:
            batch.status = "failed"
            batch.errors = problems.items
            batch.times["failed_at"] = at
            return
        batch._requests = requests
        batch.status = "in_progress"
        batch.times["in_progress_at"] = at
        # Processing starts once validated, however short the turnaround.
        batch.ends_at = min(max(batch.ends_at, at), batch.expires_at)
        batch.request_counts = {"total": len(requests), "completed": 0, "failed": 0}

    @staticmethod
    def _parse(data: bytes, endpoint: str, problems: _Problems, batch: OpenAIBatch) -> list[_Request]:
        requests: list[_Request] = []
        seen: set[str] = set()
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                problems.add("invalid_json_line", "This line is not parseable as valid JSON.", line=number)
                continue
            if not isinstance(line, dict):
                problems.add("invalid_json_line", "This line is not a JSON object.", line=number)
                continue
            missing = [name for name in ("custom_id", "method", "url", "body") if name not in line]
            if missing:
                problems.add(
                    "missing_required_parameter",
                    f"Missing required parameter: '{missing[0]}'.",
                    line=number,
                    param=missing[0],
                )
                continue
            custom_id, body = line["custom_id"], line["body"]
            if not isinstance(custom_id, str) or not custom_id:
                problems.add(
                    "invalid_value", "'custom_id' must be a non-empty string.", line=number, param="custom_id"
                )
                continue
            if line["method"] != "POST":
                problems.add(
                    "invalid_value",
                    f"Invalid method '{line['method']}'; expected 'POST'.",
                    line=number,
                    param="method",
                )
                continue
            if line["url"] != endpoint:
                problems.add(
                    "url_mismatch",
                    f"The provided url '{line['url']}' does not match the batch endpoint '{endpoint}'.",
                    line=number,
                    param="url",
                )
                continue
            if custom_id in seen:
                problems.add(
                    "duplicate_custom_id",
                    f"The custom_id '{custom_id}' appears more than once in the input file.",
                    line=number,
                    param="custom_id",
                )
                continue
            seen.add(custom_id)
            model = body.get("model") if isinstance(body, dict) else None
            if not isinstance(model, str) or not model:
                problems.add(
                    "missing_required_parameter",
                    "Missing required parameter: 'body.model'.",
                    line=number,
                    param="body.model",
                )
                continue
            if batch.model is None:
                batch.model = model
            elif model != batch.model:
                problems.add(
                    "model_mismatch",
                    f"The model '{model}' differs from '{batch.model}' of the lines before it; "
                    "a batch input file must use one model.",
                    line=number,
                    param="body.model",
                )
                continue
            requests.append(_plan(custom_id, body))
        return requests

    def _cancel(self, batch: OpenAIBatch, at: float) -> None:
        batch._data = None
        requests = batch._requests or []
        lines = [
            _line(r.custom_id, None, {"code": "batch_cancelled", "message": _CANCELLED_MESSAGE})
            for r in requests
        ]
        self._finish(batch, [], lines, at)
        batch.status = "cancelled"
        batch.times["cancelled_at"] = at

    def _process(self, batch: OpenAIBatch, at: float, *, expired: bool) -> None:
        requests = batch._requests or []
        done = len(requests)
        if expired:
            done = math.floor(len(requests) * batch.partial_done) if batch.partial_done is not None else 0
        outcomes = self._config.outcomes
        draws = random.Random(f"{self._seed}:openai:outcomes:{batch.seq}")
        random_outcomes = outcomes.expired > 0 or any(rate > 0 for rate in outcomes.errored.values())
        output: list[bytes] = []
        errors: list[bytes] = []
        usage = batch.usage
        for index, request in enumerate(requests):
            plan = request.plan
            error = request.error
            expire = index >= done or (plan is not None and plan.expire)
            if plan is not None and error is None and plan.error_type is not None:
                error = _directed_error(plan.error_type, request.custom_id)
            if error is None and not expire and random_outcomes:
                draw = draws.random()
                if draw < outcomes.expired:
                    expire = True
                else:
                    draw -= outcomes.expired
                    for kind, rate in outcomes.errored.items():
                        if draw < rate:
                            error = _directed_error(kind, request.custom_id)
                            break
                        draw -= rate
            if expire:
                errors.append(
                    _line(request.custom_id, None, {"code": "batch_expired", "message": _EXPIRED_MESSAGE})
                )
            elif error is not None:
                errors.append(_line(request.custom_id, _response(error.status, error_object(error)), None))
            else:
                assert plan is not None
                cached = self._cache.use(plan.prompt, at)
                body = chat_completion(plan, new_id("chatcmpl-emu"), at, cached)
                usage["input_tokens"] += plan.prompt.tokens
                usage["cached_tokens"] += cached
                usage["output_tokens"] += plan.completion_tokens
                output.append(_line(request.custom_id, _response(200, body), None))
        self._finish(batch, output, errors, at)
        if expired:
            batch.status = "expired"
            batch.times["expired_at"] = at
        else:
            batch.status = "completed"
            batch.times["completed_at"] = at

    def _finish(self, batch: OpenAIBatch, output: list[bytes], errors: list[bytes], at: float) -> None:
        order = random.Random(f"{self._seed}:openai:order:{batch.seq}")
        for name, lines in (("output", output), ("error", errors)):
            if not lines:
                continue
            shuffled = list(lines)
            order.shuffle(shuffled)
            if len(shuffled) > 1 and shuffled == lines:
                # Input order must never come back, even by chance: clients have to match on custom_id.
                shuffled = shuffled[1:] + shuffled[:1]
            stored = self._files.add(
                f"batch_{batch.id}_{name}.jsonl",
                "batch_output",
                b"".join(shuffled),
                expires_after=batch.output_expires_after,
            )
            if name == "output":
                batch.output_file_id = stored.id
            else:
                batch.error_file_id = stored.id
        batch.request_counts = {
            "total": len(batch._requests or []),
            "completed": len(output),
            "failed": len(errors),
        }
        batch._requests = None


def _plan(custom_id: str, body: object) -> _Request:
    try:
        params = validate_chat(body, prefix="body.")
        if params.get("stream"):
            raise OpenAIError.invalid("Streaming is not supported in a batch.", param="body.stream")
        return _Request(custom_id, plan_chat(params, prefix="body."), None)
    except OpenAIError as exc:
        return _Request(custom_id, None, exc)


def _directed_error(kind: str, custom_id: str) -> OpenAIError:
    status = openai_status(STATUS_BY_ERROR_TYPE.get(kind, 500))
    return OpenAIError(status, f"Emulated {kind} for request '{custom_id}'")
