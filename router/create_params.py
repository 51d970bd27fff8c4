"""The typed keyword sets of `messages.create` and `messages.submit`, for typing your own
wrappers: `router.create_params.CreateParams` (router/providers/anthropic/create_params.py)."""

from __future__ import annotations

from .providers.anthropic.create_params import (
    CreateParams,
    CreateParamsMaybeStreaming,
    CreateParamsStreaming,
    RoutingParams,
    SubmitParams,
)

__all__ = [
    "CreateParams",
    "CreateParamsMaybeStreaming",
    "CreateParamsStreaming",
    "RoutingParams",
    "SubmitParams",
]
