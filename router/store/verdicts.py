"""What one batch result line does to the store: its verdict, set by either engine's ingest."""

from __future__ import annotations

UNKNOWN = "unknown"  # not a custom_id of ours, or no such request here
SKIPPED = "skipped"  # ingested before (a stream read again) or earlier in this chunk
DUPLICATE = "duplicate"  # the request was answered elsewhere: ledgered as a duplicate only
FINAL = "final"  # the request ends with this line (final_state says how)
DECIDE = "decide"  # not succeeded: the retry policy decides (Python)
RETRY = "retry"  # sent back to pending for a later batch
