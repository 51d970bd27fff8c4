"""The typed keyword sets of `messages.create` and `messages.submit` (`router.create_params`).

They are built from the SDK's own `MessageCreateParams*` TypedDicts, so every keyword
of the installed SDK's `messages.create` keeps the SDK's type here without being copied,
and `Router.messages.create(**kwargs: Unpack[...])` overloads show IDEs and mypy the same
signature as `AsyncAnthropic().messages.create`, plus `latency`, `tag` and `key`.

A TypedDict field cannot say "or `omit`": code that passes the SDK's `omit`/`NOT_GIVEN`
sentinel for a keyword still works at run time, but a type checker asks it to leave the
keyword out instead.
"""

from __future__ import annotations

from typing import Required

import httpx2
from anthropic import NotGiven
from anthropic._types import Body, Headers, Query
from anthropic.types.message_create_params import (
    MessageCreateParamsBase,
    MessageCreateParamsNonStreaming,
    MessageCreateParamsStreaming,
)

# The SDK's TypedDicts are typing_extensions ones; a subclass mixing in typing.TypedDict
# would hit a metaclass conflict on Python 3.11.
from typing_extensions import TypedDict

__all__ = [
    "CreateParams",
    "CreateParamsMaybeStreaming",
    "CreateParamsStreaming",
    "RoutingParams",
    "SubmitParams",
]


class RoutingParams(TypedDict, total=False):
    """The keywords hybrid-router adds to the SDK's."""

    latency: str | None
    """The latency class (see the config's [classes]); None means the policy's default."""
    tag: str | None
    """A free label, used by the policy's rules and in reports."""
    key: str | None
    """An idempotency key under which `client.results` finds a deferred request."""


class _RequestOptions(TypedDict, total=False):
    # The SDK's per-call options, typed as in its create() signature. They are not in
    # MessageCreateParams because they shape the HTTP call rather than its body.
    extra_headers: Headers | None
    extra_query: Query | None
    extra_body: Body | None
    timeout: float | httpx2.Timeout | NotGiven | None


class CreateParams(MessageCreateParamsNonStreaming, _RequestOptions, RoutingParams, total=False):
    """Keywords of a `create()` that returns a Message (no `stream`, or `stream=False`)."""


class CreateParamsStreaming(MessageCreateParamsStreaming, _RequestOptions, RoutingParams, total=False):
    """Keywords of a real-time `create(stream=True)`, which returns the SDK's AsyncStream."""


class CreateParamsMaybeStreaming(MessageCreateParamsBase, _RequestOptions, RoutingParams, total=False):
    """Keywords of a `create(stream=flag)` with a flag known only at run time."""

    stream: Required[bool]


class SubmitParams(MessageCreateParamsNonStreaming, RoutingParams, total=False):
    """Keywords of `submit()`: a stored request carries its body only (and `extra_body`, merged in)."""

    extra_body: Body | None
