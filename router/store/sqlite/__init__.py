"""The SQLite engine: one file, one writer connection per process (WAL, group commit).

Every SQL statement of this engine lives in this package, with its schema and numbered
migrations (schema.py); the records, states and the engine interface are shared
(router/store/records.py, states.py, base.py).
"""

from __future__ import annotations

from .store import Store

__all__ = ["Store"]
