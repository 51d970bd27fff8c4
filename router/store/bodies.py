"""What each stored request adds to a batch body, in the framing of the provider's
`BatchFormat`, so a claim can stop at the size limit without building the body first."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .records import CUSTOM_ID_PREFIX, BatchClaim, ClaimSelector

if TYPE_CHECKING:
    from ..providers.base import BatchFormat


def entry_cost(frame: BatchFormat) -> int:
    """Bytes an entry adds to a body besides its params and its request id's digits: the
    entry's framing, the custom_id's prefix and one separator."""
    return frame.entry_overhead + len(CUSTOM_ID_PREFIX) + len(frame.separator)


def entries_budget(frame: BatchFormat, max_bytes: int) -> int:
    """The bytes the entries (each counted with `entry_cost`) may sum to in a body of at most
    `max_bytes`: the head and tail, less the separator the last entry does not have."""
    return max_bytes - (len(frame.body_head) + len(frame.body_tail) - len(frame.separator))


def body_bytes(frame: BatchFormat, entries_total: int) -> int:
    """The length of a body of entries that sum to `entries_total` (at least one entry)."""
    return entries_total + len(frame.body_head) + len(frame.body_tail) - len(frame.separator)


def entry_bytes(frame: BatchFormat, request_id: int, params_size: int) -> int:
    """Bytes a request occupies in a batch body, separator included."""
    return entry_cost(frame) + len(str(request_id)) + params_size


def claimed(
    frame: BatchFormat,
    batch_id: int,
    count: int,
    entries_total: int,
    *,
    select: ClaimSelector | None,
    provider: str,
    model: str | None,
) -> BatchClaim:
    """The claim of the `count` requests a claim moved into batch `batch_id`, whose entries
    (each counted with `entry_cost`, and its 1-hour TTL delta when `select` asks for that TTL)
    sum to `entries_total`; with its body's exact length in `frame`."""
    return BatchClaim(
        batch_id=batch_id,
        request_count=count,
        body_bytes=body_bytes(frame, entries_total),
        ttl_1h=select is not None and select.ttl_1h,
        provider=provider,
        model=model,
    )
