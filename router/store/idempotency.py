"""What makes an idempotency key name one request: the digest of the params stored under it."""

from __future__ import annotations

import hashlib


def digest_of(params: bytes) -> bytes:
    return hashlib.blake2b(params, digest_size=16).digest()
