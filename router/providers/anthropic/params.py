"""Checking and serializing `messages.create` keywords before a request is stored.

A deferred request is checked here, at call time, so that bad input fails while the
caller is still there, with a message that names the field, and nothing is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from anthropic import NotGiven, Omit
from anthropic._utils._json import openapi_dumps

from ...errors import InvalidRequestError
from ...params import ROUTER_KEYWORDS, body_params, check_model
from ..keywords import ANTHROPIC_CREATE, check_sdk_keywords, openai_create
from .cache_rules import CacheControlError, check_cache_control

__all__ = [
    "REALTIME_MAX_BYTES",
    "SDK_CREATE_KEYWORDS",
    "TRANSPORT_KEYWORDS",
    "batch_params",
    "check_call_keywords",
    "check_keywords",
    "serialize",
]

# Every keyword the installed SDK's messages.create takes, so the router follows the SDK.
SDK_CREATE_KEYWORDS: frozenset[str] = ANTHROPIC_CREATE.keywords
# Transport options of one HTTP call, and the keywords the SDK's create() sends as request
# headers rather than in the body: a request inside a batch is a body only, so they cannot
# travel there (stored in its params, the Batch API would reject the whole batch).
TRANSPORT_KEYWORDS = frozenset({"extra_headers", "extra_query", "timeout", "user_profile_id", "workspace_id"})

REALTIME_MAX_BYTES = 32_000_000  # the Messages endpoint's request size limit
_ROLES = ("user", "assistant")


def check_call_keywords(kwargs: Mapping[str, Any], method: str) -> None:
    """Raise TypeError for a keyword `method` does not take, as Python (and so the SDK) would.

    An unknown keyword is a mistake in the calling code, not in the request's values, so for
    create() it is the TypeError the SDK's `messages.create` raises, word for word
    ("AsyncMessages.create() got an unexpected keyword argument ..."); a keyword of the
    `openai` SDK's chat completions reads exactly so, a typo gets a hint after it.
    """
    check_sdk_keywords(
        kwargs,
        method=ANTHROPIC_CREATE.qualname if method == "create" else method,
        known=SDK_CREATE_KEYWORDS | ROUTER_KEYWORDS,
        foreign=lambda: openai_create().keywords - SDK_CREATE_KEYWORDS,
    )


def check_keywords(kwargs: Mapping[str, Any]) -> None:
    """Reject fields of a request given as data (a map() item, a JSONL line) that the SDK's
    messages.create would not take: a typo must not pass silently."""
    unknown = sorted(set(kwargs) - SDK_CREATE_KEYWORDS - ROUTER_KEYWORDS)
    if unknown:
        raise InvalidRequestError(
            f"messages.create() got unexpected keyword argument(s) {', '.join(unknown)}; it takes the"
            f" anthropic SDK's keywords ({', '.join(sorted(SDK_CREATE_KEYWORDS))}) plus latency, tag and key"
        )


def batch_params(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The params object of a batch request built from create() keywords, checked.

    Raises InvalidRequestError naming the field for anything the Batch API would reject
    or that cannot be deferred, `cache_control` included (`router.providers.anthropic.cache_rules`).
    """
    params = body_params(
        kwargs,
        transport=TRANSPORT_KEYWORDS,
        omitted=(NotGiven, Omit),
        no_stream="the Batch API rejects stream=true",
    )
    messages = params.get("messages")
    if messages is not None and not isinstance(messages, (list, tuple, str, bytes, Mapping)):
        if hasattr(messages, "__iter__"):  # a generator would be used up by the checks below
            params["messages"] = list(messages)
    _check_core(params)
    try:
        check_cache_control(params)
    except CacheControlError as exc:
        raise InvalidRequestError(str(exc)) from None
    return params


def _check_core(params: Mapping[str, Any]) -> None:
    check_model(params, ("model", "max_tokens", "messages"))
    max_tokens = params["max_tokens"]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidRequestError(f"max_tokens: expected an integer >= 1, got {max_tokens!r}")
    messages = params["messages"]
    if isinstance(messages, (str, bytes)) or not hasattr(messages, "__iter__"):
        raise InvalidRequestError(
            f"messages: expected a list of {{role, content}} objects, got {type(messages).__name__}"
        )
    messages = list(messages)
    if not messages:
        raise InvalidRequestError("messages: at least one message is required")
    for index, message in enumerate(messages):
        role = _field(message, "role")
        if role not in _ROLES:
            raise InvalidRequestError(f"messages.{index}.role: expected 'user' or 'assistant', got {role!r}")
        content = _field(message, "content")
        if isinstance(content, str):
            continue
        if content is None or isinstance(content, bytes) or not hasattr(content, "__iter__"):
            raise InvalidRequestError(
                f"messages.{index}.content: expected a string or a list of content blocks, got {content!r}"
            )
    system = params.get("system")
    if system is not None and not isinstance(system, str) and not hasattr(system, "__iter__"):
        raise InvalidRequestError(
            f"system: expected a string or a list of text blocks, got {type(system).__name__}"
        )
    stops = params.get("stop_sequences")
    if stops is not None and (isinstance(stops, str) or not all(isinstance(s, str) for s in stops)):
        raise InvalidRequestError("stop_sequences: expected a list of strings")


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def serialize(params: Mapping[str, Any]) -> bytes:
    """JSON bytes of params exactly as the SDK would send them (pydantic blocks, iterables, dates).
    Stored OpenAI bodies are in this encoding too (router/client.py)."""
    try:
        return openapi_dumps(dict(params))
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"params could not be serialized to JSON: {exc}") from None
