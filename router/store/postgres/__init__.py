"""The PostgreSQL engine of the store (asyncpg): one database shared by many hosts."""

from __future__ import annotations

from .engine import PostgresStore

__all__ = ["PostgresStore"]
