"""The names of the events the router announces to webhooks (router/webhooks/), in a module of
its own so that the configuration can check `[[webhooks]] events` without importing the store."""

from __future__ import annotations

from typing import Final

BATCH_ENDED: Final = "batch.ended"
TAG_DRAINED: Final = "tag.drained"
REQUEST_COMPLETED: Final = "request.completed"
REQUEST_FAILED: Final = "request.failed"
REQUEST_ESCALATED: Final = "request.escalated"
# Sent by `hybrid-router webhooks test`, never written to the outbox.
PING: Final = "webhook.ping"

EVENT_TYPES: Final = (BATCH_ENDED, TAG_DRAINED, REQUEST_COMPLETED, REQUEST_FAILED, REQUEST_ESCALATED)
# Per-request events are opt-in: an `events` glob must name them ("request.*"), not just "*".
PER_REQUEST: Final = frozenset({REQUEST_COMPLETED, REQUEST_FAILED})
