"""Request and batch states (DESIGN.md section 4). Every transition is a guarded UPDATE."""

from __future__ import annotations

from typing import Final

PENDING: Final = "pending"  # stored, waiting for a flush
SUBMITTING: Final = "submitting"  # claimed into a batch whose batches.create has not answered yet
SUBMITTED: Final = "submitted"  # in a batch the API accepted
ESCALATED: Final = "escalated"  # taken off the batch path and sent real time
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"

FINAL_STATES: Final = frozenset({SUCCEEDED, FAILED})

# Batch rows
B_CREATING: Final = "creating"  # intent recorded; batches.create in progress or its answer unknown
B_RELEASED: Final = "released"  # create outcome unknown, requests resubmitted, still looking (reconcile.py)
B_IN_PROGRESS: Final = "in_progress"
B_CANCELING: Final = "canceling"
B_ENDED: Final = "ended"  # ended on the API side; results not fully ingested yet
B_DONE: Final = "done"  # results ingested (or the batch given up), nothing left to do
