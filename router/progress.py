"""Progress bars for long CLI work (enqueue, results --out, flush), drawn on a terminal only.

The bar goes to stderr and disappears when the work ends (rich's transient Progress), so what
the command prints is the same with or without it; off a terminal nothing is drawn at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, cast

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from .store import states

if TYPE_CHECKING:
    from .batcher import FlushReport
    from .client import Router


class Bar:
    """One task's bar; `update` moves it (a no-op when nothing is drawn)."""

    def __init__(self, progress: Progress | None, task: TaskID | None) -> None:
        self._progress = progress
        self._task = task

    def update(self, completed: int, *, total: int | None = None, description: str | None = None) -> None:
        if self._progress is None or self._task is None:
            return
        fields: dict[str, Any] = {"completed": completed}
        if total is not None:
            fields["total"] = total
        if description is not None:
            fields["description"] = description
        self._progress.update(self._task, **fields)


@contextlib.contextmanager
def progress(description: str, total: int | None = None, *, file: IO[str] | None = None) -> Iterator[Bar]:
    """A bar for `total` items (None: not known yet) while the block runs, if `file`
    (default: stderr) is a terminal."""
    out = file if file is not None else sys.stderr
    if not shown(out):
        yield Bar(None, None)
        return
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(file=out), transient=True) as bars:
        yield Bar(bars, bars.add_task(description, total=total))


def shown(file: IO[str] | None = None) -> bool:
    """Whether a bar would be drawn on `file` (default: stderr)."""
    return (file if file is not None else sys.stderr).isatty()


def count_lines(path: str | os.PathLike[str]) -> int | None:
    """Lines in a file (a last one without a newline counts), read in blocks; None if unreadable."""
    lines, last = 0, b"\n"
    try:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                lines += block.count(b"\n")
                last = block[-1:]
    except OSError:
        return None
    return lines + (last != b"\n")


class _CountingWriter:
    """Writes through to `out`, moving `bar` by the lines written."""

    def __init__(self, out: IO[bytes], bar: Bar) -> None:
        self._out = out
        self._bar = bar
        self.lines = 0

    def write(self, data: bytes) -> int:
        written = self._out.write(data)
        self.lines += data.count(b"\n")
        self._bar.update(self.lines)
        return written


def counting(out: IO[bytes], bar: Bar) -> IO[bytes]:
    """`out`, moving `bar` by each line written to it (for writers that only call write())."""
    return cast(IO[bytes], _CountingWriter(out, bar))


async def flush_with_progress(router: Router, latency: str | None) -> FlushReport:
    """`router.flush(latency)` with a bar of the requests sent in batches so far (on a terminal).

    The flush itself is unchanged; the bar reads the batch rows it makes, from the store."""
    if not shown():
        return await router.flush(latency)
    names = [latency] if latency else [n for n, c in router.config.classes.items() if c.is_batch]
    pending, _, _ = await router.store.pending_stats(names)
    before = await router.store.last_batch_id()
    with progress("flushing", pending) as bar:
        task = asyncio.ensure_future(router.flush(latency))
        while not task.done():
            await asyncio.wait({task}, timeout=0.25)
            made = await router.store.batches_after(before)
            sent = sum(b.request_count for b in made if b.api_id is not None)
            sending = sum(b.request_count for b in made if b.state == states.B_CREATING)
            what = f"uploading a batch of {sending:,}" if sending else "flushing"
            bar.update(sent, total=max(pending, sent + sending), description=what)
        return task.result()
