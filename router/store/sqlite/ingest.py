"""Applying a chunk of batch result lines to the store: one transaction, one thread hand-off.

The whole transaction runs as one function on the writer connection's own thread, and the
work is done by SQLite, a statement at a time over the whole chunk: it reads each line's
custom_id, type, model and usage with its JSON functions, sorts the lines into verdicts in
a temp table, and writes from there: the result lines, the ledger rows, and each final outcome
appended to `completions` (folded into `requests` when the batch's ingest ends: results come
shuffled, and writing each into its request's row dirtied nearly every page of the table in
every chunk). Python only decides the lines that are neither `succeeded` nor somebody
else's (the retry policy, which the caller passes in). The rows made final are read back by
the reader connection after the COMMIT (`READ_FINAL_ROWS`), beside the next chunk.

The statements run as the bodies of two triggers, `ingest_read` and `ingest_write` (INSTEAD
OF INSERT on temp views: stored procedures, in effect), so that one `INSERT` runs a whole
stage. sqlite3 takes the GIL back after every statement it steps, and while the event loop
is busy each take waits up to the interpreter's 5 ms switch interval: with one statement a
step, 100,000 lines beside a busy loop took 3.5 s instead of 2.3 s (bench/RESULTS.md).

Why so little Python: sqlite3 gives up the GIL while a statement runs and takes it back at
every row it steps over. During an ingest the event loop holds the GIL, resolving thousands
of waiting callers; Python work on this thread waits its turn, and each row stepped waits
for the loop to let go. `executemany` of 100,000 rows: 0.5 s beside an idle loop, 391 s
beside a busy one; one statement over a JSON array: 0.9 s and 1.1 s (bench/RESULTS.md, "The
finding"). Work done inside one statement runs beside the loop, on the other core.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic_core

from ...pricing import TokenCounts
from .. import states
from ..base import RetryPolicy
from ..records import CUSTOM_ID_PREFIX, FinalRow, IngestStats, completion_numbers
from ..verdicts import DECIDE, DUPLICATE, FINAL, RETRY, SKIPPED, UNKNOWN
from .sql import NEXT_DONE_SEQ, json_param, not_completed
from .usage import usage_counts_sql

_TEMP_TABLE = """
CREATE TEMP TABLE ingest_lines (
    idx         INTEGER PRIMARY KEY,  -- the line's position in the chunk
    rid         INTEGER,              -- the request its custom_id names
    rtype       TEXT,                 -- result.type
    reply_model TEXT,                 -- result.message.model, when a string
    input_tokens INTEGER, output_tokens INTEGER, cache_write_5m INTEGER,
    cache_write_1h INTEGER, cache_read INTEGER,
    start       INTEGER,              -- the line is substr(blob, start, len)
    len         INTEGER,
    model       TEXT,                 -- the request's model, class and tag, for the ledger
    class       TEXT,
    tag         TEXT,
    attempts    INTEGER,              -- the request's attempts before this result
    escalated   INTEGER,              -- the request was escalated (its row is written at once)
    verdict     TEXT NOT NULL,
    final_state TEXT,
    done_seq    INTEGER
)
"""

_RAW_TABLE = """
CREATE TEMP TABLE ingest_raw (
    idx  INTEGER PRIMARY KEY,  -- the line's position in the chunk
    span INTEGER,              -- start << 32 | length: the line is substr(blob, start, length)
    x    TEXT                  -- JSON array of the values at _PATHS
)
"""

_USAGE = "$.result.message.usage."
_PATHS = (
    "$.custom_id",
    "$.result.type",
    "$.result.message.model",
    *(_USAGE + field for field in TokenCounts.USAGE_FIELDS),
)
_AT = {field: f"$[{i}]" for i, field in enumerate(TokenCounts.USAGE_FIELDS, 3)}

# Each line read once: one json_extract of every path the ingest needs (a JSON array, so
# the next statement reads small text, not the line again). NEW.blob is the chunk's lines
# joined, NEW.spans their spans. The line is cast to text: SQLite's JSON functions take text (a
# BLOB is JSONB from 3.45 on), and substr() counts bytes only on a BLOB.
_PARSE = f"""
INSERT INTO ingest_raw (idx, span, x)
SELECT s.key, s.value, json_extract(CAST(substr(NEW.blob, s.value >> 32, s.value & 4294967295) AS TEXT),
    {", ".join(f"'{path}'" for path in _PATHS)})
FROM json_each(NEW.spans) AS s
"""

# A custom_id of ours is the prefix and the id written as custom_id_for writes it (no sign,
# no leading zero, within 64 bits): checked by writing it back.
_ID = "CAST(substr(json_extract(x, '$[0]'), 2) AS INTEGER)"
_RID = f"iif(json_extract(x, '$[0]') = '{CUSTOM_ID_PREFIX}' || {_ID}, {_ID}, NULL)"

# Give each line its verdict. The window numbers repeats of one request within the chunk:
# the first wins, as it would line by line.
_CLASSIFY = f"""
INSERT INTO ingest_lines (idx, rid, rtype, reply_model, input_tokens, output_tokens,
    cache_write_5m, cache_write_1h, cache_read, start, len, model, class, tag, attempts, escalated,
    verdict, final_state)
SELECT p.idx, p.rid, p.rtype, p.reply_model, p.input_tokens, p.output_tokens, p.cache_write_5m,
    p.cache_write_1h, p.cache_read, p.span >> 32, p.span & 4294967295, r.model, r.class, r.tag,
    r.attempts, r.state = '{states.ESCALATED}',
    CASE
        WHEN r.id IS NULL THEN '{UNKNOWN}'
        WHEN p.nth > 1
            OR EXISTS (SELECT 1 FROM ledger l WHERE l.batch_id = NEW.batch_id AND l.request_id = r.id)
            THEN '{SKIPPED}'
        -- An escalated request still takes a succeeded batch result: the first final
        -- outcome wins, and the real-time reply that comes second is the duplicate.
        -- A submitted request with a completion is final: a line read again after
        -- a purge took its ledger row is a duplicate, as it was once the row was written.
        WHEN r.batch_id = NEW.batch_id AND ((r.state = '{states.SUBMITTED}'
                AND {not_completed("r")})
            OR (r.state = '{states.ESCALATED}' AND p.rtype = 'succeeded'))
            THEN iif(p.rtype = 'succeeded', '{FINAL}', '{DECIDE}')
        ELSE '{DUPLICATE}'
    END,
    iif(p.rtype = 'succeeded', '{states.SUCCEEDED}', NULL)
FROM (
    SELECT q.*, row_number() OVER (PARTITION BY q.rid ORDER BY q.idx) AS nth FROM (
        SELECT idx, span, {_RID} AS rid,
            COALESCE(CAST(json_extract(x, '$[1]') AS TEXT), 'unknown') AS rtype,
            iif(json_type(x, '$[2]') = 'text', json_extract(x, '$[2]'), NULL) AS reply_model,
            {
    ", ".join(
        f"{expr} AS {name}"
        for expr, name in zip(
            usage_counts_sql("x", _AT),
            ("input_tokens", "output_tokens", "cache_write_5m", "cache_write_1h", "cache_read"),
            strict=True,
        )
    )
}
        FROM ingest_raw
    ) AS q
) AS p
LEFT JOIN requests r ON r.id = p.rid
"""

_SET_DECISIONS = """
UPDATE temp.ingest_lines SET verdict = json_extract(j.value, '$[1]'),
    final_state = json_extract(j.value, '$[2]')
FROM json_each(?) AS j WHERE ingest_lines.idx = json_extract(j.value, '$[0]')
"""

# Completion numbers in line order, after the last one given (the partial index answers
# MAX(); the subquery runs once).
_NUMBER_FINALS = f"""
UPDATE ingest_lines
SET done_seq = ({NEXT_DONE_SEQ}) - 1 + f.n
FROM (SELECT idx, row_number() OVER (ORDER BY idx) AS n
      FROM ingest_lines WHERE verdict = '{FINAL}') AS f
WHERE ingest_lines.idx = f.idx
"""

_INSERT_RESULTS = """
INSERT INTO results (done_seq, line)
SELECT done_seq, substr(NEW.blob, start, len) FROM ingest_lines WHERE done_seq IS NOT NULL ORDER BY done_seq
"""

# A submitted request's outcome is appended to `completions` (folded into its row by FOLD_COMPLETIONS
# when the batch's ingest ends); the request's row is left alone.
_COMPLETE = """
INSERT INTO completions (done_seq, request_id, state, outcome, attempts, finished_at)
SELECT done_seq, rid, final_state, rtype, attempts + 1, NEW.now FROM ingest_lines
WHERE done_seq IS NOT NULL AND NOT escalated ORDER BY done_seq
"""

# An escalated request (rare) is finished in its row at once: the escalation's own writes are
# guarded on its state. Unary plus: no index on batch_id or state, so the plan finds each row
# by id.
_FINISH_ESCALATED = f"""
UPDATE requests SET state = t.final_state, outcome = t.rtype, done_seq = t.done_seq,
    finished_at = NEW.now, attempts = attempts + 1
FROM (SELECT rid, final_state, rtype, done_seq FROM ingest_lines
      WHERE done_seq IS NOT NULL AND escalated ORDER BY rid) AS t
WHERE requests.id = t.rid AND +requests.batch_id = NEW.batch_id AND +requests.state = '{states.ESCALATED}'
"""

# Every completion into its request's row, in id order (one pass over the table), and the
# table emptied: run in the transaction that closes a batch (Store.finish_batch). Any
# completion may be folded at any time, whichever batch it came from.
FOLD_COMPLETIONS = (
    """
    UPDATE requests SET state = c.state, outcome = c.outcome, done_seq = c.done_seq,
        finished_at = c.finished_at, attempts = c.attempts
    FROM (SELECT * FROM completions ORDER BY request_id) AS c WHERE requests.id = c.request_id
    """,
    "DELETE FROM completions",
)

_RESUBMIT = f"""
UPDATE requests SET state = '{states.PENDING}', attempts = attempts + 1
WHERE id IN (SELECT rid FROM ingest_lines WHERE verdict = '{RETRY}')
    AND +batch_id = NEW.batch_id AND +state = '{states.SUBMITTED}'
"""

# Every line that counted is billed; in request id order, so the (batch_id, request_id)
# index grows in order.
_LEDGER = f"""
INSERT OR IGNORE INTO ledger (at, lane, model, class, tag, request_id, batch_id, result_type,
    input_tokens, output_tokens, cache_write_5m, cache_write_1h, cache_read, duplicate, provider)
SELECT NEW.now, 'batch', COALESCE(NULLIF(t.reply_model, ''), t.model), t.class, t.tag, t.rid,
    NEW.batch_id,
    t.rtype, t.input_tokens, t.output_tokens, t.cache_write_5m, t.cache_write_1h, t.cache_read,
    t.verdict = '{DUPLICATE}', (SELECT provider FROM batches WHERE id = NEW.batch_id)
FROM ingest_lines t
WHERE t.verdict IN ('{FINAL}', '{RETRY}', '{DUPLICATE}')
ORDER BY t.rid
"""

# The stages, as triggers. The scratch rows of a chunk are cleared when the next one is read
# (a rollback clears them too). ingest_read hands over to ingest_write itself, in the same
# step, unless some line waits for the retry policy.
_READ_VIEW = (
    "CREATE TEMP VIEW ingest_read AS SELECT NULL AS batch_id, NULL AS now, NULL AS blob, NULL AS spans"
)
_READ_TRIGGER = f"""
CREATE TEMP TRIGGER ingest_read_chunk INSTEAD OF INSERT ON ingest_read BEGIN
DELETE FROM ingest_raw;
DELETE FROM ingest_lines;
{_PARSE};
{_CLASSIFY};
INSERT INTO ingest_write (batch_id, now, blob) SELECT NEW.batch_id, NEW.now, NEW.blob
WHERE NOT EXISTS (SELECT 1 FROM ingest_lines WHERE verdict = '{DECIDE}');
END
"""
_WRITE_VIEW = "CREATE TEMP VIEW ingest_write AS SELECT NULL AS batch_id, NULL AS now, NULL AS blob"
_WRITE_TRIGGER = f"""
CREATE TEMP TRIGGER ingest_write_chunk INSTEAD OF INSERT ON ingest_write BEGIN
{_NUMBER_FINALS};
{_INSERT_RESULTS};
{_COMPLETE};
{_FINISH_ESCALATED};
{_RESUBMIT};
{_LEDGER};
END
"""
_READ_CHUNK = "INSERT INTO temp.ingest_read (batch_id, now, blob, spans) VALUES (?, ?, ?, ?)"
_WRITE_CHUNK = "INSERT INTO temp.ingest_write (batch_id, now, blob) VALUES (?, ?, ?)"

# Where the chunk stands: the lines left to the retry policy (their class, attempts and
# deadline), the count of each verdict, and the lines made final with their requests, in
# completion order.
_STATUS = f"""
SELECT (SELECT json_group_array(json_array(t.idx, r.class, r.attempts,
            iif(r.deadline_at IS NULL, NULL, printf('%!.17g', r.deadline_at))))
        FROM temp.ingest_lines t JOIN requests r ON r.id = t.rid WHERE t.verdict = '{DECIDE}'),
    (SELECT json_group_object(verdict, n)
        FROM (SELECT verdict, COUNT(*) AS n FROM temp.ingest_lines GROUP BY verdict)),
    json_group_array(idx), json_group_array(rid), min(done_seq), max(done_seq)
FROM (SELECT idx, rid, done_seq FROM temp.ingest_lines WHERE done_seq IS NOT NULL ORDER BY done_seq)
"""

# The final rows as stored, column by column, for a JSON array of request ids: run by the
# reader after the COMMIT, beside the writer's next chunk. One row of flat JSON arrays reads
# back at a fraction of the cost of one array per row; all aggregates of one SELECT see the
# rows in the same order. REALs leave SQLite's JSON functions with 15 significant digits;
# printf('%!.17g') keeps every bit (a float is read back from the text exactly).
_FINAL_COLUMNS = (
    "r.id",
    "r.key",
    "r.class",
    "r.tag",
    "r.model",
    "r.state",
    "r.attempts",
    "r.outcome",
    "printf('%!.17g', r.created_at)",
    "iif(r.deadline_at IS NULL, NULL, printf('%!.17g', r.deadline_at))",
    "r.batch_id",
)
READ_FINAL_ROWS = f"""
SELECT {", ".join(f"json_group_array({column})" for column in _FINAL_COLUMNS)}
FROM json_each(?) AS j JOIN requests_now r ON r.id = j.value
"""

# Created when the store opens, in this order; temp tables, views and triggers are private to
# the writer's connection and, with temp_store = MEMORY, never on disk.
SCRATCH_SCHEMA = (_RAW_TABLE, _TEMP_TABLE, _WRITE_VIEW, _WRITE_TRIGGER, _READ_VIEW, _READ_TRIGGER)


def spans_of(lines: Sequence[bytes]) -> str:
    """The `spans` argument of apply_chunk: where each line sits in `b"".join(lines)`."""
    lengths = list(map(len, lines))
    starts = itertools.accumulate(lengths[:-1], initial=1)
    return json_param([start << 32 | length for start, length in zip(starts, lengths, strict=True)])


def apply_chunk(
    c: sqlite3.Connection,
    batch_id: int,
    lines: Sequence[bytes],
    blob: bytes,
    spans: str,
    *,
    now: float,
    max_attempts: Mapping[str, int],
    default_max_attempts: int,
    retry: RetryPolicy,
) -> tuple[str, str, str, int | None, int | None]:
    """Apply result lines; run on the writer's thread inside `sql.in_transaction`.

    `blob` is the lines joined, `spans` from spans_of(lines) (both made before the hand-off:
    Python here waits for the GIL). Returns the verdict counts and the line indexes and
    request ids of the lines made final, as JSON, for `stats_of` and `final_rows`, and their
    first and last completion numbers.
    Raises ValueError, naming the line, when a line is not JSON (nothing written).
    """
    try:
        c.execute(_READ_CHUNK, (batch_id, now, blob, spans))
    except sqlite3.OperationalError as exc:
        if "JSON" in str(exc):
            _raise_for_bad_line(lines)
        raise
    decide_json, *outcome = c.execute(_STATUS).fetchone()
    if decide_json != "[]":  # only lines that are not `succeeded`: rare
        decisions = _decisions(decide_json, lines, now, max_attempts, default_max_attempts, retry)
        c.execute(_SET_DECISIONS, (json_param(decisions),))
        c.execute(_WRITE_CHUNK, (batch_id, now, blob))
        _, *outcome = c.execute(_STATUS).fetchone()
    counts, finished_lines, finished_ids, first, last = outcome
    return counts, finished_lines, finished_ids, first, last


def stats_of(outcome: Sequence[Any]) -> IngestStats:
    """The stats of a chunk, from what apply_chunk returned."""
    counts = json.loads(outcome[0])
    return IngestStats(
        delivered=counts.get(FINAL, 0),
        retried=counts.get(RETRY, 0),
        duplicates=counts.get(DUPLICATE, 0),
        skipped=counts.get(SKIPPED, 0),
        unknown=counts.get(UNKNOWN, 0),
        # Numbered consecutively under the write lock (_NUMBER_FINALS): nobody else's among them.
        completions=completion_numbers(outcome[3], outcome[4], counts.get(FINAL, 0)),
    )


def _decisions(
    decide_json: str,
    lines: Sequence[bytes],
    now: float,
    max_attempts: Mapping[str, int],
    default_max_attempts: int,
    retry: RetryPolicy,
) -> list[tuple[int, str, str | None]]:
    """(line index, verdict, final state) for each line the retry policy decides."""
    out: list[tuple[int, str, str | None]] = []
    for idx, latency, attempts, deadline in json.loads(decide_json):
        result = pydantic_core.from_json(lines[idx]).get("result")
        resubmit = retry(
            result if isinstance(result, dict) else {},
            attempts=attempts + 1,
            max_attempts=max_attempts.get(latency, default_max_attempts),
            deadline_at=None if deadline is None else float(deadline),
            now=now,
        )
        if resubmit:
            out.append((idx, RETRY, None))
        else:
            out.append((idx, FINAL, states.FAILED))
    return out


def final_rows(outcome: Sequence[str], columns: Sequence[str], lines: Sequence[bytes]) -> list[FinalRow]:
    """The final rows, in RequestRow's field order and completion order, from apply_chunk's
    outcome and READ_FINAL_ROWS' column arrays."""
    line_of = dict(zip(json.loads(outcome[2]), json.loads(outcome[1]), strict=True))
    rid, key, latency, tag, model, state, attempts, outcome_type, created, deadline, bid = (
        json.loads(column) for column in columns
    )
    result = [lines[line_of[i]] for i in rid]
    created_at = list(map(float, created))
    deadline_at = [None if d is None else float(d) for d in deadline]
    # Plain tuples of plain values: the garbage collector stops tracking them (records.FinalRow).
    return list(
        zip(
            rid,
            key,
            latency,
            tag,
            model,
            state,
            attempts,
            outcome_type,
            result,
            created_at,
            deadline_at,
            bid,
            strict=True,
        )
    )


def _raise_for_bad_line(lines: Sequence[bytes]) -> None:
    for number, line in enumerate(lines, 1):
        try:
            pydantic_core.from_json(line)
        except ValueError as exc:
            raise ValueError(f"batch result line {number} of the chunk is not JSON: {exc}") from None
    raise ValueError("a batch result line is not JSON that SQLite can read")
