"""Chat completions: validation, deterministic replies, usage, automatic prompt caching, SSE chunks.

Replies follow the Anthropic side's rules (`router.emulator.replies`), in OpenAI's shapes:

- **Reply text**: ``"Reply to: "`` + the first 200 characters of the last user message's
  text (a string content, or its text parts joined), cut after `max_completion_tokens`
  (or `max_tokens`) words, with ``finish_reason`` ``"length"`` (else ``"stop"``).
- **Completion tokens**: the words of the reply (at least 1).
- **Prompt tokens**: ``max(1, ceil(C / 4))`` where ``C`` counts the characters of the
  canonical JSON (sorted keys, no spaces) of each tool and each message.
- **Prompt caching** is automatic, as OpenAI's: at each message boundary whose prefix
  is at least 1,024 tokens, the prefix (keyed by model, `prompt_cache_key` and content)
  is cached for 5 minutes on the emulator clock (24 hours with
  ``prompt_cache_retention="24h"``); a request reads the longest cached prefix, rounded
  down to a multiple of 128 tokens, as `prompt_tokens_details.cached_tokens`.

The directives ``[emulator:error=TYPE]`` (an HTTP error in real time, an error line in a
batch) and ``[emulator:expire]`` (a `batch_expired` line) work as on the Anthropic side.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from router.emulator.openai.errors import OpenAIError
from router.emulator.replies import DIRECTIVE_ERROR_TYPES, cut_to_words

__all__ = [
    "CHAT_FIELDS",
    "ChatPlan",
    "PrefixCache",
    "chat_completion",
    "check_metadata",
    "chunk_events",
    "completion_usage",
    "plan_chat",
    "validate_chat",
]

# What `AsyncCompletions.create` sends in the body; anything else OpenAI refuses as unrecognized.
CHAT_FIELDS = frozenset(
    {
        "messages",
        "model",
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "metadata",
        "modalities",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "prompt_cache_retention",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)
ROLES = ("developer", "system", "user", "assistant", "tool", "function")
REPLY_PREFIX = "Reply to: "
QUOTE_CHARS = 200
CACHE_MIN_TOKENS = 1024
CACHE_STEP_TOKENS = 128
CACHE_TTL_SECONDS = {"in_memory": 300.0, "24h": 86_400.0}
SYSTEM_FINGERPRINT = "fp_emulator"

_DIRECTIVE_ERROR = re.compile(r"\[emulator:error=([A-Za-z_]+)\]")
_DIRECTIVE_EXPIRE = "[emulator:expire]"
_WORD = re.compile(r"\S+")
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _type_name(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}
    return names.get(type(value), type(value).__name__)


def _missing(param: str) -> OpenAIError:
    return OpenAIError.invalid(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def _bad_type(param: str, value: object, expected: str) -> OpenAIError:
    return OpenAIError.invalid(
        f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead.",
        param=param,
        code="invalid_type",
    )


def _positive_int(params: Mapping[str, Any], name: str, prefix: str) -> None:
    value = params.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad_type(prefix + name, value, "an integer")
    if value < 1:
        raise OpenAIError.invalid(
            f"Invalid '{prefix}{name}': integer below minimum value. Expected a value >= 1, "
            f"but got {value} instead.",
            param=prefix + name,
            code="integer_below_min_value",
        )


def _content_text(content: object, param: str) -> str:
    """The text of a message's content; raises for a malformed one."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad_type(param, content, "one of a string or array of objects")
    texts: list[str] = []
    for i, part in enumerate(content):
        where = f"{param}[{i}]"
        if not isinstance(part, dict):
            raise _bad_type(where, part, "an object")
        if "type" not in part:
            raise _missing(f"{where}.type")
        if part["type"] == "text":
            if not isinstance(part.get("text"), str):
                raise _bad_type(f"{where}.text", part.get("text"), "a string")
            texts.append(part["text"])
    return "".join(texts)


def validate_chat(body: object, *, prefix: str = "") -> dict[str, Any]:
    """Check a `POST /v1/chat/completions` body as OpenAI does; returns it as a dict.

    `prefix` starts every parameter name (``body.`` for a line of a batch input file).
    """
    if not isinstance(body, dict):
        raise OpenAIError.invalid(
            f"Invalid type for '{prefix or 'body'}': expected an object.", code="invalid_type"
        )
    unknown = sorted(set(body) - CHAT_FIELDS)
    if unknown:
        raise OpenAIError.invalid(
            f"Unrecognized request argument supplied: {unknown[0]}", param=prefix + unknown[0]
        )
    if "model" not in body:
        raise _missing(prefix + "model")
    if not isinstance(body["model"], str) or not body["model"]:
        raise _bad_type(prefix + "model", body["model"], "a non-empty string")
    if "messages" not in body:
        raise _missing(prefix + "messages")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise _bad_type(prefix + "messages", messages, "an array")
    if not messages:
        raise OpenAIError.invalid(
            f"Invalid '{prefix}messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            param=prefix + "messages",
            code="empty_array",
        )
    for i, message in enumerate(messages):
        where = f"{prefix}messages[{i}]"
        if not isinstance(message, dict):
            raise _bad_type(where, message, "an object")
        if "role" not in message:
            raise _missing(f"{where}.role")
        if message["role"] not in ROLES:
            raise OpenAIError.invalid(
                f"Invalid value: '{message['role']}'. Supported values are: "
                + ", ".join(f"'{role}'" for role in ROLES)
                + ".",
                param=f"{where}.role",
                code="invalid_value",
            )
        content = message.get("content")
        if content is None and message["role"] != "assistant":
            raise _missing(f"{where}.content")
        if content is not None:
            _content_text(content, f"{where}.content")
    for name in ("max_tokens", "max_completion_tokens", "n"):
        _positive_int(body, name, prefix)
    if body.get("n", 1) != 1:
        raise OpenAIError.invalid(
            f"Invalid '{prefix}n': the emulator answers with one choice only (n=1).", param=prefix + "n"
        )
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad_type(prefix + "stream", stream, "a boolean")
    options = body.get("stream_options")
    if options is not None:
        if not stream:
            raise OpenAIError.invalid(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param=prefix + "stream_options",
            )
        if not isinstance(options, dict):
            raise _bad_type(prefix + "stream_options", options, "an object")
        include = options.get("include_usage")
        if include is not None and not isinstance(include, bool):
            raise _bad_type(prefix + "stream_options.include_usage", include, "a boolean")
    retention = body.get("prompt_cache_retention")
    if retention is not None and retention not in CACHE_TTL_SECONDS:
        raise OpenAIError.invalid(
            f"Invalid value: '{retention}'. Supported values are: 'in_memory' and '24h'.",
            param=prefix + "prompt_cache_retention",
            code="invalid_value",
        )
    metadata = body.get("metadata")
    if metadata is not None:
        check_metadata(metadata, prefix + "metadata")
    return body


def check_metadata(metadata: object, param: str) -> dict[str, str]:
    """OpenAI's metadata rules: at most 16 string pairs, keys to 64 and values to 512 characters."""
    if not isinstance(metadata, dict):
        raise _bad_type(param, metadata, "an object")
    if len(metadata) > 16:
        raise OpenAIError.invalid(
            f"Invalid '{param}': too many properties. Expected an object with at most 16 properties, "
            f"but got an object with {len(metadata)} properties instead.",
            param=param,
            code="object_above_max_properties",
        )
    for key, value in metadata.items():
        if len(key) > 64:
            raise OpenAIError.invalid(
                f"Invalid '{param}': key '{key[:20]}...' is longer than 64 characters.", param=param
            )
        if not isinstance(value, str):
            raise _bad_type(f"{param}.{key}", value, "a string")
        if len(value) > 512:
            raise OpenAIError.invalid(
                f"Invalid '{param}.{key}': string too long. Expected a string with maximum length 512, "
                f"but got a string with length {len(value)} instead.",
                param=f"{param}.{key}",
                code="string_above_max_length",
            )
    return metadata


@dataclass(frozen=True, slots=True)
class Prompt:
    """The input side of a request: its tokens, and (key, tokens) of each cacheable prefix."""

    tokens: int
    prefixes: tuple[tuple[bytes, int], ...]
    ttl: float


@dataclass(frozen=True, slots=True)
class ChatPlan:
    """Everything needed to answer a chat completion, now or when its batch ends."""

    model: str
    text: str
    finish_reason: str
    completion_tokens: int
    prompt: Prompt
    error_type: str | None
    expire: bool


def _prompt(params: Mapping[str, Any]) -> Prompt:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(params["model"]).encode() + b"\x00")
    digest.update(str(params.get("prompt_cache_key") or "").encode() + b"\x00")
    chars = 0
    prefixes: list[tuple[bytes, int]] = []
    segments = [*(params.get("tools") or ()), *params["messages"]]
    for index, segment in enumerate(segments):
        text = _CANONICAL.encode(segment)
        digest.update(text.encode() + b"\x00")
        chars += len(text)
        tokens = math.ceil(chars / 4)
        if index >= len(params.get("tools") or ()) and tokens >= CACHE_MIN_TOKENS:
            prefixes.append((digest.copy().digest(), tokens))
    ttl = CACHE_TTL_SECONDS[str(params.get("prompt_cache_retention") or "in_memory")]
    return Prompt(max(1, math.ceil(chars / 4)), tuple(prefixes), ttl)


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if message["role"] == "user" and message.get("content") is not None:
            return _content_text(message["content"], "messages")
    return ""


def plan_chat(params: Mapping[str, Any], *, prefix: str = "") -> ChatPlan:
    """The deterministic reply to validated chat params (see the module docs)."""
    user_text = _last_user_text(params["messages"])
    error_type: str | None = None
    match = _DIRECTIVE_ERROR.search(user_text)
    if match:
        error_type = match.group(1)
        if error_type not in DIRECTIVE_ERROR_TYPES:
            raise OpenAIError.invalid(
                f"Invalid '{prefix}messages': unknown error type {error_type!r} in [emulator:error=...]; "
                f"expected one of {', '.join(sorted(DIRECTIVE_ERROR_TYPES))}",
                param=prefix + "messages",
            )
    text = REPLY_PREFIX + user_text[:QUOTE_CHARS]
    limit = params.get("max_completion_tokens") or params.get("max_tokens")
    text, words, cut = cut_to_words(text, None if limit is None else int(limit))
    finish_reason = "length" if cut else "stop"
    return ChatPlan(
        model=str(params["model"]),
        text=text,
        finish_reason=finish_reason,
        completion_tokens=max(1, words),
        prompt=_prompt(params),
        error_type=error_type,
        expire=_DIRECTIVE_EXPIRE in user_text,
    )


class PrefixCache:
    """OpenAI's automatic prompt cache: prefixes and when each expires, on the emulator clock."""

    def __init__(self) -> None:
        self._expires: dict[bytes, float] = {}

    def use(self, prompt: Prompt, now: float) -> int:
        """Cached tokens of one request at `now`; caches (or refreshes) its prefixes."""
        cached = 0
        for key, tokens in prompt.prefixes:
            if self._expires.get(key, 0.0) > now:
                cached = tokens - tokens % CACHE_STEP_TOKENS
            self._expires[key] = max(self._expires.get(key, 0.0), now + prompt.ttl)
        if len(self._expires) > 100_000:
            self._expires = {k: v for k, v in self._expires.items() if v > now}
        return cached


def completion_usage(plan: ChatPlan, cached_tokens: int) -> dict[str, Any]:
    """The `usage` object of a chat completion."""
    return {
        "prompt_tokens": plan.prompt.tokens,
        "completion_tokens": plan.completion_tokens,
        "total_tokens": plan.prompt.tokens + plan.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_completion(plan: ChatPlan, completion_id: str, created: float, cached_tokens: int) -> dict[str, Any]:
    """The `ChatCompletion` object of a reply."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(created),
        "model": plan.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": plan.text, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": plan.finish_reason,
            }
        ],
        "usage": completion_usage(plan, cached_tokens),
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def _pieces(text: str, words_per_piece: int = 3) -> Iterator[str]:
    # Each piece keeps the spaces after its words, so the deltas add up to the text exactly.
    starts = [m.start() for m in _WORD.finditer(text)][::words_per_piece]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    for begin, end in zip(starts, [*starts[1:], len(text)], strict=True):
        if end > begin:
            yield text[begin:end]


def _data(payload: Mapping[str, Any] | str) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def chunk_events(completion: Mapping[str, Any], *, include_usage: bool) -> Iterator[bytes]:
    """The Server-Sent Events OpenAI streams for `completion`, ending with ``data: [DONE]``."""
    base: dict[str, Any] = {
        "id": completion["id"],
        "object": "chat.completion.chunk",
        "created": completion["created"],
        "model": completion["model"],
        "service_tier": completion["service_tier"],
        "system_fingerprint": completion["system_fingerprint"],
    }
    if include_usage:
        base["usage"] = None

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _data({**base, "choices": [choice]})

    choice = completion["choices"][0]
    yield chunk({"role": "assistant", "content": "", "refusal": None})
    for piece in _pieces(choice["message"]["content"]):
        yield chunk({"content": piece})
    yield chunk({}, choice["finish_reason"])
    if include_usage:
        yield _data({**base, "choices": [], "usage": completion["usage"]})
    yield _data("[DONE]")
