"""The bytes of a batches.create body, whatever the engine: what each stored request adds to
it, so a claim can stop at the API's size limit without building the body first."""

from __future__ import annotations

# Bytes a request adds to a batch body besides its params:
# `{"custom_id":"r` + digits + `","params":` + params + `}` and the separating comma.
ENTRY_OVERHEAD = 28
BODY_HEAD = b'{"requests":['
BODY_TAIL = b"]}"
# Head and tail minus the one comma the last entry does not have.
BODY_FIXED = len(BODY_HEAD) + len(BODY_TAIL) - 1


def entry_bytes(request_id: int, params_size: int) -> int:
    """Bytes a request occupies in a batch body, separator included."""
    return ENTRY_OVERHEAD + len(str(request_id)) + params_size


def batch_body_bytes(entries_total: int) -> int:
    return BODY_FIXED + entries_total
