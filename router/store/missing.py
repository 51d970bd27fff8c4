"""Results that can no longer be downloaded, whatever the engine.

The API keeps results for 29 days after a batch's `created_at`. A batch still open in the
store past that (a daemon down for a month) cannot be ingested any more: its unanswered
requests fail with a result of type ``missing`` that says why (`BatchResultMissingError`).
A batch the provider refused as a whole fails its requests the same way, with the
provider's canonical `errored` result instead (`unanswered_line`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .records import custom_id_for

RESULTS_RETENTION_SECONDS = 29 * 24 * 3600.0


def missing_line(request_id: int, reason: str) -> bytes:
    """The stored result line of a request whose result is lost (router-specific type ``missing``)."""
    return json.dumps(
        {"custom_id": custom_id_for(request_id), "result": {"type": "missing", "reason": reason}},
        separators=(",", ":"),
    ).encode()


def unanswered_line(request_id: int, reason: str, result: Mapping[str, Any] | None) -> bytes:
    """The stored result line of a request of a batch that gave no line for it: `result` (a
    canonical result object) when given, else a ``missing`` one saying `reason`."""
    if result is None:
        return missing_line(request_id, reason)
    return json.dumps(
        {"custom_id": custom_id_for(request_id), "result": dict(result)}, separators=(",", ":")
    ).encode()


def unanswered_outcome(result: Mapping[str, Any] | None) -> str:
    """The outcome column of such a request (its result's type)."""
    return "missing" if result is None else str(result.get("type") or "errored")
