"""Runtime settings of the OpenAI Batch API emulation (`emu.config.openai`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "OPENAI_ENDPOINTS",
    "OPENAI_MAX_BATCH_BYTES",
    "OPENAI_MAX_BATCH_REQUESTS",
    "BatchRefusal",
    "OpenAIConfig",
]

# Endpoint names of the OpenAI routes, for fault injection and the journal.
OPENAI_ENDPOINTS = (
    "openai.chat.completions",
    "openai.files.create",
    "openai.files.list",
    "openai.files.retrieve",
    "openai.files.content",
    "openai.files.delete",
    "openai.batches.create",
    "openai.batches.list",
    "openai.batches.retrieve",
    "openai.batches.cancel",
)

OPENAI_MAX_BATCH_REQUESTS = 50_000
OPENAI_MAX_BATCH_BYTES = 200 * 1024 * 1024


class BatchRefusal(BaseModel):
    """A validation failure forced on the next `count` batches to validate: each ends
    `failed` with this one entry in `errors.data`, whatever its input file holds."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    code: str = Field(min_length=1)
    """The entry's `code`, as OpenAI names it: `token_limit_exceeded` (the enqueued token
    limit), `model_not_found`, `invalid_json_line`, ..."""
    message: str = "The batch was refused in validation (forced by the emulator)."
    param: str | None = None
    line: int | None = Field(default=None, ge=1)
    count: int = Field(default=1, ge=0)


class OpenAIConfig(BaseModel):
    """How OpenAI batches move through their statuses, and the limits of an input file.

    A batch is `validating` until `validating_seconds` after its creation (0: until the
    next request), `in_progress` until its turnaround (`EmulatorConfig.batch_seconds`)
    has passed, then `finalizing` for `finalizing_seconds` (0: never seen) before it is
    `completed`.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    validating_seconds: float = Field(default=0.0, ge=0.0)
    finalizing_seconds: float = Field(default=0.0, ge=0.0)
    max_batch_requests: int = Field(default=OPENAI_MAX_BATCH_REQUESTS, ge=1)
    """More requests in an input file fail the batch with `too_many_tasks`."""
    max_batch_bytes: int = Field(default=OPENAI_MAX_BATCH_BYTES, ge=1)
    """A bigger input file fails the batch with `file_too_large`."""
    refusals: list[BatchRefusal] = Field(default_factory=list)
    """Validation failures forced on the next batches, the first entry first (`refuse_next`)."""

    def refuse_next(
        self,
        code: str,
        *,
        message: str | None = None,
        param: str | None = None,
        line: int | None = None,
        count: int = 1,
    ) -> None:
        """Make the next `count` batches to validate fail with `code` (see `BatchRefusal`)."""
        fields: dict[str, object] = {"code": code, "param": param, "line": line, "count": count}
        if message is not None:
            fields["message"] = message
        self.refusals.append(BatchRefusal.model_validate(fields))

    def take_refusal(self) -> BatchRefusal | None:
        """Consume one forced refusal, if any is queued."""
        while self.refusals:
            refusal = self.refusals[0]
            if refusal.count > 0:
                refusal.count -= 1
                if refusal.count == 0:
                    del self.refusals[0]
                return refusal
            del self.refusals[0]
        return None
