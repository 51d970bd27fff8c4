"""Splitting a streamed JSONL body into lines, kept as bytes (any provider's results)."""

from __future__ import annotations

from collections.abc import AsyncIterator


async def line_blocks(blocks: AsyncIterator[bytes]) -> AsyncIterator[list[bytes]]:
    """The non-blank lines of a JSONL body, a list per block read, kept as bytes.

    (httpx's `aiter_lines` decodes to str and splits in Python; the store wants bytes.) A
    line cut by a broken stream is never yielded: the read raises first.
    """
    rest = b""
    async for block in blocks:
        lines = (rest + block).split(b"\n") if rest else block.split(b"\n")
        rest = lines.pop()
        yield [line for line in lines if line.strip()]
    if rest.strip():
        yield [rest]
