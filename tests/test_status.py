"""`hybrid-router status`: its figures as JSON, its screen printed once off a terminal, and
`--watch` redrawing in place on a real pseudo-terminal until Ctrl-C."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import signal
import struct
import sys
import termios
import time
from pathlib import Path
from typing import Any

import anthropic
import pyte
import pytest

from router import Router, RouterConfig
from router.report import cost_summary
from tests.durability import env, finish
from tests.helpers import MODEL

CONFIG = """
[store]
path = "router.db"

[classes.daily]
route = "batch"
deadline = "1d"
every = "15m"

[classes.weekly]
route = "batch"
deadline = "7d"
cron = "30 2 * * *"
timezone = "Europe/Paris"
"""

HOLDER = "elsewhere:1:status"  # a daemon on another host: only its expiry tells it is gone


def ask(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 32, "messages": [{"role": "user", "content": text}], **extra}


@pytest.fixture
async def known(tmp_path: Path, emulator: Any, sdk: anthropic.AsyncAnthropic) -> dict[str, Any]:
    """A store with known rows: 3 daily requests answered by an ended batch, 2 daily in an open
    batch, 2 weekly pending, 1 real-time call, and a live lease of a daemon on another host."""
    path = tmp_path / "router.toml"
    path.write_text(f'[anthropic]\nbase_url = "{emulator.url}"\n{CONFIG}', encoding="utf-8")
    config = RouterConfig.from_toml_text(path.read_text(), path)
    async with Router(config, anthropic=sdk, scheduler=False) as router:
        for i in range(3):
            await router.messages.submit(**ask(f"done {i}"), latency="daily")
        await router.flush("daily")
        emulator.end_batches()
        await router.poll()
        for i in range(2):
            await router.messages.submit(**ask(f"open {i}"), latency="daily")
        await router.flush("daily")
        weekly = [await router.messages.submit(**ask(f"week {i}"), latency="weekly") for i in range(2)]
        await router.messages.create(**ask("now"), latency="realtime")
        acquired = time.time()
        assert await router.store.acquire_lease(HOLDER, ttl=3600, now=acquired)
        summary = await cost_summary(router.store, config)  # commits the real-time ledger too
        first_weekly = await router.store.get_by_key(weekly[0].key)
    assert first_weekly is not None
    return {
        "config": path,
        "summary": summary,
        "acquired": acquired,
        "oldest_weekly": first_weekly.created_at,
    }


async def run_cli(config: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router.cli",
        "--config",
        str(config),
        *args,
        env=env(),
        cwd=str(config.parent),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    done = await finish(proc, timeout=60)
    return done.code, done.stdout, done.stderr


async def test_status_json_gives_the_figures_of_a_store_with_known_rows(known: dict[str, Any]) -> None:
    code, out, err = await run_cli(known["config"], "status", "--json")
    assert code == 0, err
    figures = json.loads(out)  # one JSON object, nothing else on stdout
    assert figures["requests"] == {
        "pending": 2,
        "submitting": 0,
        "submitted": 2,
        "escalated": 0,
        "succeeded": 3,
        "failed": 0,
    }
    daily, weekly = figures["classes"]["daily"], figures["classes"]["weekly"]
    assert daily["requests"]["succeeded"] == 3 and daily["requests"]["submitted"] == 2
    assert daily["oldest_pending_at"] is None
    assert weekly["requests"]["pending"] == 2
    assert weekly["oldest_pending_at"] == known["oldest_weekly"]
    assert weekly["oldest_pending_seconds"] >= 0
    # The daemon's interval job started when it took the lease: it fires 15 min after that.
    assert daily["next_flush_at"] == pytest.approx(known["acquired"] + 900)
    assert daily["trigger"] == "every 15m"
    # 02:30 in Paris, the next one after now.
    fire = weekly["next_flush_at"]
    assert 0 < fire - figures["at"] <= 86400
    assert time.strftime("%H:%M", time.gmtime(fire)) in ("01:30", "00:30")  # CET or CEST
    [batch] = figures["batches"]
    assert (batch["state"], batch["requests"], batch["finished"]) == ("in_progress", 2, 0)
    assert batch["api_id"].startswith("msgbatch_")
    assert figures["lease"] == {
        "held": True,
        "owner": HOLDER,
        "acquired_at": known["acquired"],
        "expires_at": known["acquired"] + 3600,
    }
    summary = known["summary"]
    today = figures["spend_today"]
    assert today["requests"] == 4  # 3 batch results and the real-time call
    assert today["cost_usd"] == round(summary.total_cost, 6)
    assert today["all_realtime_usd"] == round(summary.all_realtime_cost, 6)
    assert today["saved_usd"] == round(summary.saving, 6) > 0
    assert today["by_lane"]["batch"] == round(summary.batch.cost, 6) > 0
    assert figures["spend_total"]["cost_usd"] == today["cost_usd"]


async def test_status_off_a_terminal_prints_once_and_exits(known: dict[str, Any]) -> None:
    code, out, err = await run_cli(known["config"], "status", "--watch", "--interval", "100ms")
    assert code == 0, err
    assert out.count("requests by class and state") == 1
    assert "\x1b[" not in out  # no escape codes into a pipe
    assert f"daemon {HOLDER} holds the lease" in out
    assert "open batches" in out and "0/2" in out


async def test_status_says_when_no_daemon_holds_the_lease(tmp_path: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text(CONFIG, encoding="utf-8")
    async with Router(RouterConfig.from_toml_text(CONFIG, config), scheduler=False) as router:
        assert await router.store.acquire_lease(HOLDER, ttl=1, now=time.time() - 10)  # lapsed
    code, out, err = await run_cli(config, "status")
    assert code == 0, err
    assert "no daemon holds the lease" in out
    code, out, err = await run_cli(config, "status", "--json")
    assert json.loads(out)["lease"] == {"held": False, "message": "no daemon holds the lease"}


async def test_a_bad_interval_is_one_line(tmp_path: Path) -> None:
    code, _, err = await run_cli(tmp_path / "router.toml", "status", "--watch", "--interval", "0s")
    assert (code, err) == (2, "hybrid-router: --interval: expected a duration longer than 0s, got '0s'\n")


class Terminal:
    """A pseudo-terminal whose output is drawn on a pyte screen as it arrives."""

    def __init__(self, columns: int = 120, lines: int = 40) -> None:
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        self.screen = pyte.Screen(columns, lines)
        self._stream = pyte.ByteStream(self.screen)
        self.raw = b""
        self._changed = asyncio.Event()
        asyncio.get_running_loop().add_reader(self.master, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except OSError:  # the other side closed
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
        self.raw += data
        self._stream.feed(data)
        self._changed.set()

    @property
    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    async def until(self, condition: Any, timeout: float = 60.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition(self.text):
                self._changed.clear()
                await self._changed.wait()

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)


def _take_terminal() -> None:
    """In the child: make the pty (its stdin) the controlling terminal, so ^C is a real SIGINT."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


async def test_status_watch_redraws_in_place_on_a_terminal_and_ctrl_c_exits_0(
    known: dict[str, Any], sdk: anthropic.AsyncAnthropic
) -> None:
    config: Path = known["config"]
    term = Terminal()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router.cli",
        "--config",
        str(config),
        "status",
        "--watch",
        "--interval",
        "200ms",
        env=env() | {"TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"},
        cwd=str(config.parent),
        stdin=term.slave,
        stdout=term.slave,
        stderr=term.slave,
        start_new_session=True,
        preexec_fn=_take_terminal,
    )
    os.close(term.slave)
    try:
        await term.until(lambda t: "requests by class and state" in t and "weekly" in t)
        first = term.text
        weekly_row = next(line for line in first.splitlines() if line.startswith("weekly"))
        assert weekly_row.split()[1] == "2"  # pending
        # Another process stores a request: the next redraw shows it, in the same place.
        async with Router.from_config(config, anthropic=sdk, scheduler=False) as app:
            await app.messages.submit(**ask("one more"), latency="weekly")
        await term.until(
            lambda t: any(line.startswith("weekly") and line.split()[1] == "3" for line in t.splitlines())
        )
        screen = term.text
        assert screen.count("requests by class and state") == 1  # redrawn in place, not scrolled
        assert term.raw.count(b"requests by class and state") >= 2  # drawn more than once
        assert f"daemon {HOLDER} holds the lease" in screen
        os.write(term.master, b"\x03")  # Ctrl-C
        code = await asyncio.wait_for(proc.wait(), 60)
        assert code == 0
        assert "Traceback" not in term.text
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        term.close()
    print("\n" + screen)
