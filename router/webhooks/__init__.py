"""Webhooks: the router tells apps when work is done, from a durable outbox in the store.

Events (`batch.ended`, `tag.drained`, `request.completed`, `request.failed`,
`request.escalated`) are written in the transactions of the changes they announce; the daemon
(or an inline flusher) delivers them to each `[[webhooks]]` endpoint that wants them, signed
per Standard Webhooks, at least once. Receivers check a delivery with `verify`.
"""

from __future__ import annotations

from .delivery import Attempt, Dispatcher, PassReport, backoff, body_of, message_id
from .routing import outbox_policy, routes, wants_event
from .signing import WebhookVerificationError, headers_for, verify

__all__ = [
    "Attempt",
    "Dispatcher",
    "PassReport",
    "WebhookVerificationError",
    "backoff",
    "body_of",
    "headers_for",
    "message_id",
    "outbox_policy",
    "routes",
    "verify",
    "wants_event",
]
