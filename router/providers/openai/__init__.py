"""The OpenAI provider: the Batch API and chat completions through `openai.AsyncOpenAI`."""

from __future__ import annotations

from router.providers.openai.client import build_client
from router.providers.openai.errors import InputFileUploadError
from router.providers.openai.framing import JSONL_FORMAT, BodyLengthError, frame_entry, jsonl_body
from router.providers.openai.provider import (
    INTENT_METADATA_KEY,
    OPENAI_LIMITS,
    OpenAIProvider,
    OpenAIRemoteBatch,
)

__all__ = [
    "INTENT_METADATA_KEY",
    "JSONL_FORMAT",
    "OPENAI_LIMITS",
    "BodyLengthError",
    "InputFileUploadError",
    "OpenAIProvider",
    "OpenAIRemoteBatch",
    "build_client",
    "frame_entry",
    "jsonl_body",
]
