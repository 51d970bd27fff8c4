"""The `openai.AsyncOpenAI` client of `[providers.openai]`."""

from __future__ import annotations

import os
from typing import Any

import openai

from router.config import OpenAISettings
from router.errors import RouterError

__all__ = ["build_client"]


def build_client(settings: OpenAISettings) -> openai.AsyncOpenAI:
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
    return openai.AsyncOpenAI(**kwargs)
