"""The PostgreSQL engine's statements for prompt caching: claims by prefix group, group
warmth, calibration and cache figures."""

from __future__ import annotations

# claim_batch with a ClaimSelector. $1 batch, $2 classes (NULL: all), $3 max requests,
# $4 max bytes of entries, $5 prefix keys in order ('' for none), $6 at most this many of
# each group (NULL: all), $7 count the 1-hour rewrite's bytes, $8 the bytes an entry adds besides
# its params and id digits (store/bodies.py: entry_cost), $9 the provider, $10 the model
# (NULL: any). Window functions cannot lock
# rows, so the picked rows are locked last (SKIP LOCKED: a row another flusher holds is left
# out, never taken twice), and the UPDATE checks each is still pending.
_ENTRY = "size + $8::int + length(id::text) + CASE WHEN $7::boolean THEN ttl_1h_delta ELSE 0 END"
CLAIM_SELECTED = f"""
WITH g AS (
    SELECT prefix, pos FROM unnest($5::text[]) WITH ORDINALITY AS g(prefix, pos)
), candidates AS (
    SELECT r.id, r.size, r.ttl_1h_delta, g.pos,
        row_number() OVER (PARTITION BY g.pos ORDER BY r.id) AS nth
    FROM requests r JOIN g ON COALESCE(r.prefix_key, '') = g.prefix
    WHERE r.queue = 'pending' AND ($2::text[] IS NULL OR r.class = ANY($2::text[]))
        AND r.provider = $9 AND ($10::text IS NULL OR r.model = $10)
), picked AS (
    SELECT id, sum({_ENTRY}) OVER (ORDER BY pos, id ROWS UNBOUNDED PRECEDING) AS total
    FROM (SELECT * FROM candidates WHERE $6::int IS NULL OR nth <= $6::int ORDER BY pos, id LIMIT $3) AS c
), locked AS (
    SELECT id FROM requests WHERE id IN (SELECT id FROM picked WHERE total <= $4) FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE requests SET state = 'submitting', batch_id = $1
    WHERE id IN (SELECT id FROM locked) AND state = 'pending'
    RETURNING {_ENTRY} AS bytes
)
SELECT count(*)::int, COALESCE(sum(bytes), 0)::bigint FROM claimed
"""

PENDING_GROUPS = """
SELECT class, model, prefix_key, count(*)::bigint, sum(size)::bigint, min(created_at), min(deadline_at),
    max(prefix_tokens)
FROM requests
WHERE queue = 'pending' AND prefix_key IS NOT NULL AND ($1::text[] IS NULL OR class = ANY($1::text[]))
GROUP BY class, model, prefix_key ORDER BY min(id)
"""

# Two index probes a key (requests_prefix_finished, requests_prefix_in_flight).
PREFIX_STATUS = """
SELECT k.prefix_key,
    (SELECT finished_at FROM requests
     WHERE prefix_key = k.prefix_key AND finished_at IS NOT NULL AND state = 'succeeded'
     ORDER BY finished_at DESC LIMIT 1),
    EXISTS (SELECT 1 FROM requests WHERE prefix_key = k.prefix_key AND queue IS NULL AND finished_at IS NULL
        AND state IN ('submitting', 'submitted'))
FROM unnest($1::text[]) AS k(prefix_key)
"""

_CACHED = "(l.cache_read + l.cache_write_5m + l.cache_write_1h)"
CALIBRATION = f"""
SELECT model, sum(cached)::bigint, sum(estimate)::bigint FROM (
    SELECT l.model, {_CACHED} AS cached, r.prefix_tokens AS estimate
    FROM (SELECT * FROM ledger ORDER BY id DESC LIMIT $2) AS l JOIN requests r ON r.id = l.request_id
    WHERE l.lane = 'batch' AND r.prefix_tokens > 0 AND {_CACHED} > 0
    ORDER BY l.id DESC LIMIT $1
) AS recent GROUP BY model
"""

CACHE_FIGURES = f"""
SELECT l.model, l.tag, r.prefix_key, max(r.prefix_tokens), {_CACHED} AS cached,
    sum(l.calls)::bigint, count(*) FILTER (WHERE l.cache_read > 0), sum(l.input_tokens)::bigint,
    sum(l.output_tokens)::bigint, sum(l.cache_write_5m)::bigint, sum(l.cache_write_1h)::bigint,
    sum(l.cache_read)::bigint
FROM ledger l JOIN requests r ON r.id = l.request_id
WHERE l.lane = 'batch' AND l.duplicate = 0 AND l.result_type = 'succeeded' AND r.prefix_key IS NOT NULL
GROUP BY l.model, l.tag, r.prefix_key, cached ORDER BY r.prefix_key, l.tag, cached
"""

PREFIX_SIZES = """
SELECT class, tag, model, prefix_tokens FROM requests WHERE prefix_key IS NOT NULL ORDER BY id DESC LIMIT $1
"""
