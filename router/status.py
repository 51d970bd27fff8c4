"""`hybrid-router status`: the store's figures (router/observe.py) as a screen, live or once, or JSON.

On a terminal `--watch` redraws in place (rich's Live) every `--interval` until Ctrl-C; off a
terminal the screen is printed once, so a pipe or a log gets one copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from datetime import datetime

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from . import observe
from .client import Router
from .observe import STATES, Snapshot
from .units import format_duration


def _age(seconds: float) -> str:
    return format_duration(max(0, round(seconds)))


def _clock(at: float, now: float) -> str:
    moment, today = datetime.fromtimestamp(at), datetime.fromtimestamp(now)
    return moment.strftime("%H:%M:%S" if moment.date() == today.date() else "%Y-%m-%d %H:%M")


def _lease(snapshot: Snapshot) -> Text:
    lease = snapshot.lease
    if lease is None or not snapshot.lease_live:
        line = Text("no daemon holds the lease", style="bold yellow")
        if snapshot.flusher == "inline":
            line.append(' (flusher = "inline": each app flushes for itself)', style="dim")
        return line
    return Text.assemble(
        ("daemon ", ""),
        (lease.owner, "bold green"),
        (
            f" holds the lease (since {_clock(lease.acquired_at, snapshot.at)},"
            f" renewed until {_clock(lease.expires_at, snapshot.at)})",
            "",
        ),
    )


def _usd(value: float) -> str:
    return f"${value:,.6f}" if abs(value) < 0.01 else f"${value:,.4f}"


def _table(title: str, *columns: str) -> Table:
    table = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    return table


def _requests(snapshot: Snapshot) -> Table:
    table = _table("requests by class and state", "class", *STATES)
    for name, c in snapshot.classes.items():
        label = name if c.route is not None else f"{name} (not in config)"
        table.add_row(label, *(f"{c.states.get(state, 0):,}" for state in STATES))
    totals = snapshot.states
    table.add_row(Text("all", style="bold"), *(Text(f"{totals[state]:,}", style="bold") for state in STATES))
    return table


def _flushes(snapshot: Snapshot) -> Table:
    table = _table("flushes", "class", "oldest pending", "next flush", "triggers")
    table.columns[2].justify = table.columns[3].justify = "left"
    for name, c in snapshot.classes.items():
        oldest = _age(snapshot.at - c.oldest_pending_at) if c.oldest_pending_at is not None else "-"
        flush = "-"
        if c.next_flush_at is not None:
            flush = f"in {_age(c.next_flush_at - snapshot.at)} ({_clock(c.next_flush_at, snapshot.at)})"
        table.add_row(name, oldest, flush, c.trigger or "-")
    return table


def _batches(snapshot: Snapshot) -> RenderableType:
    if not snapshot.batches:
        return Text("no open batches", style="dim")
    table = _table("open batches", "batch", "state", "progress", "finished", "age")
    table.columns[1].justify = "left"
    for b in snapshot.batches:
        table.add_row(
            b.api_id or f"(local {b.id}, being created)",
            b.state,
            ProgressBar(total=max(b.requests, 1), completed=b.finished, width=10),
            f"{b.finished:,}/{b.requests:,}",
            _age(snapshot.at - b.created_at),
        )
    return table


def _spend(snapshot: Snapshot) -> RenderableType:
    today = snapshot.today
    since = datetime.fromtimestamp(snapshot.today_since).strftime("%H:%M")
    return Group(
        Text(f"spend today (since {since} local time)", style="bold"),
        Text(
            f"  spent {_usd(today.total_cost)} on {today.requests:,} request(s):"
            f" real time {_usd(today.realtime.cost)}, batch {_usd(today.batch.cost)}"
        ),
        Text.assemble(
            f"  all real time would be {_usd(today.all_realtime_cost)}; ",
            (f"saved {_usd(today.saving)} ({today.saving_pct:.1f}%)", "green" if today.saving > 0 else ""),
        ),
    )


def _webhooks(snapshot: Snapshot) -> RenderableType:
    table = _table(
        "webhooks", "endpoint", "state", "pending", "retrying", "delivered", "failed", "last error"
    )
    table.columns[1].justify = table.columns[6].justify = "left"
    for w in snapshot.webhooks:
        state = Text("failing", style="bold red") if w.failing else Text("ok", style="green")
        table.add_row(
            w.endpoint,
            state,
            f"{w.pending:,}",
            f"{w.retrying:,}",
            f"{w.delivered:,}",
            f"{w.failed:,}",
            (w.last_error or "-") if w.failing or w.failed else "-",
        )
    return table


def render(snapshot: Snapshot) -> RenderableType:
    """One screen of the snapshot."""
    head = Text.assemble(
        ("hybrid-router status ", "bold"),
        snapshot.store,
        (f"  {_clock(snapshot.at, snapshot.at)}", "dim"),
    )
    gap = Text()
    return Group(
        head,
        _lease(snapshot),
        gap,
        _requests(snapshot),
        gap,
        _flushes(snapshot),
        gap,
        _batches(snapshot),
        *((gap, _webhooks(snapshot)) if snapshot.webhooks else ()),
        gap,
        _spend(snapshot),
    )


async def run_status(
    router: Router,
    *,
    watch: bool = False,
    interval: float = 2.0,
    as_json: bool = False,
    console: Console | None = None,
) -> int:
    """Print the status once (or as JSON), or redraw it every `interval` on a terminal until
    Ctrl-C or SIGTERM (exit 0)."""
    snapshot = await observe.take(router.store, router.config)
    if as_json:
        print(json.dumps(snapshot.to_json(), indent=2))
        return 0
    console = console or Console()
    if not (watch and console.is_terminal):
        console.print(render(snapshot))
        return 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        with Live(render(snapshot), console=console, auto_refresh=False, transient=False) as live:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await stop.wait()
                if not stop.is_set():
                    snapshot = await observe.take(router.store, router.config)
                    live.update(render(snapshot), refresh=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0
