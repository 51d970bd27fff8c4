"""Applying a chunk of batch result lines on PostgreSQL: set-based, in one transaction.

The client reads each line (custom_id, result type, reply model, token counts) while the
server writes the chunk before it, and sends the chunk as typed arrays: parsing JSON is
cheaper in the client (pydantic_core, ~3 us a line) than as jsonb in the server (~14 us),
and the client's core would otherwise sit waiting. The server locks the requests the chunk
names (in id order, so two ingests cannot deadlock), gives every line its verdict in the temp
table `ingest_lines`, and from there writes the final states with their result lines, the
resubmissions and the ledger rows in one statement. The verdicts, the de-duplication by
custom_id and the guards are those of both engines (router/store/verdicts.py); only the
lines that are neither `succeeded` nor somebody else's go to Python, for the caller's retry
policy.

JIT is off for the chunk's transaction: the statements' cost estimates cross
`jit_above_cost`, and compiling them took longer (~0.45 s a chunk) than running them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import asyncpg
import pydantic_core
from asyncpg.pool import PoolConnectionProxy

from ...pricing import counts_from_usage
from .. import states
from ..base import RetryPolicy
from ..records import request_id_from
from ..verdicts import DECIDE, DUPLICATE, FINAL, RETRY, SKIPPED, UNKNOWN
from .sql import LEDGER_COLUMNS, NOTIFY, TAKE_COMPLETION_LOCK

Conn: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"

# Per connection (created when the pool opens it), emptied at every commit or rollback.
SCRATCH_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS ingest_lines (
    idx            INTEGER NOT NULL,      -- the line's position in the chunk, from 0
    rid            BIGINT,                -- the request its custom_id names
    rtype          TEXT,                  -- result.type
    reply_model    TEXT,                  -- result.message.model, when a string
    input_tokens   BIGINT, output_tokens BIGINT, cache_write_5m BIGINT,
    cache_write_1h BIGINT, cache_read BIGINT,
    model          TEXT,                  -- the request's model, class and tag, for the ledger
    class          TEXT,
    tag            TEXT,
    attempts       INTEGER,               -- the request's attempts before this result
    deadline_at    DOUBLE PRECISION,
    verdict        TEXT NOT NULL,
    final_state    TEXT
) ON COMMIT DELETE ROWS
"""

# The client's reading of the lines, one array per column, in line order ($2 to $10):
# the request id (NULL: not a custom_id of ours), whether an earlier line of the chunk names
# the same request, the result type, the reply's model and the five token counts.
_LINES = """
SELECT (n - 1)::int AS idx, rid, repeat, rtype, reply_model, input_tokens, output_tokens,
    cache_write_5m, cache_write_1h, cache_read
FROM unnest($2::bigint[], $3::bool[], $4::text[], $5::text[], $6::bigint[], $7::bigint[],
            $8::bigint[], $9::bigint[], $10::bigint[]) WITH ORDINALITY
    AS l(rid, repeat, rtype, reply_model, input_tokens, output_tokens, cache_write_5m,
         cache_write_1h, cache_read, n)
"""

# $1 batch id, $2.. the lines (_LINES), $11 the request ids named, sorted and unique. The
# requests are locked, so the verdict holds until the commit: no other process moves them in
# between. A line already billed (a re-read of the batch) is found by its request id in the
# ledger's (batch_id, request_id) index: the batch's ledger rows as a whole grow by a chunk
# with every chunk, and reading them all for each one made the ingest quadratic. Returns,
# per verdict, the count, and for the lines the retry policy decides their index, class,
# attempts so far and deadline.
CLASSIFY = f"""
WITH locked AS (
    SELECT id, state, batch_id, model, class, tag, attempts, deadline_at FROM requests
    WHERE id = ANY($11::bigint[]) ORDER BY id FOR UPDATE
), billed AS (
    SELECT request_id FROM ledger WHERE batch_id = $1 AND request_id = ANY($11::bigint[])
), classified AS (
    INSERT INTO ingest_lines (idx, rid, rtype, reply_model, input_tokens, output_tokens,
        cache_write_5m, cache_write_1h, cache_read, model, class, tag, attempts, deadline_at,
        verdict, final_state)
    SELECT n.idx, n.rid, n.rtype, n.reply_model, n.input_tokens, n.output_tokens,
        n.cache_write_5m, n.cache_write_1h, n.cache_read,
        r.model, r.class, r.tag, r.attempts, r.deadline_at,
        CASE
            WHEN r.id IS NULL THEN '{UNKNOWN}'
            WHEN n.repeat OR b.request_id IS NOT NULL THEN '{SKIPPED}'
            -- An escalated request still takes a succeeded batch result: the first final
            -- outcome wins, and the real-time reply that comes second is the duplicate.
            WHEN r.batch_id = $1 AND (r.state = '{states.SUBMITTED}'
                    OR (r.state = '{states.ESCALATED}' AND n.rtype = 'succeeded'))
                THEN CASE WHEN n.rtype = 'succeeded' THEN '{FINAL}' ELSE '{DECIDE}' END
            ELSE '{DUPLICATE}'
        END,
        CASE WHEN n.rtype = 'succeeded' THEN '{states.SUCCEEDED}' END
    FROM ({_LINES}) AS n LEFT JOIN locked r ON r.id = n.rid LEFT JOIN billed b ON b.request_id = n.rid
    RETURNING idx, verdict, class, attempts, deadline_at
)
SELECT verdict, count(*)::int,
    array_agg(idx ORDER BY idx) FILTER (WHERE verdict = '{DECIDE}'),
    array_agg(class ORDER BY idx) FILTER (WHERE verdict = '{DECIDE}'),
    array_agg(attempts ORDER BY idx) FILTER (WHERE verdict = '{DECIDE}'),
    array_agg(deadline_at ORDER BY idx) FILTER (WHERE verdict = '{DECIDE}')
FROM classified GROUP BY verdict
"""

SET_DECISIONS = """
UPDATE ingest_lines SET verdict = d.verdict, final_state = d.state
FROM unnest($1::int[], $2::text[], $3::text[]) AS d(idx, verdict, state)
WHERE ingest_lines.idx = d.idx
"""

# $1 batch id, $2 now, $3 the ids of the requests to resubmit (the lines decided RETRY).
# Run before the completion lock is taken: neither the resubmissions nor the ledger rows take
# a completion number, so they are written while another chunk holds the lock. The retry ids
# come from the client, which decided them, so the UPDATE probes the primary key and joins
# nothing (most chunks resubmit none). The ledger rows are new but for one case, which NOT
# EXISTS leaves out: a concurrent ingest of the same batch that billed a line after CLASSIFY's
# snapshot was taken (before it waited for the requests' locks). That ingest held the locks
# until its commit, so this statement's snapshot shows its rows; and a plain INSERT costs a
# third less than ON CONFLICT's speculative one.
BILL = f"""
WITH retried AS (
    UPDATE requests r SET state = '{states.PENDING}', attempts = r.attempts + 1
    WHERE r.id = ANY($3::bigint[]) AND r.batch_id + 0 = $1 AND r.state = '{states.SUBMITTED}'
)
INSERT INTO ledger ({LEDGER_COLUMNS})
SELECT $2, 'batch', (SELECT provider FROM batches WHERE id = $1),
    COALESCE(NULLIF(t.reply_model, ''), t.model), t.class, t.tag, t.rid, $1,
    t.rtype, t.input_tokens, t.output_tokens, t.cache_write_5m, t.cache_write_1h, t.cache_read,
    (t.verdict = '{DUPLICATE}')::int, 1
FROM ingest_lines t WHERE t.verdict IN ('{FINAL}', '{RETRY}', '{DUPLICATE}')
    AND NOT EXISTS (SELECT 1 FROM ledger l WHERE l.batch_id = $1 AND l.request_id = t.rid)
ORDER BY t.rid
"""

# $1 batch id, $2 now, $3 the chunk's lines, $4 the request ids named (CLASSIFY's $11). Run
# holding the completion lock (done_seq in commit order), so it does only what needs the
# lock: completion numbers in line order, and the final states with their result lines. The
# guards are the SQLite engine's. Returns the final rows, in completion order, with the
# index of the line that made each final. Each request is found by its id (`id = ANY($4)`,
# which the planner can estimate, so a large table is probed, not scanned per chunk), never by
# scanning its batch (`batch_id + 0`: the statistics of a freshly filled table can put the
# batch at one row, and the plan at a nested loop over the whole batch per line).
WRITE = f"""
WITH f AS (
    SELECT s.idx, s.rid, s.final_state, s.rtype, nextval('done_seq_numbers') AS done_seq
    FROM (SELECT idx, rid, final_state, rtype FROM ingest_lines
          WHERE verdict = '{FINAL}' ORDER BY idx) AS s
), done AS (
    UPDATE requests r SET state = f.final_state, outcome = f.rtype, done_seq = f.done_seq,
        finished_at = $2, attempts = r.attempts + 1, result = x.line
    FROM f JOIN unnest($3::bytea[]) WITH ORDINALITY AS x(line, n) ON x.n = f.idx + 1
    WHERE r.id = f.rid AND r.id = ANY($4::bigint[]) AND r.batch_id + 0 = $1
        AND r.state IN ('{states.SUBMITTED}', '{states.ESCALATED}')
    RETURNING r.id, r.key, r.class, r.tag, r.model, r.state, r.attempts, r.outcome, f.idx,
        r.created_at, r.deadline_at, r.batch_id, r.done_seq
)
SELECT * FROM done ORDER BY done_seq
"""

# Before the statements: no JIT (see the module's docstring); a chunk's sorts fit in memory.
# No sequential scans: while a batch is ingested its ledger rows grow faster than autovacuum's
# statistics, and a ledger analyzed empty made the planner check every line's ledger row in
# CLASSIFY by scanning the whole ledger (10,000 scans of up to 90,000 rows per chunk: minutes);
# and WRITE probes the chunk's requests by id, where a table of 100,000 rows got a scan of all
# of them per chunk (0.3 s of WRITE's 1.9 s of server CPU a 100,000-line batch, bench_ingest.py).
# Custom plans only: a connection's prepared statements switch to a generic plan after five
# runs when it looks cheaper, and without the arrays' lengths it guesses ~100 lines a chunk.
# No nested loops: `requests` analyzed while the batch was pending (or before it was claimed)
# puts its submitted rows at one, and a nested loop with those rows outside then reads the
# chunk's 10,000 lines once per request (10^8 rows a chunk: 20 s to 110 s each, in the
# benchmark whenever autovacuum had not analyzed the table since the flush). Hash joins cost
# the same whatever the estimate. `ingest_lines` is never analyzed: the planner then sizes it
# by its blocks as they are (one chunk's lines), and ANALYZE would rewrite its statistics in
# the catalog with every chunk.
PREPARE_CHUNK = (
    "SET LOCAL jit = off; SET LOCAL work_mem = '64MB'; SET LOCAL enable_seqscan = off;"
    " SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL enable_nestloop = off"
)

_BIGINT_MAX = 2**63 - 1


class Chunk:
    """A chunk's lines as the client read them: one list per column of _LINES, in line order."""

    def __init__(self, lines: Sequence[bytes]) -> None:
        self.lines = lines
        self.rids: list[int | None] = []
        self.repeats: list[bool] = []
        self.rtypes: list[str] = []
        self.models: list[str | None] = []
        self.counts: tuple[list[int], ...] = ([], [], [], [], [])
        seen: set[int] = set()
        for number, raw in enumerate(lines, 1):
            try:
                line = pydantic_core.from_json(raw)
            except ValueError as exc:
                raise ValueError(f"batch result line {number} of the chunk is not JSON: {exc}") from None
            self._add(number, line if isinstance(line, dict) else {}, seen)
        self.named = sorted(seen)
        for column in self.counts:
            if column and (max(column) > _BIGINT_MAX or min(column) < -_BIGINT_MAX):
                # What SQLite's CAST gives a count beyond 64 bits; rare enough to take a pass.
                column[:] = [max(-_BIGINT_MAX, min(_BIGINT_MAX, n)) for n in column]

    def _add(self, number: int, line: dict[str, Any], seen: set[int]) -> None:
        custom_id = line.get("custom_id")
        rid = request_id_from(custom_id) if isinstance(custom_id, str) else None
        if rid is not None and rid > _BIGINT_MAX:
            rid = None
        self.rids.append(rid)
        self.repeats.append(rid in seen)
        if rid is not None:
            seen.add(rid)
        result = line.get("result")
        if not isinstance(result, dict):
            result = {}
        rtype = result.get("type")
        if not isinstance(rtype, str):
            # As SQLite's json_extract cast to text: a number or an object as its JSON text.
            rtype = "unknown" if rtype is None else pydantic_core.to_json(rtype).decode()
        message = result.get("message")
        if not isinstance(message, dict):
            message = {}
        model = message.get("model")
        if not isinstance(model, str):
            model = None
        if "\x00" in rtype or (model is not None and "\x00" in model):
            raise ValueError(f"batch result line {number} of the chunk has a NUL in its type or model")
        self.rtypes.append(rtype)
        self.models.append(model)
        usage = message.get("usage")
        inputs, outputs, write_5m, write_1h, read = self.counts
        counts = counts_from_usage(usage if isinstance(usage, dict) else {})
        inputs.append(counts[0])
        outputs.append(counts[1])
        write_5m.append(counts[2])
        write_1h.append(counts[3])
        read.append(counts[4])

    def arguments(self) -> tuple[list[Any], ...]:
        """CLASSIFY's $2 to $11."""
        return (self.rids, self.repeats, self.rtypes, self.models, *self.counts, self.named)


async def apply_chunk(
    conn: Conn,
    batch_id: int,
    chunk: Chunk,
    *,
    now: float,
    max_attempts: Mapping[str, int],
    default_max_attempts: int,
    retry: RetryPolicy,
    completion_lock: int,
    channel: str,
) -> tuple[dict[str, int], list[asyncpg.Record]]:
    """Apply a chunk in the caller's transaction; the verdict counts and WRITE's final rows."""
    await conn.execute(PREPARE_CHUNK)
    counts: dict[str, int] = {}
    decide: tuple[list[int], list[str], list[int], list[float | None]] | None = None
    for verdict, count, *decided in await conn.fetch(CLASSIFY, batch_id, *chunk.arguments()):
        counts[verdict] = count
        if verdict == DECIDE:
            decide = decided  # type: ignore[assignment]
    retried: list[int | None] = []
    if decide is not None:
        decisions = _decisions(decide, chunk.lines, now, max_attempts, default_max_attempts, retry)
        await conn.execute(SET_DECISIONS, *decisions)
        del counts[DECIDE]
        for i, verdict in zip(decisions[0], decisions[1], strict=True):
            counts[verdict] = counts.get(verdict, 0) + 1
            if verdict == RETRY:
                retried.append(chunk.rids[i])
    await conn.execute(BILL, batch_id, now, retried)
    await conn.execute(TAKE_COMPLETION_LOCK, completion_lock)
    done = list(await conn.fetch(WRITE, batch_id, now, chunk.lines, chunk.named))
    if done:
        await conn.execute(NOTIFY, channel, str(done[-1]["done_seq"]))
    return counts, done


def _decisions(
    decide: tuple[list[int], list[str], list[int], list[float | None]],
    lines: Sequence[bytes],
    now: float,
    max_attempts: Mapping[str, int],
    default_max_attempts: int,
    retry: RetryPolicy,
) -> tuple[list[int], list[str], list[str | None]]:
    """(line indexes, verdicts, final states) of the lines the retry policy decides."""
    verdicts: list[str] = []
    finals: list[str | None] = []
    for i, latency, attempts, deadline in zip(*decide, strict=True):
        result = pydantic_core.from_json(lines[i]).get("result")
        resubmit = retry(
            result if isinstance(result, dict) else {},
            attempts=attempts + 1,
            max_attempts=max_attempts.get(latency, default_max_attempts),
            deadline_at=deadline,
            now=now,
        )
        verdicts.append(RETRY if resubmit else FINAL)
        finals.append(None if resubmit else states.FAILED)
    return list(decide[0]), verdicts, finals
