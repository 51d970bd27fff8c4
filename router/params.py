"""The routing keywords and the batch body of a `create()` call, shared by the providers.

A deferred request is checked at call time, so that bad input fails while the caller is
still there, with a message that names the field, and nothing is stored. Each provider's
own rules are in router/providers/<name>/params.py; what they have in common is here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import InvalidRequestError

# Routing keywords hybrid-router adds on top of the SDKs'.
ROUTER_KEYWORDS = frozenset({"latency", "tag", "key"})

_KEY_MAX = 512


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


def take_routing(kwargs: dict[str, Any]) -> tuple[Any, str | None, str | None]:
    """Take the router's own keywords out of a call's: (latency, tag, key), tag and key checked."""
    latency = kwargs.pop("latency", None)
    return latency, check_tag(kwargs.pop("tag", None)), check_key(kwargs.pop("key", None))


def check_model(params: Mapping[str, Any], required: tuple[str, ...]) -> None:
    """The body holds every `required` field and names its model: checks both providers share."""
    for name in required:
        if name not in params:
            raise InvalidRequestError(f"{name}: this field is required")
    model = params["model"]
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequestError(f"model: expected a non-empty model name string, got {model!r}")


def body_params(
    kwargs: Mapping[str, Any], *, transport: frozenset[str], omitted: tuple[type, ...], no_stream: str
) -> dict[str, Any]:
    """The body of a batch request built from an SDK `create()` call's keywords.

    The routing keywords and the SDK's "not given" sentinels (instances of `omitted`) are
    left out and `extra_body` is merged in. An InvalidRequestError refuses a per-call
    transport option (a name in `transport`: a request inside a batch is a body only, so it
    cannot travel there) and a true `stream` (a batch cannot stream; `no_stream` says why,
    in the provider's words); a false `stream` is dropped.
    """
    params: dict[str, Any] = {}
    for name, value in kwargs.items():
        if name in ROUTER_KEYWORDS or isinstance(value, omitted):
            continue
        if name in transport:
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
    if params.pop("stream", None):
        raise InvalidRequestError(
            f"stream: streaming is not available for deferred requests ({no_stream});"
            ' use latency="realtime" to stream'
        )
    return params


_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def is_valid_custom_id(value: str) -> bool:
    return bool(_CUSTOM_ID.match(value))
