"""Deleting what a provider still keeps that the router no longer needs (the daemon's purge).

Two things are left behind on a provider that keeps files (OpenAI): the files of a batch
whose delete failed after ingest (`poller.discard` logs it and goes on), and the input file
of a batch never created (the upload answered, then `batches.create` failed without an
answer, or the process died between the two). Neither is remembered anywhere: the sweep
finds them by listing the provider's files and batches, and asks the store which batches it
has closed. Both are harmless meanwhile (the provider drops batch files after 30 days), so
once a day is often enough, and a failed delete is simply tried again by the next sweep.
"""

from __future__ import annotations

from collections.abc import Collection

from .logs import get_logger
from .poller import Providers, by_name
from .store import StoreEngine

__all__ = ["sweep"]

log = get_logger(__name__)


async def sweep(providers: Providers, store: StoreEngine, *, now: float) -> dict[str, int]:
    """Run every provider's `sweep`; the files deleted, by provider. A provider whose sweep
    fails is logged and skipped (the next sweep tries again)."""

    async def closed(api_ids: Collection[str]) -> set[str]:
        known = await store.known_api_ids(api_ids)
        still_open = {b.api_id for b in await store.open_batches()}
        return known - still_open

    deleted: dict[str, int] = {}
    for name, provider in by_name(providers).items():
        try:
            deleted[name] = await provider.sweep(now=now, closed=closed)
        except Exception as exc:
            log.warning("provider_sweep_failed", provider=name, error=str(exc))
            continue
        if deleted[name]:
            log.info("provider_swept", provider=name, deleted=deleted[name])
    return deleted
