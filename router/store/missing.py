"""Results that can no longer be downloaded, whatever the engine.

The API keeps results for 29 days after a batch's `created_at`. A batch still open in the
store past that (a daemon down for a month) cannot be ingested any more: its unanswered
requests fail with a result of type ``missing`` that says why (`BatchResultMissingError`).
"""

from __future__ import annotations

import json

from .records import custom_id_for

RESULTS_RETENTION_SECONDS = 29 * 24 * 3600.0


def missing_line(request_id: int, reason: str) -> bytes:
    """The stored result line of a request whose result is lost (router-specific type ``missing``)."""
    return json.dumps(
        {"custom_id": custom_id_for(request_id), "result": {"type": "missing", "reason": reason}},
        separators=(",", ":"),
    ).encode()
