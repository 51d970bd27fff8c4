"""The `openai.AsyncOpenAI` client of `[providers.openai]`, or of a base URL and key given in code."""

from __future__ import annotations

import os
from typing import Any

from openai import AsyncOpenAI

from router.config import OpenAISettings
from router.errors import RouterError

__all__ = ["AsyncOpenAI", "build_client", "connect"]


def build_client(settings: OpenAISettings) -> AsyncOpenAI:
    """The SDK client of these settings (base_url, else OPENAI_BASE_URL, else the SDK's
    default); the key comes from OPENAI_API_KEY only."""
    if not os.environ.get("OPENAI_API_KEY"):
        raise RouterError(
            "OpenAI is configured but OPENAI_API_KEY is not set; set it (the key is never read from"
            " the config file)"
        )
    kwargs: dict[str, Any] = {"timeout": settings.timeout, "max_retries": settings.max_retries}
    base_url = settings.base_url or os.environ.get("OPENAI_BASE_URL")
    if base_url:
        kwargs["base_url"] = base_url
    return AsyncOpenAI(**kwargs)


def connect(base_url: str, api_key: str) -> AsyncOpenAI:
    """An SDK client with the SDK's own defaults for this base URL and key (the demo's, on the
    emulator)."""
    return AsyncOpenAI(base_url=base_url, api_key=api_key)
