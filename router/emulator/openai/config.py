"""Runtime settings of the OpenAI Batch API emulation (`emu.config.openai`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["OPENAI_ENDPOINTS", "OPENAI_MAX_BATCH_BYTES", "OPENAI_MAX_BATCH_REQUESTS", "OpenAIConfig"]

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
