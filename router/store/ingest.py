"""Applying a chunk of batch result lines to the store: one transaction, one thread hand-off.

The whole transaction runs as one function on the writer connection's own thread, and each
write is one statement over a JSON array. Python's sqlite3 gives up the GIL and takes it back
at every row it steps over; while an ingest resolves thousands of waiting callers the event
loop holds the GIL, and each take-back waits its turn. `executemany` of 100,000 rows: 0.5 s
beside an idle loop, 391 s beside a busy one; one statement over a JSON array: 0.9 s and
1.1 s (bench/RESULTS.md, "The finding").
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from .. import retry as _retry
from . import states
from .records import FinalRow, IngestStats
from .result_lines import ParsedLine
from .sql import NEXT_DONE_SEQ, insert_ledger_json, json_param

# REALs leave SQLite's JSON functions with 15 significant digits; printf('%!.17g') keeps
# every bit (a float is read back from the text exactly).
_LOOKUP = (
    "SELECT json_group_array(json_array(r.id, r.state, r.batch_id, r.class, r.tag, r.model,"
    " r.attempts, iif(r.deadline_at IS NULL, NULL, printf('%!.17g', r.deadline_at)), r.key,"
    " printf('%!.17g', r.created_at),"
    " EXISTS (SELECT 1 FROM ledger l WHERE l.batch_id = ?1 AND l.request_id = r.id)))"
    " FROM requests r WHERE r.id IN (SELECT value FROM json_each(?2))"
)


def _lookup(c: sqlite3.Connection, batch_id: int, ids: list[int]) -> dict[int, tuple[Any, ...]]:
    """Each known request's (id, state, batch_id, class, tag, model, attempts, deadline_at,
    key, created_at, already ingested from this batch), by id.

    One row of JSON rather than a row per request: sqlite3 releases and takes back the GIL
    at every row it steps over, and with the event loop busy each take waits its turn.
    """
    ((text,),) = c.execute(_LOOKUP, (batch_id, json_param(ids))).fetchall()
    rows: list[list[Any]] = json.loads(text)  # faster than from_json here (many unique keys)
    for row in rows:
        row[7] = None if row[7] is None else float(row[7])
        row[9] = float(row[9])
    # Tuples of plain values: the garbage collector stops tracking them (see records.FinalRow).
    return {row[0]: tuple(row) for row in rows}


def _by_request_id(row: tuple[Any, ...]) -> int:
    return int(row[5])


def apply_chunk(
    c: sqlite3.Connection,
    batch_id: int,
    parsed: Sequence[ParsedLine],
    *,
    now: float,
    max_attempts: Mapping[str, int],
    default_max_attempts: int,
) -> tuple[IngestStats, list[FinalRow]]:
    """Apply parsed result lines; run on the writer's thread inside `sql.in_transaction`.

    Returns the stats and the row, as now stored, of each request that reached a final state.
    """
    current = _lookup(c, batch_id, [p[0] for p in parsed])
    seen = {rid for rid, row in current.items() if row[-1]}
    seq = c.execute(NEXT_DONE_SEQ).fetchall()[0][0] - 1
    delivered = retried = duplicates = skipped = unknown = 0
    finals: list[tuple[Any, ...]] = []
    # Result lines travel as one blob; each row takes its slice (1-based offset, length).
    lines: list[bytes] = []
    offset = 0
    retries: list[int] = []
    ledger: list[tuple[Any, ...]] = []
    finished: list[FinalRow] = []
    for rid, rtype, data, reply_model, usage, result in parsed:
        row = current.get(rid)
        if row is None:
            unknown += 1
            continue
        if rid in seen:  # ingested before: a stream read again after a crash or a cut
            skipped += 1
            continue
        seen.add(rid)
        _, state, bid, latency, tag, model, attempts, deadline, key, created_at, _ = row
        # An escalated request still takes a succeeded batch result: the first final outcome
        # wins, and the real-time reply that comes second is the duplicate.
        ours = bid == batch_id and (
            state == states.SUBMITTED or (state == states.ESCALATED and rtype == "succeeded")
        )
        ledger.append(
            (now, "batch", reply_model or model, latency, tag, rid, batch_id, rtype, *usage, int(not ours))
        )
        if not ours:
            duplicates += 1
            continue
        if rtype == "succeeded":
            final_state = states.SUCCEEDED
        elif (
            _retry.decide(
                result or {},
                attempts=attempts + 1,
                max_attempts=max_attempts.get(latency, default_max_attempts),
                deadline_at=deadline,
                now=now,
            )
            == _retry.RESUBMIT
        ):
            retries.append(rid)
            retried += 1
            continue
        else:
            final_state = states.FAILED
        seq += 1
        finals.append((rid, final_state, rtype, seq, offset + 1, len(data)))
        lines.append(data)
        offset += len(data)
        # The row as the guarded UPDATE below leaves it (same transaction as the SELECT), in
        # RequestRow's field order.
        finished.append(
            (rid, key, latency, tag, model, final_state, attempts + 1, rtype, data, created_at, deadline, bid)
        )
        delivered += 1
    # Each write is one statement over a JSON array: one GIL hand-off, not one per row.
    # (json_extract, not ->>: the operator needs SQLite 3.38; UPDATE ... FROM needs 3.33.)
    if finals:
        # Lines appended in done_seq order (the order they were numbered in), each the slice of
        # one blob at its offset. Same transaction as the lookup: every final row is updated.
        c.execute(
            "INSERT INTO results (done_seq, line)"
            " SELECT json_extract(j.value, '$[3]'),"
            " substr(?, json_extract(j.value, '$[4]'), json_extract(j.value, '$[5]')) FROM json_each(?) AS j",
            (b"".join(lines), json_param(finals)),
        )
        finals.sort()  # by request id: rows are then visited in table order (results come shuffled)
        c.execute(
            "UPDATE requests SET state = json_extract(j.value, '$[1]'),"
            " outcome = json_extract(j.value, '$[2]'), done_seq = json_extract(j.value, '$[3]'),"
            " finished_at = ?, attempts = attempts + 1 FROM json_each(?) AS j"
            # Unary plus: no index on batch_id or state, so the plan walks the JSON array and
            # finds each row by id (with an index it scanned the array once per row).
            " WHERE requests.id = json_extract(j.value, '$[0]') AND +requests.batch_id = ?"
            " AND +requests.state IN ('submitted', 'escalated')",
            (now, json_param(finals), batch_id),
        )
    if retries:
        c.execute(
            "UPDATE requests SET state = 'pending', attempts = attempts + 1"
            " WHERE id IN (SELECT value FROM json_each(?)) AND +batch_id = ? AND +state = 'submitted'",
            (json_param(retries), batch_id),
        )
    if ledger:
        ledger.sort(key=_by_request_id)  # the (batch_id, request_id) index then grows in order
        insert_ledger_json(c, ledger)
    return IngestStats(delivered, retried, duplicates, skipped, unknown), finished
