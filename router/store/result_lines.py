"""One line of a batch results file, read down to what the store needs.

Ingest keeps a chunk of lines alive while SQLite writes it. Keeping each line's parsed
dicts (half a dozen containers a line) pushed enough objects into the garbage collector's
oldest generation to set off full collections: with 100,000 callers waiting, each one
walked every waiting task and took ~0.4 s, and they were half of a 100,000-line ingest.
So a line is reduced at once to a tuple of plain values; the Message is built later, from
the stored bytes, in the task of the caller that wants it.
"""

from __future__ import annotations

from typing import Any

import pydantic_core

from ..pricing import TokenCounts
from .records import request_id_from

# (request_id, result_type, data, model, usage, result): the line as received (`data`, what is
# stored and handed to callers), the model its reply names if any, its usage as TokenCounts
# fields in the ledger's column order, and its `result` object only when it is not
# `succeeded`. A plain tuple, not a NamedTuple: the garbage collector stops tracking plain
# tuples of plain values, and a chunk keeps 10,000 of them alive (see records.FinalRow).
ParsedLine = tuple[int, str, bytes, "str | None", tuple[int, int, int, int, int], "dict[str, Any] | None"]


def parse_result_line(data: bytes) -> ParsedLine | None:
    """The parts of a result line the store uses; None when its custom_id is not one of ours.

    Raises ValueError when the line is not JSON (a corrupt file must not be half-ingested).
    """
    # pydantic-core's parser (already installed with pydantic) is ~2.5x faster than json.loads.
    obj = pydantic_core.from_json(data)
    rid = request_id_from(str(obj.get("custom_id", ""))) if isinstance(obj, dict) else None
    if rid is None:
        return None
    result = obj.get("result")
    if not isinstance(result, dict):
        result = {}
    rtype = str(result.get("type"))
    if rtype != "succeeded":
        return (rid, rtype, data, None, (0, 0, 0, 0, 0), result)
    message = result.get("message")
    if not isinstance(message, dict):
        message = {}
    counts = TokenCounts.from_usage(message.get("usage") or {})
    model = message.get("model")
    return (
        rid,
        rtype,
        data,
        model if isinstance(model, str) else None,
        (counts.input, counts.output, counts.cache_write_5m, counts.cache_write_1h, counts.cache_read),
        None,
    )
