"""The `anthropic.AsyncAnthropic` client of `[anthropic]`, or of a base URL and key given in code."""

from __future__ import annotations

from typing import Any

from anthropic import AsyncAnthropic

from router.config import AnthropicSettings

__all__ = ["AsyncAnthropic", "build_client", "connect"]


def build_client(settings: AnthropicSettings) -> AsyncAnthropic:
    """The SDK client of these settings (timeout, retries, base_url); the key comes from
    ANTHROPIC_API_KEY only."""
    kwargs: dict[str, Any] = {"timeout": settings.timeout, "max_retries": settings.max_retries}
    if settings.base_url:
        kwargs["base_url"] = settings.base_url
    return AsyncAnthropic(**kwargs)


def connect(base_url: str | None = None, api_key: str | None = None) -> AsyncAnthropic:
    """An SDK client with the SDK's own defaults, for `base_url` and `api_key` when given
    (else ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY): the demo's, live or on the emulator."""
    return AsyncAnthropic(base_url=base_url, api_key=api_key)
