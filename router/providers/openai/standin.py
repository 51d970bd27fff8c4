"""STAND-IN for the wt-oaengine contract: the OpenAI client and provider of a Router.

wt-oaengine builds them from `[providers.openai]` (router/config.py); the lead keeps its
version at merge and drops this module.
"""

from __future__ import annotations

import openai

from router.providers.base import Provider
from router.providers.openai.provider import OpenAIProvider


def build_openai_client(base_url: str | None = None, api_key: str | None = None) -> openai.AsyncOpenAI:
    """The SDK client; what is not given comes from OPENAI_BASE_URL and OPENAI_API_KEY."""
    return openai.AsyncOpenAI(base_url=base_url, api_key=api_key)


def openai_provider(client: openai.AsyncOpenAI) -> Provider:
    provider: Provider = OpenAIProvider(client)  # type: ignore[assignment]  # wt-oaengine completes it
    return provider
