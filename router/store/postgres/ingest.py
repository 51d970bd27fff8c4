"""Applying a chunk of batch result lines on PostgreSQL: set-based, in one transaction.

The chunk's lines go over as one text[] parameter and PostgreSQL does the work: it parses each
line as jsonb, locks the requests the chunk names (in id order, so two ingests cannot
deadlock), gives every line its verdict in the temp table `ingest_lines`, and from there
writes the final states, the resubmissions and the ledger rows in one statement. The
verdicts, the de-duplication by custom_id and the guards are the SQLite engine's
(router/store/ingest.py); only the lines that are neither `succeeded` nor somebody else's
go to Python, for the caller's retry policy.
"""

from __future__ import annotations

from ..records import CUSTOM_ID_PREFIX
from ..verdicts import DECIDE, DUPLICATE, FINAL, RETRY, SKIPPED, UNKNOWN
from .sql import LEDGER_COLUMNS

# Per connection (created when the pool opens it), emptied at every commit or rollback.
SCRATCH_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS ingest_lines (
    idx            INTEGER PRIMARY KEY,   -- the line's position in the chunk, from 0
    line           TEXT NOT NULL,
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


def _count(path: str) -> str:
    """TokenCounts.from_usage's rule for one count of the line `n.j`: a JSON number, truncated;
    anything else (a boolean, a string, null, nothing) 0. tests/test_store_contract.py holds the
    engines to the same counts."""
    at = "'{result,message,usage," + path + "}'"
    return (
        f"(CASE jsonb_typeof(n.j #> {at}) WHEN 'number' THEN trunc((n.j #>> {at})::numeric)::bigint"
        " ELSE 0 END)"
    )


_CREATED = _count("cache_creation_input_tokens")
_SPLIT_5M = _count("cache_creation,ephemeral_5m_input_tokens")
_SPLIT_1H = _count("cache_creation,ephemeral_1h_input_tokens")

# A custom_id of ours is the prefix and the id as custom_id_for writes it (no sign, no
# leading zero); 18 digits at most, so it always fits a bigint.
_RID = (
    f"CASE WHEN j ->> 'custom_id' ~ '^{CUSTOM_ID_PREFIX}(0|[1-9][0-9]{{0,17}})$'"
    " THEN substr(j ->> 'custom_id', 2)::bigint END"
)

# $1 batch id, $2 the lines. The window numbers repeats of one request within the chunk: the
# first wins, as it would line by line. The requests are locked, so the verdict holds until
# the commit: no other process moves them in between.
CLASSIFY = f"""
WITH parsed AS (
    SELECT idx, line, j, {_RID} AS rid
    FROM (SELECT (n - 1)::int AS idx, line, line::jsonb AS j
          FROM unnest($2::text[]) WITH ORDINALITY AS t(line, n)) AS l
), numbered AS (
    SELECT p.*, row_number() OVER (PARTITION BY p.rid ORDER BY p.idx) AS nth,
        COALESCE(p.j #>> '{{result,type}}', 'unknown') AS rtype
    FROM parsed p
), locked AS (
    SELECT id, state, batch_id, model, class, tag, attempts, deadline_at FROM requests
    WHERE id IN (SELECT rid FROM parsed WHERE rid IS NOT NULL) ORDER BY id FOR UPDATE
)
INSERT INTO ingest_lines (idx, line, rid, rtype, reply_model, input_tokens, output_tokens,
    cache_write_5m, cache_write_1h, cache_read, model, class, tag, attempts, deadline_at,
    verdict, final_state)
SELECT n.idx, n.line, n.rid, n.rtype,
    CASE WHEN jsonb_typeof(n.j #> '{{result,message,model}}') = 'string'
        THEN n.j #>> '{{result,message,model}}' END,
    {_count("input_tokens")},
    {_count("output_tokens")},
    ({_SPLIT_5M} + greatest(0, {_CREATED} - {_SPLIT_5M} - {_SPLIT_1H})),
    {_SPLIT_1H},
    {_count("cache_read_input_tokens")},
    r.model, r.class, r.tag, r.attempts, r.deadline_at,
    CASE
        WHEN r.id IS NULL THEN '{UNKNOWN}'
        WHEN n.nth > 1
            OR EXISTS (SELECT 1 FROM ledger l WHERE l.batch_id = $1 AND l.request_id = r.id)
            THEN '{SKIPPED}'
        -- An escalated request still takes a succeeded batch result: the first final
        -- outcome wins, and the real-time reply that comes second is the duplicate.
        WHEN r.batch_id = $1 AND (r.state = 'submitted' OR (r.state = 'escalated' AND n.rtype = 'succeeded'))
            THEN CASE WHEN n.rtype = 'succeeded' THEN '{FINAL}' ELSE '{DECIDE}' END
        ELSE '{DUPLICATE}'
    END,
    CASE WHEN n.rtype = 'succeeded' THEN 'succeeded' END
FROM numbered n LEFT JOIN locked r ON r.id = n.rid
"""

# The lines the retry policy decides: their index, class, attempts so far and deadline.
TO_DECIDE = (
    f"SELECT idx, class, attempts, deadline_at FROM ingest_lines WHERE verdict = '{DECIDE}' ORDER BY idx"
)

SET_DECISIONS = """
UPDATE ingest_lines SET verdict = d.verdict, final_state = d.state
FROM unnest($1::int[], $2::text[], $3::text[]) AS d(idx, verdict, state)
WHERE ingest_lines.idx = d.idx
"""

# $1 batch id, $2 now. Run holding the completion lock (done_seq in commit order). Completion
# numbers in line order; the guards are the SQLite engine's. Returns the final rows, in
# completion order, with the index of the line that made each final. `batch_id + 0`: each
# request is found by its id, never by scanning its batch (whose size the statistics of a
# freshly filled table can put at one row: a nested loop over the whole batch per line).
WRITE = f"""
WITH f AS (
    SELECT s.idx, s.rid, s.final_state, s.rtype, s.line, nextval('done_seq_numbers') AS done_seq
    FROM (SELECT idx, rid, final_state, rtype, line FROM ingest_lines
          WHERE verdict = '{FINAL}' ORDER BY idx) AS s
), done AS (
    UPDATE requests r SET state = f.final_state, outcome = f.rtype, done_seq = f.done_seq,
        finished_at = $2, attempts = r.attempts + 1, result = convert_to(f.line, 'UTF8')
    FROM f
    WHERE r.id = f.rid AND r.batch_id + 0 = $1 AND r.state IN ('submitted', 'escalated')
    RETURNING r.id, r.key, r.class, r.tag, r.model, r.state, r.attempts, r.outcome, f.idx,
        r.created_at, r.deadline_at, r.batch_id, r.done_seq
), retried AS (
    UPDATE requests r SET state = 'pending', attempts = r.attempts + 1
    FROM (SELECT rid FROM ingest_lines WHERE verdict = '{RETRY}') AS t
    WHERE r.id = t.rid AND r.batch_id + 0 = $1 AND r.state = 'submitted'
    RETURNING r.id
), billed AS (
    INSERT INTO ledger ({LEDGER_COLUMNS})
    SELECT $2, 'batch', COALESCE(NULLIF(t.reply_model, ''), t.model), t.class, t.tag, t.rid, $1,
        t.rtype, t.input_tokens, t.output_tokens, t.cache_write_5m, t.cache_write_1h, t.cache_read,
        (t.verdict = '{DUPLICATE}')::int, 1
    FROM ingest_lines t WHERE t.verdict IN ('{FINAL}', '{RETRY}', '{DUPLICATE}') ORDER BY t.rid
    ON CONFLICT DO NOTHING
)
SELECT * FROM done ORDER BY done_seq
"""

COUNTS = "SELECT verdict, count(*)::int FROM ingest_lines GROUP BY verdict"

# Before the writes: temp tables are never analyzed by autovacuum, and the plan needs their size.
# A chunk's sorts (the lines with their parsed jsonb) fit in memory.
PREPARE_CHUNK = "SET LOCAL work_mem = '64MB'"
ANALYZE_CHUNK = "ANALYZE ingest_lines"
