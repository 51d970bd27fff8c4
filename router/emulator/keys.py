"""Typed keys of what the emulator keeps on an aiohttp request while answering it."""

from __future__ import annotations

from aiohttp import web

__all__ = ["BATCH_SENT", "BODY_SIZE", "DROPPED", "ENDPOINT", "REQUEST_ID", "STATUS"]

REQUEST_ID = web.RequestKey("request_id", str)
ENDPOINT = web.RequestKey("endpoint", str)
BODY_SIZE = web.RequestKey("body_size", int)
DROPPED = web.RequestKey("dropped", bool)
STATUS = web.RequestKey("status", int)
"""Status of a streamed response, known before the handler returns."""
BATCH_SENT = web.RequestKey("batch_sent", tuple)
"""Of an accepted batches.create (with `Emulator.journal_batches`): the batch id, then each
request's (custom_id, TTLs of its cache_control marks as sent), for the journal."""
