"""The PostgreSQL engine's statements, by operation (ingest's are in ingest.py)."""

from __future__ import annotations

from .. import ledger

LEDGER_COLUMNS = ", ".join(ledger.LEDGER_COLUMNS)

# The rows of a batch that `requests_by_batch` lists (schema.py): all but those a batch result
# made final, so the ingest's final write of each row enters no new entry in the index. A
# row made final another way (a real-time answer after an escalation, a failure for its
# deadline or for its missing result) stays listed: a batch's final rows are found either
# here or by their ledger row of the batch (BATCH_ROWS). A query of a batch's unfinished
# rows says `finished_at IS NULL`, which the planner needs to use the index. {0}: the
# table's alias and a dot, or nothing.
LISTED_BY_BATCH = (
    "({0}finished_at IS NULL OR {0}escalated_at IS NOT NULL OR {0}outcome IN ('deadline', 'missing'))"
)
# Every row of the batches `{batches}` names ("= $1", "IN (...)"), `{columns}` of requests r:
# the rows listed by batch, and those a result of the batch made final, through their ledger
# row of it (each request has at most one there: ledger_batch_result). The two halves are
# disjoint: the second takes only the rows the first does not list.
BATCH_ROWS = (
    "SELECT {columns} FROM requests r WHERE r.batch_id {batches} AND "
    + LISTED_BY_BATCH.format("r.")
    + " UNION ALL SELECT {columns} FROM ledger l JOIN requests r ON r.id = l.request_id"
    " WHERE l.batch_id {batches} AND r.batch_id = l.batch_id AND NOT " + LISTED_BY_BATCH.format("r.")
)
LEDGER_TYPES = (
    "float8", "text", "text", "text", "text", "text", "bigint", "bigint", "text",
    "bigint", "bigint", "bigint", "bigint", "bigint", "int", "int",
)  # fmt: skip
# Ledger rows (ledger.LedgerRow), one array per column.
LEDGER_INSERT = (
    f"INSERT INTO ledger ({LEDGER_COLUMNS}) SELECT * FROM unnest("
    + ", ".join(f"${i}::{t}[]" for i, t in enumerate(LEDGER_TYPES, 1))
    + ") ON CONFLICT DO NOTHING"
)

# One group of new requests, keys unique within it: inserted where the key is new, params
# beside them; returns the key and id of each row it inserted (only those: a key stored
# before is read with STORED_KEYS, so the common case joins nothing back). The key is unique
# in `request_params` (schema.py), so the params go first and name the request's id.
ENQUEUE = """
WITH u AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::int[],
                         $7::float8[], $8::float8[], $9::bytea[], $10::text[]) WITH ORDINALITY
        AS u(key, class, tag, model, digest, size, created_at, deadline_at, params, provider, ord)
), par AS (
    INSERT INTO request_params (id, key, params)
    SELECT nextval('requests_id_seq'), key, params FROM u ORDER BY ord
    ON CONFLICT (key) DO NOTHING
    RETURNING id, key
), ins AS (
    INSERT INTO requests (id, key, class, tag, model, digest, size, state, created_at, deadline_at, provider)
    SELECT par.id, u.key, u.class, u.tag, u.model, u.digest, u.size, 'pending', u.created_at, u.deadline_at,
        u.provider
    FROM par JOIN u USING (key) ORDER BY par.id
)
SELECT key, id FROM par
"""
# Requests by their keys: the key's unique index is on request_params.
BY_KEYS = "requests r JOIN request_params p ON p.id = r.id WHERE p.key = ANY($1::text[])"
STORED_KEYS = f"SELECT r.key, r.id, r.digest, r.class, r.deadline_at FROM {BY_KEYS}"
# The cacheable prefix of requests ENQUEUE just created (only groups that have one run it).
SET_PREFIXES = """
UPDATE requests r SET prefix_key = u.prefix_key, prefix_tokens = u.prefix_tokens, ttl_1h_delta = u.delta
FROM unnest($1::bigint[], $2::text[], $3::int[], $4::int[]) AS u(id, prefix_key, prefix_tokens, delta)
WHERE r.id = u.id
"""

# `queue` is the state where a partial index lists the row ('pending', 'escalated'; see
# schema.py): a query names it for the index to serve it. The class filter: $1 NULL for all.
PENDING_STATS = (
    "SELECT count(*)::bigint, COALESCE(sum(size), 0)::bigint, min(created_at) FROM requests"
    " WHERE queue = 'pending' AND ($1::text[] IS NULL OR class = ANY($1::text[]))"
)

NEW_INTENT = (
    "INSERT INTO batches (state, request_count, body_bytes, created_at, provider)"
    " VALUES ('creating', 0, 0, $1, $2) RETURNING id"
)
# The model of the oldest pending request of a claim's scope ($1 classes, $2 provider): a
# provider that takes one model per batch claims that model's requests.
FIRST_PENDING_MODEL = (
    "SELECT model FROM requests WHERE queue = 'pending' AND ($1::text[] IS NULL OR class = ANY($1::text[]))"
    " AND provider = $2 ORDER BY id LIMIT 1"
)
# $1 batch, $2 classes (NULL: all), $3 max requests, $4 max bytes of entries, $5 the bytes
# an entry adds besides its params and id digits (store/bodies.py: entry_cost), $6 the
# provider, $7 the model (NULL: any). The oldest
# pending rows no other transaction holds (SKIP LOCKED: two flushers never take one row),
# as many as fit the byte budget in id order. Each locked row is updated where it lies, by
# its ctid (a row this transaction holds cannot move), in id order: no index probe a row,
# and the new versions enter the indexes in key order (appended, not scattered). A row
# whose locked version is newer than the statement's snapshot is not found by its ctid and
# stays pending (locked to the commit, then free for the next claim): never taken twice.
CLAIM = """
WITH picked AS (
    SELECT ctid, sum(size + $5::int + length(id::text))
               OVER (ORDER BY id ROWS UNBOUNDED PRECEDING) AS total
    FROM (SELECT ctid, id, size FROM requests
          WHERE queue = 'pending' AND ($2::text[] IS NULL OR class = ANY($2::text[]))
              AND provider = $6 AND ($7::text IS NULL OR model = $7)
          ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED) AS p
), claimed AS (
    UPDATE requests r SET state = 'submitting', batch_id = $1
    FROM picked WHERE r.ctid = picked.ctid AND picked.total <= $4 AND r.state = 'pending'
    RETURNING r.size + $5::int + length(r.id::text) AS bytes
)
SELECT count(*)::int, COALESCE(sum(bytes), 0)::bigint FROM claimed
"""
# A claim's sorts and its set of picked ids (~100 bytes a row) in memory, not spilled to disk.
CLAIM_MEMORY = "SET LOCAL work_mem = '64MB'"
SET_INTENT_SIZE = "UPDATE batches SET request_count = $2, body_bytes = $3 WHERE id = $1"
# Read through one cursor: one plan for the whole batch (never a plan per chunk, each of which
# a freshly claimed batch's statistics can make scan the rest of the batch). $2: resume after.
CLAIMED = (
    "SELECT r.id, p.params FROM requests r JOIN request_params p ON p.id = r.id"
    " WHERE r.batch_id = $1 AND r.finished_at IS NULL AND r.state = 'submitting' AND r.id > $2"
    " ORDER BY r.id"
)
SUBMITTED_INTENT = (
    "UPDATE batches SET api_id = $2, state = 'in_progress', submitted_at = $3, next_poll_at = $4"
    " WHERE id = $1 AND state = 'creating'"
)
# A batch's unfinished rows say `finished_at IS NULL`, for requests_by_batch (LISTED_BY_BATCH).
CLAIMED_SUBMITTED = (
    "UPDATE requests SET state = 'submitted'"
    " WHERE batch_id = $1 AND finished_at IS NULL AND state = 'submitting'"
)
CLAIMED_RELEASED = (
    "UPDATE requests SET state = 'pending'"
    " WHERE batch_id = $1 AND finished_at IS NULL AND state = 'submitting'"
)
CREATING_DONE = "UPDATE batches SET state = 'done' WHERE id = $1 AND state = 'creating'"

KNOWN_API_IDS = "SELECT api_id FROM batches WHERE api_id = ANY($1::text[])"
ADOPT = (
    "UPDATE batches SET api_id = $2, state = 'in_progress', submitted_at = $3, next_poll_at = $3"
    " WHERE id = $1 AND state = $4 AND api_id IS NULL"
)
RELEASE_INTENT = "UPDATE batches SET state = $3 WHERE id = $1 AND state = $2 AND api_id IS NULL"
CLOSE_RELEASED = "UPDATE batches SET state = 'done' WHERE id = $1 AND state = 'released' AND api_id IS NULL"

UPDATE_BATCH = "UPDATE batches SET {sets} WHERE id = $1"  # sets: "name = $2, ..." of allowed names
OPEN_BATCHES = (
    "SELECT id, api_id, state, request_count, body_bytes, created_at, submitted_at, ended_at,"
    " next_poll_at, provider FROM batches WHERE state <> 'done' ORDER BY id"
)
UNANSWERED_RELEASED = (
    "UPDATE requests SET state = 'pending'"
    " WHERE batch_id = $1 AND finished_at IS NULL AND state = 'submitted'"
)
BATCH_DONE = "UPDATE batches SET state = 'done', ended_at = COALESCE(ended_at, $2) WHERE id = $1"
# fail_missing: $1 batch, $2 now, $3 reason's lines come from Python, by id.
UNANSWERED = (
    "SELECT id FROM requests WHERE batch_id = $1 AND finished_at IS NULL AND state = 'submitted'"
    " ORDER BY id FOR UPDATE"
)
FAIL_MISSING = """
UPDATE requests r SET state = 'failed', outcome = 'missing', done_seq = nextval('done_seq_numbers'),
    finished_at = $2, attempts = r.attempts + 1, result = u.line
FROM (SELECT * FROM unnest($3::bigint[], $4::bytea[]) AS u(id, line) ORDER BY id) AS u
WHERE r.id = u.id AND r.batch_id + 0 = $1 AND r.state = 'submitted'  -- by id (see ingest.WRITE)
RETURNING r.done_seq
"""
TURNAROUND = (
    "INSERT INTO turnarounds (batch_id, model, seconds) SELECT DISTINCT $1::bigint, model, $2::float8"
    f" FROM ({BATCH_ROWS.format(columns='r.model', batches='= $1')}) AS b ON CONFLICT DO NOTHING"
)

REQUEST_COLUMNS = (
    "id, key, class, tag, model, state, attempts, outcome, result, created_at, deadline_at, batch_id"
)
BY_KEY = f"SELECT {REQUEST_COLUMNS} FROM requests WHERE id = (SELECT id FROM request_params WHERE key = $1)"
BY_IDS = f"SELECT {REQUEST_COLUMNS} FROM requests WHERE id = ANY($1::bigint[])"
MAX_DONE_SEQ = "SELECT COALESCE(max(done_seq), 0) FROM requests WHERE done_seq IS NOT NULL"
COMPLETED_SINCE = "SELECT done_seq, id FROM requests WHERE done_seq > $1 ORDER BY done_seq LIMIT $2"
DIGESTS = f"SELECT r.key, r.digest FROM {BY_KEYS}"
FINISHED_RESULTS = (
    "SELECT id, key, state, result FROM requests WHERE state IN ('succeeded', 'failed')"
    " AND result IS NOT NULL AND id > $1 ORDER BY id LIMIT $2"
)
RESULTS_BY_KEY = f"SELECT r.id, r.key, r.state, r.result FROM {BY_KEYS}"

PENDING_AT_RISK = (
    "SELECT id, key, class, model, state, deadline_at, batch_id FROM requests"
    " WHERE queue = 'pending' AND deadline_at <= $1 ORDER BY deadline_at LIMIT $2"
)
SUBMITTED_AT_RISK = (
    "SELECT r.id, r.key, r.class, r.model, r.state, r.deadline_at, r.batch_id"
    " FROM batches b JOIN requests r ON r.batch_id = b.id AND r.deadline_at <= $1 AND r.finished_at IS NULL"
    " WHERE b.state <> 'done' AND r.state = 'submitted' ORDER BY r.deadline_at LIMIT $2"
)
ESCALATE = """
UPDATE requests r SET state = 'escalated', escalated_at = $1
FROM unnest($2::bigint[], $3::text[]) AS u(id, state)
WHERE r.id = u.id AND r.state = u.state RETURNING r.id
"""
STALE_ESCALATED = (
    "SELECT id, escalated_at FROM requests WHERE queue = 'escalated' AND escalated_at < $1 LIMIT $2"
)
TAKE_OVER = """
UPDATE requests r SET escalated_at = $1
FROM unnest($2::bigint[], $3::float8[]) AS u(id, at)
WHERE r.id = u.id AND r.state = 'escalated' AND r.escalated_at = u.at RETURNING r.id
"""
ESCALATED_PARAMS = (
    "SELECT r.id, r.class, r.tag, r.model, p.params, r.provider FROM requests r"
    " JOIN request_params p ON p.id = r.id"
    " WHERE r.id = ANY($1::bigint[])"
)
COMPLETE = """
UPDATE requests SET state = $2, outcome = $3, done_seq = nextval('done_seq_numbers'), finished_at = $4,
    result = $5
WHERE id = $1 AND state = ANY($6::text[]) RETURNING done_seq
"""
STILL_IN_BATCH = (
    "SELECT count(*)::int FROM requests WHERE batch_id = $1 AND finished_at IS NULL AND state = 'submitted'"
)
TURNAROUNDS_OF = "SELECT seconds FROM turnarounds WHERE model = $1 ORDER BY batch_id DESC LIMIT $2"
TURNAROUNDS_ALL = "SELECT seconds FROM turnarounds ORDER BY batch_id DESC LIMIT $1"
RECENT_TURNAROUNDS = "SELECT model, seconds FROM turnarounds ORDER BY batch_id DESC LIMIT $1"
ESCALATED_COUNT = "SELECT count(*)::int FROM requests WHERE escalated_at IS NOT NULL"

STATE_COUNTS = "SELECT state, count(*)::int FROM requests GROUP BY state"
BATCH_COUNT = "SELECT count(*)::int FROM batches WHERE api_id IS NOT NULL"
LEDGER_TOTALS = (
    "SELECT lane, model, duplicate, sum(calls)::bigint, sum(input_tokens)::bigint,"
    " sum(output_tokens)::bigint, sum(cache_write_5m)::bigint, sum(cache_write_1h)::bigint,"
    " sum(cache_read)::bigint FROM ledger WHERE result_type = 'succeeded'"
    " GROUP BY lane, model, duplicate ORDER BY lane, model"
)

LEASE = "SELECT name, owner, acquired_at, expires_at FROM leases WHERE name = $1"
# $1 name, $2 owner, $3 now, $4 expiry, $5 a dead local holder's owner id (or '').
ACQUIRE_LEASE = """
INSERT INTO leases (name, owner, acquired_at, expires_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner,
    acquired_at = CASE WHEN leases.owner = excluded.owner THEN leases.acquired_at
                  ELSE excluded.acquired_at END,
    expires_at = excluded.expires_at
WHERE leases.owner = excluded.owner OR leases.expires_at <= $3 OR leases.owner = $5
RETURNING owner
"""
RELEASE_LEASE = "DELETE FROM leases WHERE name = $1 AND owner = $2"

# Retention, as on SQLite: the newest request and completion are kept (a cursor never runs
# backwards, and ids are never handed out twice even by an engine that would), and so is every
# request of a batch still open: its results may be read again, and must find it final (on
# SQLite its outcome is not folded into the row before the batch is done).
PURGEABLE = (
    "state IN ('succeeded', 'failed') AND finished_at < $1"
    " AND NOT EXISTS (SELECT 1 FROM batches b WHERE b.id = requests.batch_id AND b.state <> 'done')"
    " AND id < (SELECT max(id) FROM requests)"
    " AND (done_seq IS NULL OR done_seq < (SELECT max(done_seq) FROM requests WHERE done_seq IS NOT NULL))"
)
# Requests and their params (no foreign key ties them: schema.py); returns how many requests.
PURGE_REQUESTS = f"""
WITH gone AS (DELETE FROM requests WHERE {PURGEABLE} RETURNING id),
params AS (DELETE FROM request_params WHERE id IN (SELECT id FROM gone))
SELECT count(*) FROM gone
"""
PURGE_BATCHES = (
    "DELETE FROM batches WHERE state = 'done' AND COALESCE(ended_at, submitted_at, created_at) < $1"
    " AND NOT EXISTS (SELECT 1 FROM requests r WHERE r.batch_id = batches.id"
    " AND r.finished_at IS NULL AND r.state IN ('submitting', 'submitted'))"
)
PURGE_LEDGER = "DELETE FROM ledger WHERE at < $1"

# The report's history (figures.py) and the purge's daily totals of it (`ledger_days`).
# The start of the UTC day of a time, in epoch seconds.
DAY_OF = "(floor(({0}) / 86400) * 86400)"
# A ledger row's deadline escalations: real-time calls of a stored request.
ESCALATED_CALLS = "CASE WHEN lane = 'realtime' AND request_id IS NOT NULL THEN calls ELSE 0 END"
# A final request that missed its deadline: answered after it, or failed for it.
MISSED_DEADLINE = (
    "deadline_at IS NOT NULL AND state IN ('succeeded', 'failed')"
    " AND (finished_at > deadline_at OR outcome = 'deadline')"
)
# The lane that answered a request, as its ledger row says.
ANSWERED_BY = "CASE WHEN escalated_at IS NOT NULL THEN 'realtime' ELSE 'batch' END"
_DAY_KEY = "day, lane, model, class, tag, result_type, duplicate"
_DAY_SUMS = (
    "calls",
    "input_tokens",
    "output_tokens",
    "cache_write_5m",
    "cache_write_1h",
    "cache_read",
    "escalated",
    "missed",
)
_ADD_TO_DAY = f" ON CONFLICT ({_DAY_KEY}) DO UPDATE SET " + ", ".join(
    f"{c} = ledger_days.{c} + excluded.{c}" for c in _DAY_SUMS
)
ROLL_UP_LEDGER = (
    f"INSERT INTO ledger_days ({_DAY_KEY}, provider, {', '.join(_DAY_SUMS)})"
    f" SELECT {DAY_OF.format('at')}, lane, model, COALESCE(class, ''), COALESCE(tag, ''), result_type,"
    " duplicate, max(provider), sum(calls), sum(input_tokens), sum(output_tokens), sum(cache_write_5m),"
    f" sum(cache_write_1h), sum(cache_read), sum({ESCALATED_CALLS}), 0"
    f" FROM ledger WHERE at < $1 GROUP BY 1, 2, 3, 4, 5, 6, 7{_ADD_TO_DAY}"
)
ROLL_UP_MISSED = (
    f"INSERT INTO ledger_days ({_DAY_KEY}, provider, missed)"
    f" SELECT {DAY_OF.format('finished_at')}, {ANSWERED_BY}, model, class, COALESCE(tag, ''),"
    f" COALESCE(outcome, ''), 0, max(provider), count(*) FROM requests"
    f" WHERE {PURGEABLE} AND {MISSED_DEADLINE}"
    f" GROUP BY 1, 2, 3, 4, 5, 6{_ADD_TO_DAY}"
)

NOTIFY = "SELECT pg_notify($1, $2)"
# Taken by every transaction that gives out completion numbers, just before it does; held to
# its commit, so numbers become visible in the order they were given (engine.py).
TAKE_COMPLETION_LOCK = "SELECT pg_advisory_xact_lock($1)"

# The current transaction's id, and later (from another connection) what became of it:
# 'committed', 'aborted' or 'in progress' (engine.py, `_run_once`).
CURRENT_XID = "SELECT txid_current()"
XACT_STATUS = "SELECT txid_status($1)"
