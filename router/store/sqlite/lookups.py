"""Store operations that read many requests by key or in id order (the JSONL import and export)."""

from __future__ import annotations

from collections.abc import Sequence

from .. import states
from ..records import StoredResult
from .connections import Connections
from .sql import RESULT_OF_REQUEST, chunks


class LookupOps(Connections):
    """Bulk reads of the store (a mixin of `Store`)."""

    async def digests_by_key(self, keys: Sequence[str]) -> dict[str, bytes]:
        """The params digest (`digest_of`) stored under each of `keys` that is stored."""
        found: dict[str, bytes] = {}
        for part in chunks(keys):
            marks = ",".join("?" * len(part))
            async with self._reader.execute(
                f"SELECT key, digest FROM requests WHERE key IN ({marks})", part
            ) as cur:
                for key, digest in await cur.fetchall():
                    found[str(key)] = bytes(digest)
        return found

    async def finished_results(self, *, after: int, limit: int) -> list[StoredResult]:
        """Up to `limit` finished requests with a result line, of id above `after`, in id order."""
        async with self._reader.execute(
            f"SELECT id, key, state, {RESULT_OF_REQUEST} AS line FROM requests_now AS requests"
            " WHERE state IN (?, ?) AND line IS NOT NULL AND id > ? ORDER BY id LIMIT ?",
            (states.SUCCEEDED, states.FAILED, after, limit),
        ) as cur:
            return [StoredResult(int(i), str(k), str(s), bytes(r)) for i, k, s, r in await cur.fetchall()]

    async def results_by_key(self, keys: Sequence[str]) -> dict[str, StoredResult]:
        """The state and result line of each of `keys` that is stored, finished or not."""
        found: dict[str, StoredResult] = {}
        for part in chunks(keys):
            marks = ",".join("?" * len(part))
            async with self._reader.execute(
                f"SELECT id, key, state, {RESULT_OF_REQUEST} FROM requests_now AS requests"
                f" WHERE key IN ({marks})",
                part,
            ) as cur:
                for i, k, s, r in await cur.fetchall():
                    found[str(k)] = StoredResult(int(i), str(k), str(s), None if r is None else bytes(r))
        return found
