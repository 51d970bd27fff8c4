"""Standard Webhooks signatures (https://www.standardwebhooks.com/), through the
`standardwebhooks` package: the spec's reference implementation for Python, small, typed and
with no dependencies, so the router and its receivers sign and verify with the same code."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

__all__ = ["WebhookVerificationError", "headers_for", "verify"]


def headers_for(secret: str, msg_id: str, body: str, at: float) -> dict[str, str]:
    """The `webhook-id`, `webhook-timestamp` and `webhook-signature` headers of one attempt
    (`v1,` + base64 HMAC-SHA256 of ``id.timestamp.body``, keyed by the decoded secret)."""
    moment = datetime.fromtimestamp(int(at), UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at)),
        "webhook-signature": Webhook(secret).sign(msg_id, moment, body),
    }


def verify(headers: Mapping[str, str], body: bytes | str, secret: str) -> Any:
    """Check a delivery's signature and timestamp (at most 5 minutes off) and return its JSON
    payload; raises WebhookVerificationError when it does not verify. For receivers:
    `secret` is the endpoint's ``whsec_...`` secret."""
    return Webhook(secret).verify(body, {k.lower(): v for k, v in headers.items()})
