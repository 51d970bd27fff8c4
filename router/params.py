"""Checking and serializing `messages.create` keywords before a request is stored.

A deferred request is checked here, at call time, so that bad input fails while the
caller is still there, with a message that names the field, and nothing is stored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from anthropic import NotGiven, Omit
from anthropic._utils._json import openapi_dumps

from .errors import InvalidRequestError
from .providers.anthropic.cache_rules import CacheControlError, check_cache_control
from .providers.keywords import ANTHROPIC_CREATE, check_sdk_keywords, openai_create

# Every keyword the installed SDK's messages.create takes, so the router follows the SDK.
SDK_CREATE_KEYWORDS: frozenset[str] = ANTHROPIC_CREATE.keywords
# Transport options of one HTTP call, and the keywords the SDK's create() sends as request
# headers rather than in the body: a request inside a batch is a body only, so they cannot
# travel there (stored in its params, the Batch API would reject the whole batch).
TRANSPORT_KEYWORDS = frozenset({"extra_headers", "extra_query", "timeout", "user_profile_id", "workspace_id"})
# Routing keywords hybrid-router adds on top of the SDK's.
ROUTER_KEYWORDS = frozenset({"latency", "tag", "key"})

REALTIME_MAX_BYTES = 32_000_000  # the Messages endpoint's request size limit
_KEY_MAX = 512
_ROLES = ("user", "assistant")


def _is_given(value: object) -> bool:
    return not isinstance(value, (NotGiven, Omit))


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


def check_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key or len(key) > _KEY_MAX:
        raise InvalidRequestError(
            f"key: expected a non-empty string of at most {_KEY_MAX} characters, got {key!r}"
        )
    return key


def check_tag(tag: object) -> str | None:
    if tag is None:
        return None
    if not isinstance(tag, str) or not tag:
        raise InvalidRequestError(f"tag: expected a non-empty string, got {tag!r}")
    return tag


def batch_params(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The params object of a batch request built from create() keywords, checked.

    Raises InvalidRequestError naming the field for anything the Batch API would reject
    or that cannot be deferred, `cache_control` included (`router.providers.anthropic.cache_rules`).
    """
    params: dict[str, Any] = {}
    for name, value in kwargs.items():
        if name in ROUTER_KEYWORDS or not _is_given(value):
            continue
        if name in TRANSPORT_KEYWORDS:
            if value is None:
                continue
            raise InvalidRequestError(
                f"{name}: per-call transport options and headers cannot be deferred into a batch; send this"
                ' request with latency="realtime" or drop the option'
            )
        if name == "extra_body":
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise InvalidRequestError(f"extra_body: expected a mapping, got {type(value).__name__}")
            params.update(value)
            continue
        params[name] = value
    if params.get("stream"):
        raise InvalidRequestError(
            "stream: streaming is not available for deferred requests (the Batch API rejects stream=true);"
            ' use latency="realtime" to stream'
        )
    params.pop("stream", None)
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
    for required in ("model", "max_tokens", "messages"):
        if required not in params:
            raise InvalidRequestError(f"{required}: this field is required")
    model = params["model"]
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequestError(f"model: expected a non-empty model name string, got {model!r}")
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
    """JSON bytes of params exactly as the SDK would send them (pydantic blocks, iterables, dates)."""
    try:
        return openapi_dumps(dict(params))
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"params could not be serialized to JSON: {exc}") from None


_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def is_valid_custom_id(value: str) -> bool:
    return bool(_CUSTOM_ID.match(value))
