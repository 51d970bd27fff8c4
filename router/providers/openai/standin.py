"""STAND-IN for the wt-oaengine contract: the OpenAI client and provider of a Router.

wt-oaengine builds them from `[providers.openai]` (router/config.py); the lead keeps its
version at merge and drops this module.
"""

from __future__ import annotations

import openai

from router.providers.base import Provider
from router.providers.openai.provider import OpenAIProvider


def build_openai_client() -> openai.AsyncOpenAI:
    """The SDK client from OPENAI_API_KEY and OPENAI_BASE_URL (the SDK reads both)."""
    return openai.AsyncOpenAI()


def openai_provider(client: openai.AsyncOpenAI) -> Provider:
    provider: Provider = OpenAIProvider(client)  # type: ignore[assignment]  # wt-oaengine completes it
    return provider
