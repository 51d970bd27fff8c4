"""`TokenCounts.from_usage`'s rules in SQL, so the ingest reads usage on SQLite's thread."""

from __future__ import annotations

from collections.abc import Mapping


def usage_counts_sql(doc: str, path_of: Mapping[str, str]) -> tuple[str, str, str, str, str]:
    """SQL expressions for from_usage's five counts: `doc` is a SQL expression giving JSON
    text, `path_of` the JSON path in it of each of `TokenCounts.USAGE_FIELDS`.

    The same rules as Python's, so ingest reads usage without holding the GIL;
    tests/test_pricing.py holds the two equal.
    """

    def count(field: str) -> str:
        # int() of a float truncates, as CAST does; booleans, strings and nulls count 0.
        path = path_of[field]
        return (
            f"(CASE json_type({doc}, '{path}') WHEN 'integer' THEN json_extract({doc}, '{path}')"
            f" WHEN 'real' THEN CAST(json_extract({doc}, '{path}') AS INTEGER) ELSE 0 END)"
        )

    created = count("cache_creation_input_tokens")
    split_5m = count("cache_creation.ephemeral_5m_input_tokens")
    split_1h = count("cache_creation.ephemeral_1h_input_tokens")
    return (
        count("input_tokens"),
        count("output_tokens"),
        f"({split_5m} + max(0, {created} - {split_5m} - {split_1h}))",
        split_1h,
        count("cache_read_input_tokens"),
    )
