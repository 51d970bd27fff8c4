"""The request size limit of the real-time lane, checked at call time without slowing it down.

The Messages endpoint takes at most 32 MB of request body. Serializing every call to
measure it would cost the real-time lane throughput, so a call is first bounded from
above by a walk over its arguments (a handful of objects for a typical call); only a
call whose bound reaches the limit is serialized and measured exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import pydantic
from anthropic import NotGiven, Omit

from ...errors import InvalidRequestError
from ...params import ROUTER_KEYWORDS
from .params import REALTIME_MAX_BYTES, TRANSPORT_KEYWORDS, serialize

# JSON bytes per str character at worst: a non-BMP character escaped as two \uXXXX.
_MAX_BYTES_PER_CHAR = 12
_SCALAR_BYTES = 32  # numbers, booleans and null, with their separator
_UNKNOWN = 1 << 62  # an object the walk cannot bound: measure exactly


def check_realtime_size(kwargs: MutableMapping[str, Any], limit: int = REALTIME_MAX_BYTES) -> None:
    """Raise InvalidRequestError when a real-time call's body would exceed the endpoint's limit.

    A top-level `messages` given as a one-shot iterable is turned into a list first, so
    measuring it does not use it up before the SDK sends it.
    """
    messages = kwargs.get("messages")
    if isinstance(messages, Iterator):
        kwargs["messages"] = list(messages)
    if _upper_bound(kwargs, limit) <= limit:
        return
    body = {
        name: value
        for name, value in kwargs.items()
        if name not in TRANSPORT_KEYWORDS and name not in ROUTER_KEYWORDS and name != "extra_body"
        if not isinstance(value, NotGiven | Omit)
    }
    extra = kwargs.get("extra_body")
    if isinstance(extra, Mapping):
        body.update(extra)
    size = len(serialize(body))
    if size > limit:
        raise InvalidRequestError(
            f"request body is {size:,} bytes, more than the real-time Messages endpoint takes"
            f" ({limit:,} bytes); make it smaller (e.g. fewer or smaller images or documents)"
        )


def _upper_bound(obj: Any, budget: int) -> int:
    """An upper bound of `obj`'s JSON size in bytes; stops counting once past `budget`."""
    total = 0
    stack: list[Any] = [obj]
    while stack:
        item = stack.pop()
        kind = type(item)
        # Exact types first: a typical call is a few dicts, lists, strs and ints, and the
        # abstract-class checks below cost more than the rest of the walk.
        if kind is dict:
            total += 2
            for key, value in item.items():
                total += _MAX_BYTES_PER_CHAR * len(key if type(key) is str else str(key)) + 4
                stack.append(value)
        elif kind is str:
            total += _MAX_BYTES_PER_CHAR * len(item) + 3
        elif kind is list:
            total += 2 + len(item)
            stack.extend(item)
        elif kind is int or kind is float or item is None:
            total += _SCALAR_BYTES
        elif isinstance(item, str):
            total += _MAX_BYTES_PER_CHAR * len(item) + 3
        elif isinstance(item, Mapping):
            total += 2
            for key, value in item.items():
                total += _MAX_BYTES_PER_CHAR * len(str(key)) + 4
                stack.append(value)
        elif isinstance(item, list | tuple):
            total += 2 + len(item)
            stack.extend(item)
        elif item is None or isinstance(item, bool | int | float | NotGiven | Omit):
            total += _SCALAR_BYTES
        elif isinstance(item, pydantic.BaseModel):
            total += 2
            for key, value in item.__dict__.items():
                total += _MAX_BYTES_PER_CHAR * len(key) + 4
                stack.append(value)
        elif isinstance(item, bytes | bytearray):
            total += 2 * len(item) + 3  # sent base64 or escaped: never more than twice
        elif isinstance(item, Iterator):
            continue  # measuring would use it up; the endpoint answers 413 if it is too big
        else:
            return _UNKNOWN
        if total > budget:
            return total
    return total
