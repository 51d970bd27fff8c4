"""The Anthropic API's prompt-caching rules, in one place for the emulator and the router.

The emulator (`router.emulator.validation`) answers a request that breaks them with a 400
`invalid_request_error`, and the router (`router.providers.anthropic.params.batch_params`)
refuses a deferred request that breaks them at call time, before anything is stored, with
the same message:
``"<dotted path>: <problem>"``, the path naming the field as the API does
(``messages.0.content.1.cache_control.ttl``). The rules, from the prompt-caching docs
(https://platform.claude.com/docs/en/build-with-claude/prompt-caching) and the API's own
error messages:

- ``cache_control`` is ``{"type": "ephemeral"}`` with an optional ``"ttl"`` of ``"5m"``
  (the default) or ``"1h"``, and nothing else.
- It goes on a tool, a system text block, a message content block, a block inside a
  ``tool_result``'s content, or the request itself (automatic caching: the last cacheable
  block). Not on a message, not on a block type the SDK gives no ``cache_control`` field
  (``thinking``, ``redacted_thinking``), and not on an empty text block.
- At most 4 breakpoints a request, the top-level one included.
- Blocks are processed in the order tools, system, messages (the top-level breakpoint
  last), and a ``"1h"`` breakpoint must not come after a ``"5m"`` one.

`min_cacheable_tokens` is the per-model minimum cacheable prefix: a shorter marked prefix
is silently not cached (no error), as the docs say.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from typing import Any, get_args

from anthropic.types.content_block_param import ContentBlockParam

__all__ = [
    "CACHE_TTLS",
    "DEFAULT_TTL",
    "MAX_BREAKPOINTS",
    "TTL_SECONDS",
    "UNCACHEABLE_BLOCK_TYPES",
    "CacheControlError",
    "check_cache_control",
    "min_cacheable_tokens",
]

CACHE_TTLS = ("5m", "1h")
DEFAULT_TTL = "5m"
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
MAX_BREAKPOINTS = 4
_TTL_ORDER = (
    "a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block."
    " Note that blocks are processed in the following order: `tools`, `system`, `messages`."
)


class CacheControlError(ValueError):
    """A `cache_control` the API would refuse: `path` names the field, `problem` says why."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def _union_members(union: object) -> Iterator[Any]:
    for member in get_args(union):
        if get_args(member) and not hasattr(member, "__annotations__"):
            yield from _union_members(member)
        else:
            yield member


def _uncacheable_block_types() -> frozenset[str]:
    # The content blocks whose SDK param type has no cache_control field: the API refuses one there.
    # Read from the TypedDicts' keys and raw annotations: evaluating them costs 0.15 s at import.
    kinds: set[str] = set()
    for member in _union_members(ContentBlockParam):
        if "cache_control" in member.__required_keys__ | member.__optional_keys__:
            continue
        kinds.update(_LITERAL.findall(str(member.__annotations__.get("type", ""))))
    return frozenset(kinds)


_LITERAL = re.compile(r"Literal\[['\"]([a-z_]+)['\"]\]")
UNCACHEABLE_BLOCK_TYPES = _uncacheable_block_types()


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _items(value: Any) -> Sequence[Any]:
    # Only lists and tuples are walked: a generator given as content would be used up here.
    return value if isinstance(value, list | tuple) else ()


def _holders(params: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    """(path, block) of everything that may carry cache_control, in the API's processing order."""
    for i, tool in enumerate(_items(params.get("tools"))):
        yield f"{prefix}tools.{i}", tool
    for i, block in enumerate(_items(params.get("system"))):
        yield f"{prefix}system.{i}", block
    for i, message in enumerate(_items(params.get("messages"))):
        path = f"{prefix}messages.{i}"
        if _field(message, "cache_control") is not None:
            raise CacheControlError(
                f"{path}.cache_control",
                "Extra inputs are not permitted; put cache_control on a content block of the message",
            )
        for j, block in enumerate(_items(_field(message, "content"))):
            yield f"{path}.content.{j}", block
            if _field(block, "type") == "tool_result":
                for k, inner in enumerate(_items(_field(block, "content"))):
                    yield f"{path}.content.{j}.content.{k}", inner


def _ttl_of(value: object, path: str) -> str:
    """The TTL of a cache_control value, or CacheControlError naming what is wrong with it."""
    if not isinstance(value, Mapping):
        raise CacheControlError(path, "Input should be a valid dictionary")
    if value.get("type") != "ephemeral":
        raise CacheControlError(f"{path}.type", "Input should be 'ephemeral'")
    ttl = value.get("ttl", DEFAULT_TTL)
    if ttl not in CACHE_TTLS:
        raise CacheControlError(f"{path}.ttl", "Input should be '5m' or '1h'")
    for key in value:
        if key not in ("type", "ttl"):
            raise CacheControlError(f"{path}.{key}", "Extra inputs are not permitted")
    return str(ttl)


def check_cache_control(params: Mapping[str, Any], *, prefix: str = "") -> None:
    """Raise CacheControlError for the first `cache_control` of `params` the API would refuse.

    `params` is a Messages request body (dicts, or SDK objects read by attribute); `prefix`
    goes before every path (``"requests.3.params."`` inside a batch).
    """
    marks: list[tuple[str, str]] = []  # (path of the cache_control, ttl), in processing order
    for path, block in _holders(params, prefix):
        value = _field(block, "cache_control")
        if value is None:
            continue
        where = f"{path}.cache_control"
        kind = _field(block, "type")
        if kind in UNCACHEABLE_BLOCK_TYPES:
            raise CacheControlError(where, f"cache_control cannot be set for {kind} blocks")
        if kind == "text" and _field(block, "text") == "":
            raise CacheControlError(f"{path}.text", "cache_control cannot be set for empty text blocks")
        marks.append((where, _ttl_of(value, where)))
    if params.get("cache_control") is not None:
        where = f"{prefix}cache_control"
        marks.append((where, _ttl_of(params["cache_control"], where)))
    if len(marks) > MAX_BREAKPOINTS:
        raise CacheControlError(
            marks[MAX_BREAKPOINTS][0],
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {len(marks)}.",
        )
    seen_short = False
    for where, ttl in marks:
        if ttl == "1h" and seen_short:
            # The API names the ttl of a block, and the top-level cache_control itself.
            field = where if where == f"{prefix}cache_control" else f"{where}.ttl"
            raise CacheControlError(field, _TTL_ORDER)
        seen_short = seen_short or ttl == "5m"


# Minimum cacheable prefix in tokens, from the docs' "Cache limitations" table
# (platform.claude.com/docs/en/build-with-claude/prompt-caching, checked 2026-12).
_MINIMUM_BY_MODEL = {
    "claude-opus-4-6": 4096,
    "claude-opus-4-5": 4096,
    "claude-haiku-4-5": 4096,
    "claude-opus-4-7": 2048,
    "claude-mythos-preview": 2048,
    "claude-3-5-haiku": 2048,
    "claude-haiku-3-5": 2048,
    "claude-3-haiku": 2048,
    "claude-haiku-3": 2048,
}
# Model lines whose every version the docs list at 512 (Opus 5 and 5.5, Fable 5 and 5.1,
# Mythos 5 and 5.1); later versions of the same lines are taken to keep it.
_MINIMUM_BY_LINE = (("claude-opus-5", 512), ("claude-fable-5", 512), ("claude-mythos-5", 512))
# Every other model the docs list (Opus 4.8, 4.1 and 4, Sonnet 5, 4.6, 4.5, 4 and 3.7) is at 1,024.
_DEFAULT_MINIMUM = 1024
_SNAPSHOT_SUFFIX = re.compile(r"[-@](\d{8}|latest)$")


@cache
def min_cacheable_tokens(model: str) -> int:
    """The model's minimum cacheable prefix in tokens (1,024 for a model the table does not name)."""
    base = _SNAPSHOT_SUFFIX.sub("", model)
    if base in _MINIMUM_BY_MODEL:
        return _MINIMUM_BY_MODEL[base]
    for line, minimum in _MINIMUM_BY_LINE:
        if base == line or base.startswith(f"{line}-"):
            return minimum
    return _DEFAULT_MINIMUM
