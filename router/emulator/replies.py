"""Deterministic replies, token counts and prompt-cache accounting.

The same request always gets the same reply and the same counts, on both lanes:

- **Reply text**: ``"Reply to: "`` + the first 200 characters of the last user
  message's text (a string content, or its text blocks joined with no separator).
  It is cut after ``max_tokens`` words, and ``stop_reason`` is then ``"max_tokens"``
  (else ``"end_turn"``).
- **Output tokens**: the number of whitespace-separated words of the reply (at least 1).
- **Input tokens**: the request is flattened, in the API's cache order, into
  segments: each tool, each system block (a string system prompt is one text
  block), then each content block of each message (a string content is one text
  block), the message's role prepended as ``"<role>:"``. A segment is the
  canonical JSON of the block (sorted keys, no spaces, ``cache_control`` left
  out). With ``C`` the total number of characters, the request has
  ``max(1, ceil(C / 4))`` input tokens; that is what ``count_tokens`` returns.
- **Prompt caching**: a segment whose block carries ``cache_control`` (or the last
  segment, when the top-level ``cache_control`` is set) is a breakpoint; the
  prefix up to a breakpoint of ``c`` characters is worth ``ceil(c / 4)`` tokens
  and is identified by a hash of the model and the prefix. A read also finds the
  prefixes ending at the 19 blocks before a breakpoint (the API's 20-block lookback),
  while writes happen only at breakpoints. A breakpoint whose
  prefix is shorter than the model's minimum cacheable length
  (`router.providers.anthropic.cache_rules.min_cacheable_tokens`) is silently no breakpoint, as in
  the API. How reads and writes are then counted, on both lanes and in batch
  waves, is `router.emulator.cache` (and ``CACHING.md`` next to this module).

Magic directives in the last user message's text force outcomes:
``[emulator:error=TYPE]`` (an HTTP error on `/v1/messages`, an `errored` result in
a batch) and ``[emulator:expire]`` (an `expired` batch result; ignored in real time).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from router.emulator.cache import CacheUsage, PromptCache
from router.emulator.errors import ApiError
from router.providers.anthropic.cache_rules import DEFAULT_TTL, min_cacheable_tokens

__all__ = [
    "DIRECTIVE_ERROR_TYPES",
    "Breakpoint",
    "CacheUsage",
    "InputProfile",
    "PromptCache",
    "ReplyPlan",
    "message_body",
    "plan_reply",
    "profile_input",
    "sse_events",
]

DIRECTIVE_ERROR_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "rate_limit_error",
        "api_error",
        "overloaded_error",
        "timeout_error",
    }
)
# A read finds an entry up to this many blocks back from a breakpoint, the breakpoint's own included.
LOOKBACK_BLOCKS = 20
REPLY_PREFIX = "Reply to: "
QUOTE_CHARS = 200

_DIRECTIVE_ERROR = re.compile(r"\[emulator:error=([A-Za-z_]+)\]")
_DIRECTIVE_EXPIRE = "[emulator:expire]"
_WORD = re.compile(r"\S+")


def _tokens(chars: int) -> int:
    return math.ceil(chars / 4)


# One encoder for all calls: json.dumps with options would build a new one each time.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def _canonical(block: Mapping[str, Any]) -> str:
    if "cache_control" in block:
        block = {k: v for k, v in block.items() if k != "cache_control"}
    return _CANONICAL.encode(block)


@dataclass(frozen=True, slots=True)
class Breakpoint:
    """A cache breakpoint: the prefix up to it, its size in tokens, and its TTL.

    `lookback` holds (key, tokens) of the shorter prefixes a read may also find, ending at
    the blocks before this one, nearest last: the API checks up to 20 blocks back from a
    breakpoint, this one included, for an entry another request wrote.
    """

    key: bytes
    tokens: int
    ttl: str
    lookback: tuple[tuple[bytes, int], ...] = ()


@dataclass(frozen=True, slots=True)
class InputProfile:
    """What the input side of a request amounts to: total tokens and cache breakpoints."""

    tokens: int
    breakpoints: tuple[Breakpoint, ...]
    # The TTL of every cache_control as sent, in body order, cacheable or not (the journal's).
    marks: tuple[str, ...] = ()


def _segments(params: Mapping[str, Any]) -> Iterator[tuple[str, object]]:
    """(canonical text, cache_control or None) of each block, in the API's cache order."""
    for tool in params.get("tools") or ():
        yield _canonical(tool), tool.get("cache_control")
    system = params.get("system")
    if isinstance(system, str):
        yield _canonical({"type": "text", "text": system}), None
    elif system:
        for block in system:
            yield _canonical(block), block.get("cache_control")
    for message in params["messages"]:
        role = message["role"]
        content = message["content"]
        if isinstance(content, str):
            yield f"{role}:" + _canonical({"type": "text", "text": content}), None
        else:
            for block in content:
                yield f"{role}:" + _canonical(block), block.get("cache_control")


def _window(recent: deque[tuple[bytes, int]]) -> tuple[tuple[bytes, int], ...]:
    # The blocks before a breakpoint that its lookback reaches (the breakpoint is the 20th).
    return tuple(recent)[-(LOOKBACK_BLOCKS - 1) :] if recent else ()


def profile_input(params: Mapping[str, Any]) -> InputProfile:
    """Input tokens and cache breakpoints of validated request params (see module docs)."""
    model = str(params["model"])
    minimum = min_cacheable_tokens(model)
    digest = hashlib.blake2b(model.encode(), digest_size=16)
    chars = 0
    breakpoints: list[Breakpoint] = []
    # The latest block ends since the last breakpoint that are long enough to have been written
    # by another request's breakpoint.
    recent: deque[tuple[bytes, int]] = deque(maxlen=LOOKBACK_BLOCKS)
    last_marked = False
    marks: list[str] = []
    for text, cache_control in _segments(params):
        digest.update(text.encode())
        digest.update(b"\x00")
        chars += len(text)
        tokens = _tokens(chars)
        last_marked = isinstance(cache_control, dict)
        if isinstance(cache_control, dict):
            marks.append(str(cache_control.get("ttl", DEFAULT_TTL)))
        if isinstance(cache_control, dict) and tokens >= minimum:
            ttl = str(cache_control.get("ttl", DEFAULT_TTL))
            breakpoints.append(Breakpoint(digest.copy().digest(), tokens, ttl, _window(recent)))
            recent.clear()
        elif tokens >= minimum:
            recent.append((digest.copy().digest(), tokens))
    auto = params.get("cache_control")
    if isinstance(auto, dict):
        marks.append(str(auto.get("ttl", DEFAULT_TTL)))
    if isinstance(auto, dict) and chars and not last_marked and _tokens(chars) >= minimum:
        # Top-level cache_control marks the last cacheable block.
        key, tokens = recent.pop()
        ttl = str(auto.get("ttl", DEFAULT_TTL))
        breakpoints.append(Breakpoint(key, tokens, ttl, _window(recent)))
    return InputProfile(max(1, _tokens(chars)), tuple(breakpoints), tuple(marks))


def cut_to_words(text: str, limit: int | None) -> tuple[str, int, bool]:
    """`text` cut after its `limit`-th word (a word a token): (text, words, whether it was cut)."""
    words = 0
    for words, word in enumerate(_WORD.finditer(text), start=1):
        if limit is not None and words == limit:
            if word.end() < len(text.rstrip()):
                return text[: word.end()], words, True
            break
    return text, words, False


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if message["role"] != "user":
            continue
        content = message["content"]
        if isinstance(content, str):
            return content
        return "".join(
            b["text"] for b in content if b.get("type") == "text" and isinstance(b.get("text"), str)
        )
    return ""


@dataclass(frozen=True, slots=True)
class ReplyPlan:
    """Everything needed to answer a request later; small, so a batch can hold 100,000 of them."""

    model: str
    text: str
    stop_reason: str
    output_tokens: int
    input: InputProfile
    error_type: str | None
    expire: bool


def plan_reply(params: Mapping[str, Any], *, path: str = "messages") -> ReplyPlan:
    """The deterministic reply to validated `/v1/messages` params.

    Raises `ApiError` when a directive names an unknown error type (`path` names the field).
    """
    user_text = _last_user_text(params["messages"])
    error_type: str | None = None
    match = _DIRECTIVE_ERROR.search(user_text)
    if match:
        error_type = match.group(1)
        if error_type not in DIRECTIVE_ERROR_TYPES:
            raise ApiError.invalid(
                f"{path}: unknown error type {error_type!r} in [emulator:error=...]; "
                f"expected one of {', '.join(sorted(DIRECTIVE_ERROR_TYPES))}"
            )
    text = REPLY_PREFIX + user_text[:QUOTE_CHARS]
    text, words, cut = cut_to_words(text, int(params["max_tokens"]))
    stop_reason = "max_tokens" if cut else "end_turn"
    return ReplyPlan(
        model=str(params["model"]),
        text=text,
        stop_reason=stop_reason,
        output_tokens=max(1, words),
        input=profile_input(params),
        error_type=error_type,
        expire=_DIRECTIVE_EXPIRE in user_text,
    )


def usage_body(plan: ReplyPlan, cache: CacheUsage, *, service_tier: str) -> dict[str, Any]:
    """The `usage` object of a reply."""
    return {
        "input_tokens": plan.input.tokens - cache.read - cache.write,
        "output_tokens": plan.output_tokens,
        "cache_creation_input_tokens": cache.write,
        "cache_read_input_tokens": cache.read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": cache.write_5m,
            "ephemeral_1h_input_tokens": cache.write_1h,
        },
        "service_tier": service_tier,
    }


def message_body(plan: ReplyPlan, message_id: str, cache: CacheUsage, *, service_tier: str) -> dict[str, Any]:
    """The full `Message` object of a reply."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": plan.model,
        "content": [{"type": "text", "text": plan.text}],
        "stop_reason": plan.stop_reason,
        "stop_sequence": None,
        "usage": usage_body(plan, cache, service_tier=service_tier),
    }


def _sse(event: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {event}\ndata: {_COMPACT.encode(data)}\n\n".encode()


def _text_chunks(text: str, words_per_chunk: int = 3) -> Iterator[str]:
    # Chunks keep every character (spaces included) so the deltas add up to the text exactly.
    starts = [m.start() for m in _WORD.finditer(text)][::words_per_chunk]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    for begin, end in zip(starts, [*starts[1:], len(text)], strict=True):
        if end > begin:
            yield text[begin:end]


def sse_events(message: Mapping[str, Any]) -> Iterator[bytes]:
    """The Server-Sent Events the API streams for `message`, in order, encoded."""
    usage = dict(message["usage"])
    start_usage = {**usage, "output_tokens": 1}
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}
    yield _sse("message_start", {"type": "message_start", "message": start})
    yield _sse("ping", {"type": "ping"})
    text = message["content"][0]["text"]
    yield _sse(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    for chunk in _text_chunks(text):
        yield _sse(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": chunk}},
        )
    yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    delta_usage = {
        "input_tokens": usage["input_tokens"],
        "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
        "cache_read_input_tokens": usage["cache_read_input_tokens"],
        "output_tokens": usage["output_tokens"],
    }
    yield _sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": delta_usage,
        },
    )
    yield _sse("message_stop", {"type": "message_stop"})
