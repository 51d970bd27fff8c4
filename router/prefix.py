"""The cacheable prefix of a deferred request: its identity, its size, and its 1-hour rewrite.

The API caches a request's prompt in the order tools, then system, then messages, up to a
block marked with `cache_control` (or, with a top-level `cache_control`, up to the last
block: "automatic caching"). Requests whose marked prefixes are equal share one cache
entry, so the router groups them by a hash of that prefix and of what else selects the
entry: the model, and the parameters the docs say invalidate it (`tool_choice`,
`thinking`). `cache_control` itself is left out of the hash: a 5-minute and a 1-hour mark
on the same content name the same entry.

The size is an estimate (characters of the canonical blocks / 4), never a `count_tokens`
call per request; `Calibration` scales it by what the API returned for earlier requests.

All of it reads the request's stored JSON bytes (`providers.anthropic.params.serialize`): the prefix is what
is sent, whatever Python objects the caller passed.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .store.records import Prefix

__all__ = ["Prefix", "identify", "rewrite_ttl_1h", "ttl_1h_delta"]

_MARK = b'"cache_control"'
# A cache_control object in serialized params. In JSON text a quote inside a string is
# always escaped (\"), so this pattern only ever matches the key itself, never text a
# caller wrote; its value holds strings only ("type", "ttl"), so it has no nested braces.
_CACHE_CONTROL = re.compile(rb'"cache_control":(\{[^{}]*\})')
# Request fields that select a different cache entry for the same blocks.
_SELECTORS = ("tool_choice", "thinking")
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
# The serializer of stored params (anthropic's openapi_dumps): compact, UTF-8, key order kept.
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _canonical(block: Mapping[str, Any]) -> str:
    if "cache_control" in block:
        block = {k: v for k, v in block.items() if k != "cache_control"}
    return _CANONICAL.encode(block)


def _segments(params: Mapping[str, Any]) -> Iterator[tuple[str, bool]]:
    """(canonical text, marked with cache_control) of each block, in the API's cache order."""
    for tool in params.get("tools") or ():
        if isinstance(tool, Mapping):
            yield _canonical(tool), isinstance(tool.get("cache_control"), Mapping)
    system = params.get("system")
    if isinstance(system, str):
        yield _canonical({"type": "text", "text": system}), False
    elif isinstance(system, list):
        for block in system:
            if isinstance(block, Mapping):
                yield _canonical(block), isinstance(block.get("cache_control"), Mapping)
    for message in params.get("messages") or ():
        if not isinstance(message, Mapping):
            continue
        role = message.get("role")
        content = message.get("content")
        if isinstance(content, str):
            yield f"{role}:" + _canonical({"type": "text", "text": content}), False
        elif isinstance(content, list):
            for block in content:
                if isinstance(block, Mapping):
                    yield f"{role}:" + _canonical(block), isinstance(block.get("cache_control"), Mapping)


def estimate_tokens(chars: int) -> int:
    """The uncalibrated token estimate of `chars` characters of canonical blocks."""
    return math.ceil(chars / 4)


def identify(params: bytes, *, betas: Sequence[str] = ()) -> Prefix | None:
    """The marked prefix of serialized request params, or None when nothing is marked.

    `betas` are the beta headers the request is sent with (a request in a batch carries
    none of its own today, so callers pass none); they are part of the identity because a
    beta can change what the prompt means to the model.
    """
    if _MARK not in params:
        return None  # no cache_control anywhere: the common case costs a byte search only
    body = json.loads(params)
    if not isinstance(body, dict):
        return None
    texts: list[str] = []
    last_marked = -1
    for text, marked in _segments(body):
        texts.append(text)
        if marked:
            last_marked = len(texts) - 1
    if isinstance(body.get("cache_control"), Mapping) and texts:
        last_marked = len(texts) - 1  # automatic caching: up to the last block
    if last_marked < 0:
        return None
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(body.get("model")).encode())
    for beta in sorted(betas):
        digest.update(b"\x00beta:" + beta.encode())
    for name in _SELECTORS:
        if name in body:
            digest.update(f"\x00{name}:".encode() + _CANONICAL.encode(body[name]).encode())
    chars = 0
    for text in texts[: last_marked + 1]:
        digest.update(b"\x00" + text.encode())
        chars += len(text)
    return Prefix(key=digest.hexdigest(), tokens=estimate_tokens(chars), ttl_1h_delta=ttl_1h_delta(params))


def _to_1h(match: re.Match[bytes]) -> bytes:
    value = json.loads(match.group(1))
    if not isinstance(value, dict):
        return match.group(0)
    value["ttl"] = "1h"  # replaces a "ttl" in place (dict order kept) or appends one
    return b'"cache_control":' + _COMPACT.encode(value).encode()


def rewrite_ttl_1h(params: bytes) -> bytes:
    """`params` with every cache_control mark set to the 1-hour TTL, the rest byte for byte."""
    if _MARK not in params:
        return params
    return _CACHE_CONTROL.sub(_to_1h, params)


def ttl_1h_delta(params: bytes) -> int:
    """How many bytes `rewrite_ttl_1h` adds to `params` (so a flush knows its body length)."""
    if _MARK not in params:
        return 0
    return sum(len(_to_1h(m)) - len(m.group(0)) for m in _CACHE_CONTROL.finditer(params))
