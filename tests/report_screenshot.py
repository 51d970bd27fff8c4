"""Make docs/report.png, the README's picture of `hybrid-router report --html`.

    .venv/bin/python -m tests.report_screenshot docs/report.png

The demo's workload is run once for each of the last seven days (`time.time` shifted back by
whole days, so the router, the emulator and the ledger all see that day), each run into its
own database; their ledger rows and turnarounds are then copied into one, so the daily chart
has a week to show. The page is rendered by `hybrid-router report --html` and photographed in
headless Chromium (Debian's `chromium`) through tests/browser.py.
"""

from __future__ import annotations

import asyncio
import io
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

from router.cli import main
from router.demo import run_demo
from tests.browser import Chromium, find_chromium

DAY = 86400.0
# Requests per day, oldest first: a week that varies.
WEEK = (600, 900, 1200, 700, 1500, 1000, 1300)
_LEDGER_COLUMNS = (
    "at, lane, model, class, tag, request_id, batch_id, result_type, input_tokens, output_tokens,"
    " cache_write_5m, cache_write_1h, cache_read, duplicate, calls"
)


def _days_back(days: int) -> Callable[[], float]:
    """A clock that runs like time.time, `days` days behind it."""
    real_time = time.time
    return lambda: real_time() - days * DAY


def demo_week(folder: Path) -> Path:
    """One database holding the ledgers and turnarounds of a demo run on each day of WEEK."""
    databases: list[Path] = []
    for back, total in zip(range(len(WEEK) - 1, -1, -1), WEEK, strict=True):
        db = folder / f"day-{back}.db"
        with mock.patch("time.time", _days_back(back)):
            asyncio.run(run_demo(total=total, db_path=db, out=io.StringIO()))
        databases.append(db)
    week = databases[-1]  # today's, with the others' rows added
    with sqlite3.connect(week) as conn:
        for offset, db in enumerate(databases[:-1], start=1):
            conn.execute("ATTACH DATABASE ? AS day", (str(db),))
            # Other ids: each run numbers its requests and batches from 1.
            shifted = _LEDGER_COLUMNS.replace("batch_id", "batch_id + ?")
            conn.execute(
                f"INSERT INTO ledger ({_LEDGER_COLUMNS}) SELECT {shifted} FROM day.ledger",
                (offset * 1_000_000,),
            )
            conn.execute(
                "INSERT INTO turnarounds (batch_id, model, seconds)"
                " SELECT batch_id + ?, model, seconds FROM day.turnarounds",
                (offset * 1_000_000,),
            )
            conn.commit()
            conn.execute("DETACH DATABASE day")
    return week


def screenshot(out: Path) -> None:
    executable = find_chromium()
    if executable is None:
        raise SystemExit("no Chromium on PATH (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="hybrid-router-screenshot-") as tmp:
        folder = Path(tmp)
        db = demo_week(folder)
        config = folder / "router.toml"
        config.write_text(f'[store]\npath = "{db}"\n', encoding="utf-8")
        page = folder / "report.html"
        if main(["--config", str(config), "report", "--html", str(page)]) != 0:
            raise SystemExit("report --html failed")
        with Chromium(executable) as browser:
            browser.open(page.resolve().as_uri())
            if browser.errors():
                raise SystemExit(f"the page logged errors: {browser.errors()}")
            browser.screenshot(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/report.png"))
