"""Cost-ledger rows, whatever the engine: an entry as a row, and the buffer that gathers rows
for a group commit.

Real-time replies belong to no request and no batch. The buffer sums them as they come, one
row per lane, model, class, tag, result type and duplicate flag, with `calls` counting the
replies and `at` the latest. At ~1,000 replies a second, a row per reply cost the real-time
lane ~5 % of its throughput on 2 cores: the rows' SQLite work shares the lane's cores, and
each held entry outlived a young collection, so full collections came sooner (bench/RESULTS.md,
sixth session). Entries of a request or a batch stay one row each (calls = 1).
"""

from __future__ import annotations

from typing import Any

from .records import LedgerEntry

# The ledger table's columns, in the order of a LedgerRow's values.
LEDGER_COLUMNS = (
    "at", "lane", "provider", "model", "class", "tag", "request_id", "batch_id", "result_type",
    "input_tokens", "output_tokens", "cache_write_5m", "cache_write_1h", "cache_read", "duplicate",
    "calls",
)  # fmt: skip

# In LEDGER_COLUMNS' order.
LedgerRow = tuple[Any, ...]


def ledger_row(e: LedgerEntry) -> LedgerRow:
    """One entry as one row."""
    u = e.usage
    return (
        e.at,
        e.lane,
        e.provider,
        e.model,
        e.latency,
        e.tag,
        e.request_id,
        e.batch_id,
        e.result_type,
        u.input,
        u.output,
        u.cache_write_5m,
        u.cache_write_1h,
        u.cache_read,
        int(e.duplicate),
        1,
    )


class LedgerBuffer:
    """Rows waiting for the next commit; `entries` counts what was added since the last take()."""

    __slots__ = ("_rows", "_sums", "entries")

    def __init__(self) -> None:
        self._rows: list[LedgerRow] = []
        # (lane, model, class, tag, result type, duplicate, provider) -> [at, 5 token counts, calls]
        self._sums: dict[tuple[Any, ...], list[Any]] = {}
        self.entries = 0

    def add(self, e: LedgerEntry) -> None:
        self.entries += 1
        if e.request_id is not None or e.batch_id is not None:
            self._rows.append(ledger_row(e))
            return
        u = e.usage
        group = (e.lane, e.model, e.latency, e.tag, e.result_type, e.duplicate, e.provider)
        s = self._sums.get(group)
        if s is None:
            self._sums[group] = [e.at, u.input, u.output, u.cache_write_5m, u.cache_write_1h, u.cache_read, 1]
            return
        if e.at > s[0]:
            s[0] = e.at
        s[1] += u.input
        s[2] += u.output
        s[3] += u.cache_write_5m
        s[4] += u.cache_write_1h
        s[5] += u.cache_read
        s[6] += 1

    def take(self) -> list[LedgerRow]:
        """The rows gathered so far, emptying the buffer."""
        rows = self._rows
        for group, (at, *tokens, calls) in self._sums.items():
            lane, model, latency, tag, result_type, duplicate, provider = group
            rows.append(
                (
                    at,
                    lane,
                    provider,
                    model,
                    latency,
                    tag,
                    None,
                    None,
                    result_type,
                    *tokens,
                    int(duplicate),
                    calls,
                )
            )
        self._rows, self._sums, self.entries = [], {}, 0
        return rows
