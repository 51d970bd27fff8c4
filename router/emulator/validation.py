"""Request validation with the real API's rules; every error names the offending field.

Messages follow the API's wording: ``"<path>: <problem>"`` where the path is dotted
(``messages.0.content``); inside a batch the path starts with ``requests.N.params.``.
The ``cache_control`` rules (place, TTL, at most 4 breakpoints, 1 h before 5 min) are
`router.providers.anthropic.cache_rules`, shared with the router's call-time checks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from router.emulator.errors import ApiError
from router.providers.anthropic.cache_rules import CacheControlError, check_cache_control

__all__ = [
    "COUNT_TOKENS_FIELDS",
    "CREATE_FIELDS",
    "CUSTOM_ID_PATTERN",
    "validate_count_tokens",
    "validate_create",
]

# Every keyword `AsyncMessages.create` sends in the body, plus sampling knobs older callers pass.
CREATE_FIELDS = frozenset(
    {
        "max_tokens",
        "messages",
        "model",
        "cache_control",
        "container",
        "diagnostics",
        "inference_geo",
        "metadata",
        "output_config",
        "service_tier",
        "speed",
        "stop_sequences",
        "stream",
        "system",
        "thinking",
        "tool_choice",
        "tools",
        "temperature",
        "top_p",
        "top_k",
    }
)
COUNT_TOKENS_FIELDS = frozenset(
    {
        "messages",
        "model",
        "cache_control",
        "output_config",
        "speed",
        "system",
        "thinking",
        "tool_choice",
        "tools",
    }
)
CUSTOM_ID_PATTERN = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def _fail(path: str, problem: str) -> ApiError:
    return ApiError.invalid(f"{path}: {problem}")


def _is_int(value: object) -> bool:
    # bool is an int subclass, but the API rejects true/false for integer fields.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_object(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, "Input should be a valid dictionary")
    return value


def _check_block(value: object, path: str) -> None:
    block = _check_object(value, path)
    kind = block.get("type")
    if not isinstance(kind, str) or not kind:
        raise _fail(
            f"{path}.type", "Field required" if "type" not in block else "Input should be a valid string"
        )
    if kind == "text" and not isinstance(block.get("text"), str):
        raise _fail(
            f"{path}.text", "Field required" if "text" not in block else "Input should be a valid string"
        )


def _check_messages(value: object, path: str) -> None:
    if not isinstance(value, list):
        raise _fail(path, "Input should be a valid list")
    if not value:
        raise _fail(path, "at least one message is required")
    for i, item in enumerate(value):
        item_path = f"{path}.{i}"
        message = _check_object(item, item_path)
        if "role" not in message:
            raise _fail(f"{item_path}.role", "Field required")
        if message["role"] not in ("user", "assistant"):
            raise _fail(f"{item_path}.role", "Input should be 'user' or 'assistant'")
        if "content" not in message:
            raise _fail(f"{item_path}.content", "Field required")
        content = message["content"]
        if isinstance(content, list):
            for j, block in enumerate(content):
                _check_block(block, f"{item_path}.content.{j}")
        elif not isinstance(content, str):
            raise _fail(f"{item_path}.content", "Input should be a valid string or a list of content blocks")
        for key in message:
            if key not in ("role", "content"):
                raise _fail(f"{item_path}.{key}", "Extra inputs are not permitted")


def _check_system(value: object, path: str) -> None:
    if isinstance(value, str):
        return
    if not isinstance(value, list):
        raise _fail(path, "Input should be a valid string or a list of text blocks")
    for i, block in enumerate(value):
        _check_block(block, f"{path}.{i}")
        if block.get("type") != "text":
            raise _fail(f"{path}.{i}.type", "Input should be 'text'")


def _check_tools(value: object, path: str) -> None:
    if not isinstance(value, list):
        raise _fail(path, "Input should be a valid list")
    for i, item in enumerate(value):
        tool = _check_object(item, f"{path}.{i}")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _fail(
                f"{path}.{i}.name",
                "Field required" if "name" not in tool else "Input should be a valid string",
            )


def _check_common(params: Mapping[str, Any], prefix: str, allowed: frozenset[str]) -> None:
    for key in params:
        if key not in allowed:
            raise _fail(f"{prefix}{key}", "Extra inputs are not permitted")
    if "model" not in params:
        raise _fail(f"{prefix}model", "Field required")
    if not isinstance(params["model"], str) or not params["model"]:
        raise _fail(f"{prefix}model", "Input should be a non-empty string naming a model")
    if "messages" not in params:
        raise _fail(f"{prefix}messages", "Field required")
    _check_messages(params["messages"], f"{prefix}messages")
    if params.get("system") is not None:
        _check_system(params["system"], f"{prefix}system")
    if params.get("tools") is not None:
        _check_tools(params["tools"], f"{prefix}tools")
    for key in ("thinking", "tool_choice", "output_config", "metadata", "diagnostics"):
        if params.get(key) is not None:
            _check_object(params[key], f"{prefix}{key}")
    for key in ("thinking", "tool_choice"):
        value = params.get(key)
        if isinstance(value, dict) and not isinstance(value.get("type"), str):
            raise _fail(f"{prefix}{key}.type", "Field required")
    if params.get("speed") is not None and params["speed"] not in ("standard", "fast"):
        raise _fail(f"{prefix}speed", "Input should be 'standard' or 'fast'")
    try:
        check_cache_control(params, prefix=prefix)
    except CacheControlError as exc:
        raise ApiError.invalid(str(exc)) from None


def validate_create(body: object, *, prefix: str = "", in_batch: bool = False) -> Mapping[str, Any]:
    """Check a `POST /v1/messages` body (or a batch request's `params`); returns it as a mapping.

    Raises `ApiError` (400 `invalid_request_error`) naming the first bad field.
    """
    if not isinstance(body, dict):
        raise ApiError.invalid(f"{prefix.rstrip('.') or 'body'}: Input should be a valid dictionary")
    params: Mapping[str, Any] = body
    _check_common(params, prefix, CREATE_FIELDS)
    if "max_tokens" not in params:
        raise _fail(f"{prefix}max_tokens", "Field required")
    max_tokens = params["max_tokens"]
    if not _is_int(max_tokens):
        raise _fail(f"{prefix}max_tokens", "Input should be a valid integer")
    if max_tokens < 1:
        raise _fail(f"{prefix}max_tokens", "Input should be greater than or equal to 1")
    stream = params.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _fail(f"{prefix}stream", "Input should be a valid boolean")
    if in_batch and stream:
        raise _fail(f"{prefix}stream", "streaming is not supported in message batches")
    stops = params.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)):
        raise _fail(f"{prefix}stop_sequences", "Input should be a valid list of strings")
    for key, low, high in (("temperature", 0.0, 1.0), ("top_p", 0.0, 1.0)):
        value = params.get(key)
        if value is not None and (not _is_number(value) or not low <= value <= high):
            raise _fail(f"{prefix}{key}", f"Input should be a number between {low} and {high}")
    top_k = params.get("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        raise _fail(f"{prefix}top_k", "Input should be a non-negative integer")
    tier = params.get("service_tier")
    if tier is not None and tier not in ("auto", "standard_only"):
        raise _fail(f"{prefix}service_tier", "Input should be 'auto' or 'standard_only'")
    return params


def validate_count_tokens(body: object) -> Mapping[str, Any]:
    """Check a `POST /v1/messages/count_tokens` body; returns it as a mapping."""
    if not isinstance(body, dict):
        raise ApiError.invalid("body: Input should be a valid dictionary")
    params: Mapping[str, Any] = body
    _check_common(params, "", COUNT_TOKENS_FIELDS)
    return params
