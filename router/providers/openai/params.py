"""Checking `chat.completions.create` keywords before a request goes out or is stored.

As for `messages.create` (router/providers/anthropic/params.py): a keyword the `openai`
SDK does not take is its own TypeError; a value a batch cannot carry is an
InvalidRequestError naming the field, raised while the caller is still there, before
anything is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openai import NotGiven, Omit

from router.errors import InvalidRequestError
from router.params import ROUTER_KEYWORDS, body_params, check_model
from router.providers.keywords import check_sdk_keywords, openai_create

__all__ = ["OPENAI_CREATE_KEYWORDS", "batch_params", "check_call_keywords", "reject_batch_stream"]

OPENAI_CREATE_KEYWORDS: frozenset[str] = openai_create().keywords
# Per-call transport options: a request inside a batch is a body only, so they cannot travel there.
TRANSPORT_KEYWORDS = frozenset({"extra_headers", "extra_query", "timeout"})
_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


def check_call_keywords(kwargs: Mapping[str, Any], method: str) -> None:
    """The `openai` SDK's own TypeError for a keyword `chat.completions.create` does not take,
    word for word ("AsyncCompletions.create() got an unexpected keyword argument 'system'");
    `method` is "create" for it, else the router's own method ("submit")."""
    check_sdk_keywords(
        kwargs,
        method=openai_create().qualname if method == "create" else method,
        known=OPENAI_CREATE_KEYWORDS | ROUTER_KEYWORDS,
        hints=False,
    )


def _is_given(value: object) -> bool:
    return not isinstance(value, (NotGiven, Omit))


def reject_batch_stream(kwargs: Mapping[str, Any], latency: str) -> None:
    """A batch cannot stream: `stream=True` for a batch class fails before anything is stored."""
    if _is_given(kwargs.get("stream")) and kwargs.get("stream"):
        raise InvalidRequestError(
            f"stream: class {latency!r} is deferred to batches, and the Batch API cannot stream;"
            ' use latency="realtime" to stream'
        )


def batch_params(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The body of a batch line (`/v1/chat/completions`) built from create() keywords, checked."""
    params = body_params(
        kwargs,
        transport=TRANSPORT_KEYWORDS,
        omitted=(NotGiven, Omit),
        no_stream="the Batch API cannot stream",
    )
    params.pop("stream_options", None)
    _check_core(params)
    return params


def _check_core(params: dict[str, Any]) -> None:
    check_model(params, ("model", "messages"))
    messages = params["messages"]
    if isinstance(messages, (str, bytes, Mapping)) or not hasattr(messages, "__iter__"):
        raise InvalidRequestError(
            f"messages: expected a list of {{role, content}} objects, got {type(messages).__name__}"
        )
    messages = list(messages)  # a generator would be used up by the checks
    params["messages"] = messages
    if not messages:
        raise InvalidRequestError("messages: at least one message is required")
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, Mapping) else getattr(message, "role", None)
        if role not in _ROLES:
            expected = ", ".join(repr(r) for r in _ROLES)
            raise InvalidRequestError(f"messages.{index}.role: expected one of {expected}, got {role!r}")
