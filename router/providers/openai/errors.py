"""What an `openai` SDK error means to the engine: certain, transient, not found, when to retry."""

from __future__ import annotations

import email.utils
import time

import httpx2
import openai

from router.errors import causes
from router.providers.openai.framing import BodyLengthError

__all__ = [
    "InputFileUploadError",
    "api_error_of",
    "causes",
    "is_certain_failure",
    "is_not_found",
    "is_retryable",
    "is_transient",
    "retry_after",
]


class InputFileUploadError(Exception):
    """The batch input file did not upload, so `batches.create` was never sent: no batch
    exists. At worst a file was stored whose answer was lost; it is named after the
    intent (``hybrid-router-<intent id>.jsonl``) and harmless."""


def api_error_of(exc: BaseException | None) -> BaseException | None:
    """The SDK or transport error in `exc`'s chain (through `InputFileUploadError`)."""
    if exc is None:
        return None
    for error in causes(exc):
        if isinstance(error, openai.OpenAIError | httpx2.HTTPError):
            return error
    return None


def is_certain_failure(exc: BaseException, *, body_started: bool) -> bool:
    """True when a failed `create_batch` surely created no batch.

    - The upload of the input file failed (`InputFileUploadError`), however: the batch
      is created by a second call that was never made.
    - The body was never started, or was found to be the wrong length.
    - `batches.create` was answered with an error status.

    A lost answer to `batches.create` (a dropped connection, a timeout) is uncertain: the
    batch may exist. It carries the intent id in its metadata, so reconciliation finds it
    exactly through `list_batches`.
    """
    if not body_started:
        return True
    for error in causes(exc):
        if isinstance(error, InputFileUploadError | BodyLengthError | openai.APIStatusError):
            return True
    return False


def is_not_found(exc: BaseException) -> bool:
    """A 404: the batch or file does not exist (any more)."""
    return isinstance(api_error_of(exc), openai.NotFoundError)


def is_transient(exc: BaseException) -> bool:
    """A connection error, a timeout, a 408, 429 or 5xx: the same call may work later. (A 409
    is not: OpenAI answers it to a cancel of an ended batch.)"""
    error = api_error_of(exc)
    if isinstance(error, openai.APIConnectionError | httpx2.TransportError):
        return True
    if isinstance(error, openai.APIStatusError):
        return error.status_code in (408, 429) or error.status_code >= 500
    return False


def is_retryable(exc: BaseException) -> bool:
    """A real-time call that failed so may work if sent again: no answer (connection lost,
    timeout), or 408, 409, 429 or 5xx; any other answer is about the request itself."""
    error = api_error_of(exc)
    if isinstance(error, openai.APIStatusError):
        return error.status_code in (408, 409, 429) or error.status_code >= 500
    return isinstance(error, openai.APIConnectionError | httpx2.TransportError)


def retry_after(exc: BaseException | None) -> float | None:
    """Seconds from the error's ``retry-after-ms`` or ``retry-after`` header (seconds or an
    HTTP date), if any."""
    error = api_error_of(exc)
    if not isinstance(error, openai.APIStatusError):
        return None
    headers = error.response.headers
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
