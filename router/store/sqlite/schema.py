"""Database schema, as numbered migrations applied in order under `PRAGMA user_version`."""

from __future__ import annotations

# Each entry moves the schema from version i to i + 1. Never edit a released entry: append one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE requests (
        id          INTEGER PRIMARY KEY,
        key         TEXT    NOT NULL UNIQUE,   -- caller's idempotency key, or a generated one
        class       TEXT    NOT NULL,          -- latency class name
        tag         TEXT,
        model       TEXT    NOT NULL,
        params      BLOB    NOT NULL,          -- request params exactly as sent (JSON bytes)
        digest      BLOB    NOT NULL,          -- hash of params, to refuse a reused key with other params
        size        INTEGER NOT NULL,          -- len(params): flushes budget bytes without reading params
        state       TEXT    NOT NULL,          -- see router/store/states.py
        attempts    INTEGER NOT NULL DEFAULT 0,
        created_at  REAL    NOT NULL,
        deadline_at REAL,
        batch_id    INTEGER,                   -- batches.id currently (or last) holding the request
        outcome     TEXT,                      -- succeeded | errored | canceled | expired (final rows)
        result      BLOB,                      -- final result line, in the Batch API's result shape
        done_seq    INTEGER,                   -- completion order, so watchers read only what is new
        finished_at REAL
    );
    -- Covering index: a flush picks ids and sizes without touching the (large) rows.
    CREATE INDEX requests_pending ON requests (class, id, size) WHERE state = 'pending';
    CREATE INDEX requests_by_batch ON requests (batch_id, id) WHERE batch_id IS NOT NULL;
    CREATE UNIQUE INDEX requests_by_done_seq ON requests (done_seq) WHERE done_seq IS NOT NULL;

    CREATE TABLE batches (
        id            INTEGER PRIMARY KEY,
        api_id        TEXT UNIQUE,             -- msgbatch_..., NULL until batches.create answered
        state         TEXT    NOT NULL,        -- creating | in_progress | canceling | ended | done
        request_count INTEGER NOT NULL,
        body_bytes    INTEGER NOT NULL,
        created_at    REAL    NOT NULL,        -- when the intent was recorded, before the API call
        submitted_at  REAL,
        ended_at      REAL,
        next_poll_at  REAL
    );
    CREATE INDEX batches_open ON batches (state) WHERE state <> 'done';

    -- One row per billed call: real-time replies and batch result lines. (batch_id, request_id)
    -- is unique so re-reading a results stream after a crash records nothing twice.
    CREATE TABLE ledger (
        id             INTEGER PRIMARY KEY,
        at             REAL    NOT NULL,
        lane           TEXT    NOT NULL,       -- realtime | batch
        model          TEXT    NOT NULL,
        class          TEXT,
        tag            TEXT,
        request_id     INTEGER,
        batch_id       INTEGER,
        result_type    TEXT    NOT NULL,       -- succeeded | errored | canceled | expired
        input_tokens   INTEGER NOT NULL DEFAULT 0,
        output_tokens  INTEGER NOT NULL DEFAULT 0,
        cache_write_5m INTEGER NOT NULL DEFAULT 0,
        cache_write_1h INTEGER NOT NULL DEFAULT 0,
        cache_read     INTEGER NOT NULL DEFAULT 0,
        duplicate      INTEGER NOT NULL DEFAULT 0  -- a result for a request already answered elsewhere
    );
    CREATE UNIQUE INDEX ledger_batch_result ON ledger (batch_id, request_id) WHERE batch_id IS NOT NULL;
    """,
    # 2: deadline escalation. escalated_at marks when a request was taken off the batch path,
    # so a real-time send lost in a crash is retried, and one in progress elsewhere is not.
    """
    ALTER TABLE requests ADD COLUMN escalated_at REAL;
    CREATE INDEX requests_by_deadline ON requests (deadline_at)
        WHERE state IN ('pending', 'submitted', 'escalated');
    -- Observed batch turnaround (submitted -> ended) per model, for deadline estimates.
    CREATE TABLE turnarounds (
        batch_id INTEGER NOT NULL,
        model    TEXT    NOT NULL,
        seconds  REAL    NOT NULL,
        PRIMARY KEY (model, batch_id)
    );
    """,
    # 3: a lease per database, so that only one daemon drives flushing and polling at a time.
    """
    CREATE TABLE leases (
        name        TEXT PRIMARY KEY,          -- what is leased ("driver": flush, poll, reconcile, purge)
        owner       TEXT NOT NULL,             -- host:pid:nonce of the holder
        acquired_at REAL NOT NULL,
        expires_at  REAL NOT NULL              -- wall-clock time; renewed well before it passes
    );
    """,
    # 4: request params in their own table. SQLite rewrites a whole row on any UPDATE, so with
    # ~2 KB of params inline every state change (claim, submit, result) rewrote the params too:
    # a 100,000-request flush wrote ~800 MB of WAL. requests.params is left empty (x'').
    """
    CREATE TABLE request_params (
        id     INTEGER PRIMARY KEY REFERENCES requests (id) ON DELETE CASCADE,
        params BLOB    NOT NULL                -- request params exactly as sent (JSON bytes)
    );
    INSERT INTO request_params (id, params) SELECT id, params FROM requests;
    UPDATE requests SET params = x'';
    """,
    # 5: result lines in their own append-only table. Batch results arrive shuffled, and writing
    # each ~700-byte line into its request's row grew rows all over the table: 100,000 lines
    # rewrote most of its pages, in every transaction. Keyed by done_seq, each chunk's lines
    # are appended in order. requests.result stays for rows finished before this migration.
    """
    CREATE TABLE results (
        done_seq INTEGER PRIMARY KEY,          -- requests.done_seq of the request it completes
        line     BLOB    NOT NULL              -- final result line, in the Batch API's result shape
    );
    INSERT INTO results (done_seq, line)
        SELECT done_seq, result FROM requests WHERE result IS NOT NULL AND done_seq IS NOT NULL;
    UPDATE requests SET result = NULL WHERE done_seq IS NOT NULL AND result IS NOT NULL;
    """,
    # 6: deadline indexes a finished request leaves alone. requests_by_deadline held submitted
    # requests too, so the ingest deleted an entry from it for every result (~6 % of the
    # ingest's time). Pending requests keep an index by deadline; submitted ones are found
    # through their open batch, by (batch_id, deadline_at), whose columns a result does not
    # change; escalated ones by when they were escalated (a lost real-time send is retried).
    """
    DROP INDEX requests_by_deadline;
    CREATE INDEX requests_pending_by_deadline ON requests (deadline_at)
        WHERE state = 'pending' AND deadline_at IS NOT NULL;
    CREATE INDEX requests_by_batch_deadline ON requests (batch_id, deadline_at)
        WHERE batch_id IS NOT NULL AND deadline_at IS NOT NULL;
    CREATE INDEX requests_escalated ON requests (escalated_at) WHERE state = 'escalated';
    """,
    # 7: real-time replies are ledgered in sums. A row per reply cost the real-time lane ~2 %
    # of its throughput at ~1,000 replies a second (the commit's SQLite work shares the
    # lane's cores); each commit now writes one row per lane, model, class, tag, result type
    # and duplicate flag, and `calls` says how many replies it sums. Rows of batch results
    # and escalations stay one per request (calls = 1).
    """
    ALTER TABLE ledger ADD COLUMN calls INTEGER NOT NULL DEFAULT 1;
    """,
    # 8: a batch result's outcome is appended, not written into its request's row. Results come
    # shuffled, so writing each into its row dirtied nearly every page of `requests` in every
    # chunk: a quarter of the ingest's time. A chunk now appends a row per final outcome to
    # `completions`; the batch's last transaction (Store.finish_batch) folds them into
    # `requests` in one ordered pass and empties the table. A request with a completion is
    # final whatever requests.state says: readers read `requests_now`, writers that move a
    # submitted request check there is none.
    """
    CREATE TABLE completions (
        done_seq    INTEGER PRIMARY KEY,       -- the request's completion number (results.done_seq)
        request_id  INTEGER NOT NULL,
        state       TEXT    NOT NULL,          -- succeeded | failed
        outcome     TEXT,                      -- the result's type
        attempts    INTEGER NOT NULL,          -- the request's attempts, this one counted
        finished_at REAL    NOT NULL
    );
    CREATE UNIQUE INDEX completions_by_request ON completions (request_id);
    CREATE VIEW requests_now AS
    SELECT r.id, r.key, r.class, r.tag, r.model, r.size,
        COALESCE(c.state, r.state) AS state,
        COALESCE(c.attempts, r.attempts) AS attempts,
        COALESCE(c.outcome, r.outcome) AS outcome,
        COALESCE(c.done_seq, r.done_seq) AS done_seq,
        COALESCE(c.finished_at, r.finished_at) AS finished_at,
        r.result, r.created_at, r.deadline_at, r.batch_id, r.escalated_at
    FROM requests r LEFT JOIN completions c ON c.request_id = r.id;
    -- The rule kept by SQLite too: only the fold (which gives the row its done_seq) may move
    -- a submitted request that has a completion.
    CREATE TRIGGER requests_completed_are_final BEFORE UPDATE OF state ON requests
    WHEN OLD.state = 'submitted' AND NEW.done_seq IS NULL
        AND EXISTS (SELECT 1 FROM completions WHERE completions.request_id = OLD.id)
    BEGIN
        SELECT RAISE(ABORT, 'this request has a completion, so it is final (schema 8)');
    END;
    """,
    # Daily totals of purged ledger rows, so the cost report's history outlives retention
    # (purge.py rolls rows in; history.py reads them with the rows still kept). Class and tag
    # are '' for none: the primary key needs values that compare equal. `escalated` counts the
    # real-time calls that were deadline escalations, `missed` the purged requests that
    # finished after their deadline (or failed for it).
    """
    CREATE TABLE ledger_days (
        day            REAL    NOT NULL,       -- start of the UTC day, epoch seconds
        lane           TEXT    NOT NULL,
        model          TEXT    NOT NULL,
        class          TEXT    NOT NULL DEFAULT '',
        tag            TEXT    NOT NULL DEFAULT '',
        result_type    TEXT    NOT NULL,
        duplicate      INTEGER NOT NULL DEFAULT 0,
        calls          INTEGER NOT NULL DEFAULT 0,
        input_tokens   INTEGER NOT NULL DEFAULT 0,
        output_tokens  INTEGER NOT NULL DEFAULT 0,
        cache_write_5m INTEGER NOT NULL DEFAULT 0,
        cache_write_1h INTEGER NOT NULL DEFAULT 0,
        cache_read     INTEGER NOT NULL DEFAULT 0,
        escalated      INTEGER NOT NULL DEFAULT 0,
        missed         INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (day, lane, model, class, tag, result_type, duplicate)
    );
    """,
    # Prompt caching: each deferred request's cacheable prefix (router/prefix.py), so a flush
    # keeps a group together, primes a cold one, and the report sums cache tokens by group.
    """
    ALTER TABLE requests ADD COLUMN prefix_key TEXT;                  -- NULL: no marked prefix
    ALTER TABLE requests ADD COLUMN prefix_tokens INTEGER;            -- estimate, uncalibrated
    ALTER TABLE requests ADD COLUMN ttl_1h_delta INTEGER NOT NULL DEFAULT 0;  -- bytes of the 1 h rewrite
    -- Whether a group is warm (a request of it succeeded within the TTL) or has one in flight.
    CREATE INDEX requests_prefix_finished ON requests (prefix_key, finished_at)
        WHERE prefix_key IS NOT NULL AND finished_at IS NOT NULL;
    CREATE INDEX requests_prefix_in_flight ON requests (prefix_key)
        WHERE prefix_key IS NOT NULL AND state IN ('submitting', 'submitted');
    -- A flush's prefix groups, read without touching the pending requests that mark none.
    CREATE INDEX requests_pending_prefix ON requests (class, prefix_key)
        WHERE state = 'pending' AND prefix_key IS NOT NULL;
    """,
    # The webhook outbox. An event is written in the transaction of the change it announces;
    # the deliveries of each event to each endpoint are routed from it, and tried until
    # delivered or given up. tag_drains remembers, per tag, the highest request id its last
    # tag.drained event covered, so the next one covers only requests stored after it.
    """
    CREATE TABLE outbox (
        id         INTEGER PRIMARY KEY,
        type       TEXT    NOT NULL,           -- batch.ended, tag.drained, request.completed, ...
        created_at REAL    NOT NULL,
        tag        TEXT,                       -- the tag the event is about, for endpoints' tag globs
        payload    TEXT    NOT NULL,           -- the event's data, as JSON text
        routed     INTEGER NOT NULL DEFAULT 0  -- 1 once its deliveries exist
    );
    CREATE INDEX outbox_unrouted ON outbox (id) WHERE routed = 0;
    CREATE TABLE deliveries (
        id             INTEGER PRIMARY KEY,
        event_id       INTEGER NOT NULL,
        endpoint       TEXT    NOT NULL,       -- the endpoint's url
        state          TEXT    NOT NULL,       -- pending | delivered | failed
        attempts       INTEGER NOT NULL DEFAULT 0,
        next_at        REAL,                   -- when a pending delivery is tried next
        last_status    INTEGER,                -- the HTTP status of the last attempt
        last_error     TEXT,
        first_tried_at REAL,
        updated_at     REAL,
        UNIQUE (event_id, endpoint)
    );
    CREATE INDEX deliveries_due ON deliveries (next_at) WHERE state = 'pending';
    CREATE TABLE tag_drains (
        tag        TEXT PRIMARY KEY,
        last_id    INTEGER NOT NULL,           -- the highest request id the last tag.drained covered
        drained_at REAL    NOT NULL
    );
    -- A tag's requests by id: tag and id never change, so no state change touches this index.
    CREATE INDEX requests_by_tag ON requests (tag, id) WHERE tag IS NOT NULL;
    """,
    # Providers (router/providers/): each request, batch and ledger row names the provider it
    # goes to. A claim takes one provider's requests (and, for a provider that wants it, one
    # model's), read from the pending index without touching the rows.
    """
    ALTER TABLE requests ADD COLUMN provider TEXT NOT NULL DEFAULT 'anthropic';
    ALTER TABLE batches ADD COLUMN provider TEXT NOT NULL DEFAULT 'anthropic';
    ALTER TABLE ledger ADD COLUMN provider TEXT NOT NULL DEFAULT 'anthropic';
    -- Not in the key: a model belongs to one provider, so a day's key already names it.
    ALTER TABLE ledger_days ADD COLUMN provider TEXT NOT NULL DEFAULT 'anthropic';
    DROP INDEX requests_pending;
    CREATE INDEX requests_pending ON requests (class, id, size, provider, model) WHERE state = 'pending';
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)
