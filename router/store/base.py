"""The store's interface with the rest of the router, whatever the engine behind it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class RetryPolicy(Protocol):
    """Decides, for a batch result line that is not `succeeded`, whether its request goes back
    to pending for another batch (True) or fails with that result (False).

    The router's policy is `router.retry.should_resubmit`; the caller of an ingest passes it
    in, so the store holds no policy of its own. `result` is the line's ``result`` object,
    `attempts` the batch attempts made so far including the one that produced it,
    `deadline_at` the request's stored deadline.
    """

    def __call__(
        self,
        result: Mapping[str, Any],
        *,
        attempts: int,
        max_attempts: int,
        deadline_at: float | None,
        now: float,
    ) -> bool: ...
