"""The Anthropic provider: the Messages and Message Batches APIs through the `anthropic` SDK."""

from __future__ import annotations

from .provider import BATCH_FORMAT, BATCH_LIMITS, AnthropicProvider

__all__ = ["BATCH_FORMAT", "BATCH_LIMITS", "AnthropicProvider"]
