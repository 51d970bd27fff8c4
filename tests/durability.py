"""Subprocess plumbing for the daemon and crash tests: config files, daemon and app processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
APP = Path(__file__).with_name("durability_app.py")


def write_config(
    tmp_path: Path,
    url: str,
    *,
    lease_ttl: str = "10s",
    grace: str = "2s",
    name: str = "router",
    store: str | None = None,
    retry_for: str | None = None,
) -> Path:
    """A daemon-mode config on `url` with fast flushes and polls (the store next to it, or the
    SQLite file or PostgreSQL database `store` names, its operations retried for `retry_for`
    if given)."""
    from tests.stores import store_toml  # tests.stores imports this module

    where = store_toml(store) if store is not None else f'path = "{name}.db"'
    if retry_for is not None:
        where += f'\nretry_for = "{retry_for}"'
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f"""
[anthropic]
base_url = "{url}"
max_retries = 0
timeout = "10s"

[store]
{where}

[batch]
poll_interval = "100ms"
poll_max_interval = "200ms"
reconcile_grace = "{grace}"

[router]
flusher = "daemon"
watch_interval = "50ms"
lease_ttl = "{lease_ttl}"

[classes.daily]
route = "batch"
deadline = "1d"
every = "200ms"
""",
        encoding="utf-8",
    )
    return path


def env(crash_at: str | None = None) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("HYBRID_ROUTER_CRASH_AT", "ANTHROPIC_BASE_URL")}
    out["ANTHROPIC_API_KEY"] = "test-key"
    out["PYTHONPATH"] = str(REPO)
    if crash_at:
        out["HYBRID_ROUTER_CRASH_AT"] = crash_at
    return out


# Small ingest chunks so that "mid-results" has several commits to fall between. A gated
# daemon does its (slow) imports, then waits for a line on stdin before it starts: the crash
# test warms the next daemon up while the current one runs.
_DAEMON = (
    "import os, sys, router.poller as p; p.INGEST_CHUNK = 2; from router.cli import main;"
    " import router.daemon;"
    " os.environ.get('TEST_DAEMON_GATE') and sys.stdin.readline();"
    " sys.exit(main(sys.argv[1:]))"
)


# Every daemon start_daemon started, for kill_leftovers (conftest.py calls it after each test).
_daemons: list[asyncio.subprocess.Process] = []


def kill_leftovers() -> None:
    """SIGKILL the daemons a failed test left running: they would load the machine for the rest
    of the run. A pidfd pins the process, so a pid the system gave to another is never hit."""
    while _daemons:
        pid = _daemons.pop().pid
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:  # exited and reaped
            continue
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
                state, parent = stat.read().rsplit(")", 1)[1].split()[:2]
            if state != "Z" and int(parent) == os.getpid():  # still running, and still ours
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError):
            pass
        finally:
            os.close(pidfd)


async def start_daemon(
    config: Path, *extra: str, crash_at: str | None = None, gated: bool = False
) -> asyncio.subprocess.Process:
    environment = env(crash_at)
    if gated:
        environment["TEST_DAEMON_GATE"] = "1"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _DAEMON,
        "--config",
        str(config),
        "daemon",
        *extra,
        env=environment,
        cwd=str(config.parent),
        stdin=asyncio.subprocess.PIPE if gated else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _daemons.append(proc)
    return proc


async def go(proc: asyncio.subprocess.Process) -> None:
    """Let a gated daemon start."""
    assert proc.stdin is not None
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()


@dataclass
class Finished:
    code: int
    stdout: str
    stderr: str


# Safety nets, not expectations: a loaded machine (the suite runs on two workers) takes 20 s and
# more to start a daemon, which imports the SDK.
SAFETY_TIMEOUT = 90.0


async def finish(proc: asyncio.subprocess.Process, timeout: float = SAFETY_TIMEOUT) -> Finished:
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(
            f"process did not finish in {timeout}s; stderr:\n{err.decode()[-3000:]}"
        ) from None
    assert proc.returncode is not None
    return Finished(proc.returncode, out.decode(), err.decode())


async def stop(proc: asyncio.subprocess.Process, timeout: float = SAFETY_TIMEOUT) -> Finished:
    """SIGTERM and wait: a clean shutdown."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    return await finish(proc, timeout)


async def run_app(config: Path, mode: str, *args: str, crash_at: str | None = None) -> Finished:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(APP),
        mode,
        str(config),
        *args,
        env=env(crash_at),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return await finish(proc)


def prompt(key: str) -> str:
    return f"crash test request {key}"


def query(db: Path | str, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of `sql` (`?` placeholders) on the SQLite file `db`, or on the PostgreSQL database a
    URL names (committed at once)."""
    if isinstance(db, str) and "://" in db:
        import psycopg

        with psycopg.connect(db, autocommit=True) as pg:
            cur = pg.execute(sql.replace("?", "%s").encode(), args)  # type: ignore[arg-type]
            return list(cur.fetchall()) if cur.description else []
    conn = sqlite3.connect(db, timeout=10)
    try:
        with conn:
            return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def lease_owner(db: Path | str) -> str | None:
    try:
        rows = query(db, "SELECT owner FROM leases WHERE name = 'driver'")
    except sqlite3.OperationalError:  # not migrated yet
        return None
    except Exception as exc:  # PostgreSQL: not migrated yet (UndefinedTable)
        if type(exc).__name__ != "UndefinedTable":
            raise
        return None
    return str(rows[0][0]) if rows else None


async def until(condition: Any, *, timeout: float = SAFETY_TIMEOUT, what: str = "condition") -> None:
    """Wait for a condition on the store or on processes (never for a batch's duration)."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - state written by another process
            await asyncio.sleep(0.02)


def stderr_events(text: str) -> list[dict[str, Any]]:
    """The JSON log lines a subprocess wrote (its stderr is not a terminal)."""
    events = []
    for line in text.splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


@dataclass
class Child:
    """A subprocess whose output lines are collected as they come (the test watches them)."""

    name: str
    proc: asyncio.subprocess.Process
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            asyncio.create_task(_collect(self.proc.stdout, self.out)),
            asyncio.create_task(_collect(self.proc.stderr, self.err)),
        ]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out if line.startswith("{")]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in _json_lines(self.err) if e.get("event") == name]

    async def exited(self, timeout: float) -> int:
        try:
            async with asyncio.timeout(timeout):
                code = await self.proc.wait()
                await asyncio.gather(*self._readers)
        except TimeoutError:
            raise AssertionError(
                f"{self.name} did not exit in {timeout}s; stderr:\n" + "\n".join(self.err[-30:])
            ) from None
        return code

    def tcp_ports(self) -> set[int]:
        """Local ports of this process's TCP connections (for naming a server backend's client)."""
        with contextlib.suppress(psutil.NoSuchProcess):
            return {c.laddr.port for c in psutil.Process(self.pid).net_connections(kind="tcp") if c.laddr}
        return set()


async def _collect(stream: asyncio.StreamReader, into: list[str]) -> None:
    async for line in stream:
        into.append(line.decode().rstrip("\n"))


def _json_lines(lines: Sequence[str]) -> list[dict[str, Any]]:
    found = []
    for line in lines:
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
    return found


@contextlib.asynccontextmanager
async def reaped(children: list[Child]) -> AsyncIterator[None]:
    """Whatever happens, no child outlives the test."""
    try:
        yield
    finally:
        for child in children:
            if child.proc.returncode is None:
                child.proc.kill()
                await child.proc.wait()
