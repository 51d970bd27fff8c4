"""Reading request bodies, and parsing a batch body one request at a time.

A batch body may be 256 MB. It is read into one buffer (never `request.read()`
plus copies) and decoded once. A first pass with `json.JSONDecoder.raw_decode`
finds where each request starts (so the 413 for too many requests comes first);
a second decodes them one at a time, so each request's params exist as Python
objects only while they are validated and turned into a small `ReplyPlan`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from router.emulator.errors import ApiError
from router.emulator.keys import BODY_SIZE
from router.emulator.replies import ReplyPlan, plan_reply
from router.emulator.validation import CUSTOM_ID_PATTERN, validate_create

__all__ = ["parse_batch_body", "parse_json", "read_body"]

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


async def read_body(request: web.Request, limit: int) -> tuple[bytearray | None, int]:
    """(body, size) of `request`; body is None when it is over `limit` bytes.

    An oversized body is still read to its end, and dropped as it comes, so the
    client finishes sending and then reads our 413 instead of a broken pipe.
    """
    declared = request.content_length
    over = declared is not None and declared > limit
    buffer = bytearray()
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if over:
            continue
        if size > limit:
            over = True
            buffer = bytearray()
            continue
        buffer += chunk
    request[BODY_SIZE] = size
    return (None if over else buffer), size


def parse_json(data: bytes | bytearray) -> Any:
    """Parse a JSON body, or raise a 400 that says why not."""
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError.invalid(f"The request body is not valid JSON: {exc}") from exc


def _skip(text: str, index: int) -> int:
    match = _WS.match(text, index)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _expect(text: str, index: int, token: str, what: str) -> int:
    if not text.startswith(token, index):
        raise json.JSONDecodeError(f"Expecting {what}", text, index)
    return _skip(text, index + 1)


def _spans(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of each element of the body's top-level ``requests`` array.

    Offsets, not objects: the count is known (for the 413) before any request is
    validated, and the parsed elements do not all have to be held at once.
    """
    index = _skip(text, 0)
    if not text.startswith("{", index):
        json.loads(text)  # raises for malformed JSON, so the error says so
        raise ApiError.invalid("body: Input should be a valid dictionary")
    index = _skip(text, index + 1)
    spans: list[tuple[int, int]] = []
    found = False
    if text.startswith("}", index):
        index += 1
    else:
        while True:
            if not text.startswith('"', index):
                raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, index)
            key, index = _DECODER.raw_decode(text, index)
            index = _expect(text, _skip(text, index), ":", "':' delimiter")
            if key != "requests":
                raise ApiError.invalid(f"{key}: Extra inputs are not permitted")
            if found:
                raise ApiError.invalid("requests: given more than once")
            found = True
            if not text.startswith("[", index):
                _DECODER.raw_decode(text, index)
                raise ApiError.invalid("requests: Input should be a valid list")
            index = _skip(text, index + 1)
            if text.startswith("]", index):
                index += 1
            else:
                while True:
                    start = index
                    _, index = _DECODER.raw_decode(text, index)
                    spans.append((start, index))
                    index = _skip(text, index)
                    if text.startswith(",", index):
                        index = _skip(text, index + 1)
                        continue
                    index = _expect(text, index, "]", "',' delimiter")
                    break
            index = _skip(text, index)
            if text.startswith(",", index):
                index = _skip(text, index + 1)
                continue
            index = _expect(text, index, "}", "',' delimiter")
            break
    if _skip(text, index) != len(text):
        raise json.JSONDecodeError("Extra data", text, index)
    if not found:
        raise ApiError.invalid("requests: Field required")
    return spans


def _check_request(index: int, element: Any, seen: dict[str, int]) -> tuple[str, ReplyPlan]:
    prefix = f"requests.{index}"
    if not isinstance(element, dict):
        raise ApiError.invalid(f"{prefix}: Input should be a valid dictionary")
    for key in element:
        if key not in ("custom_id", "params"):
            raise ApiError.invalid(f"{prefix}.{key}: Extra inputs are not permitted")
    if "custom_id" not in element:
        raise ApiError.invalid(f"{prefix}.custom_id: Field required")
    custom_id = element["custom_id"]
    if not isinstance(custom_id, str) or not CUSTOM_ID_PATTERN.fullmatch(custom_id):
        raise ApiError.invalid(f"{prefix}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
    if custom_id in seen:
        raise ApiError.invalid(
            f"{prefix}.custom_id: custom_id '{custom_id}' is also used by requests.{seen[custom_id]}; "
            "custom_id must be unique within a batch"
        )
    seen[custom_id] = index
    if "params" not in element:
        raise ApiError.invalid(f"{prefix}.params: Field required")
    params = validate_create(element["params"], prefix=f"{prefix}.params.", in_batch=True)
    return custom_id, plan_reply(params, path=f"{prefix}.params.messages")


def parse_batch_body(text: str, *, max_requests: int) -> list[tuple[str, ReplyPlan]]:
    """Validate a `POST /v1/messages/batches` body into (custom_id, plan) pairs, in request order.

    Raises `ApiError`: 413 `request_too_large` past `max_requests` (checked before
    anything else, as the API does), else 400 naming the first bad field.
    """
    try:
        spans = _spans(text)
    except json.JSONDecodeError as exc:
        raise ApiError.invalid(f"The request body is not valid JSON: {exc}") from exc
    if len(spans) > max_requests:
        raise ApiError(
            "request_too_large",
            f"A message batch may contain at most {max_requests:,} requests; this one has {len(spans):,}",
            status=413,
        )
    if not spans:
        raise ApiError.invalid("requests: at least one request is required")
    seen: dict[str, int] = {}
    requests: list[tuple[str, ReplyPlan]] = []
    for index, (start, _) in enumerate(spans):
        element, _ = _DECODER.raw_decode(text, start)
        requests.append(_check_request(index, element, seen))
    return requests
