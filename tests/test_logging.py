"""A quiet library: it logs through the standard library under `router.*`, prints nothing
unless the application configures logging, and the CLI's setup prints JSON lines or
readable lines."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_SUBMITTED

from router.emulator import Emulator
from router.logs import RouterLogger, get_logger
from router.scheduler import RouterScheduler
from router.store import states as request_states

from .durability import Finished, env, query

APP = Path(__file__).with_name("logging_app.py")
BATCHES = "/v1/messages/batches"


async def run_app(emulator: Emulator, db: Path, mode: str, *args: str, stderr: int | None = None) -> Finished:
    """Run tests/logging_app.py; its stderr is a pipe unless a file descriptor is given."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(APP),
        mode,
        emulator.url,
        str(db),
        *args,
        env=env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE if stderr is None else stderr,
    )
    try:
        async with asyncio.timeout(60):  # a safety net: each mode takes a second or two
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Finished(proc.returncode, out.decode(), (err or b"").decode())


def state_counts(db: Path) -> dict[str, int]:
    return {str(s): int(n) for s, n in query(db, "SELECT state, COUNT(*) FROM requests GROUP BY state")}


def creates(emulator: Emulator) -> list[int]:
    return [e.status for e in emulator.journal if e.method == "POST" and e.path == BATCHES]


async def test_a_program_that_configures_nothing_prints_nothing(tmp_path: Path, emulator: Emulator) -> None:
    db = tmp_path / "router.db"
    emulator.faults.fail_next("batches.create", status=500)  # a warning the program does not see

    done = await run_app(emulator, db, "submit", "1000")

    assert (done.code, done.stdout, done.stderr) == (0, "", "")
    assert creates(emulator) == [500, 200]
    assert state_counts(db) == {request_states.SUBMITTED: 1000}


@pytest.mark.parametrize("mode", ["close-in-flush", "close-in-poll"])
async def test_closing_a_router_during_a_scheduled_job_prints_nothing(
    tmp_path: Path, emulator: Emulator, mode: str
) -> None:
    db = tmp_path / "router.db"

    done = await run_app(emulator, db, mode)

    assert (done.code, done.stdout, done.stderr) == (0, "", "")
    # close() waited for the job it interrupted: the flush recorded its batch.
    assert creates(emulator) == [200]
    assert state_counts(db) == {request_states.SUBMITTED: 1}
    if mode == "close-in-poll":
        polls = [
            e for e in emulator.journal if e.method == "GET" and e.path.startswith("/v1/messages/batches")
        ]
        assert polls and all(e.status == 200 for e in polls)


async def test_the_applications_basic_config_receives_the_router_events(
    tmp_path: Path, emulator: Emulator
) -> None:
    emulator.faults.fail_next("batches.create", status=500)

    done = await run_app(emulator, tmp_path / "router.db", "basic", "2")

    assert done.code == 0, done.stderr
    assert done.stdout == ""
    lines = [line for line in done.stderr.splitlines() if line.startswith("router.")]
    # name, the function that logged, level, then the event and its fields
    deferred = "router.client _deferred_ticket DEBUG request_deferred request_id={} latency=daily tag="
    assert deferred.format(1) in lines
    assert deferred.format(2) in lines
    assert any(line.startswith("router.batcher flush WARNING batch_create_failed ") for line in lines)
    assert any(
        line.startswith("router.batcher flush INFO batch_submitted batch_id=msgbatch_") for line in lines
    )
    assert "router.client flush INFO flush_done batches=1 requests=2" in lines


def events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines()]


async def test_configure_logging_writes_json_lines_off_a_terminal(tmp_path: Path, emulator: Emulator) -> None:
    emulator.faults.fail_next("batches.create", status=500)

    done = await run_app(emulator, tmp_path / "router.db", "configured", "2")

    assert done.code == 0, done.stderr
    assert done.stdout == ""
    seen = events(done.stderr)  # every line is one JSON object
    deferred = [e for e in seen if e["event"] == "request_deferred"]
    assert [(e["request_id"], e["logger"], e["level"]) for e in deferred] == [
        (1, "router.client", "debug"),
        (2, "router.client", "debug"),
    ]
    assert all(e["timestamp"].endswith("Z") for e in seen)
    failed = [e for e in seen if e["event"] == "batch_create_failed"]
    assert [(e["logger"], e["level"], e["requests"]) for e in failed] == [("router.batcher", "warning", 2)]
    # Other libraries show warnings only: no APScheduler "Added job" or httpx request lines.
    assert {e["logger"].split(".")[0] for e in seen} == {"router"}


async def test_configure_logging_writes_readable_lines_on_a_terminal(
    tmp_path: Path, emulator: Emulator
) -> None:
    main, terminal = os.openpty()
    try:
        reading = asyncio.create_task(asyncio.to_thread(_read_all, main))
        try:
            done = await run_app(emulator, tmp_path / "router.db", "configured", "1", stderr=terminal)
        finally:
            os.close(terminal)  # the reader sees the end once no one holds the terminal open
        shown = await reading
    finally:
        os.close(main)
    assert done.code == 0
    lines = shown.decode().splitlines()
    deferred = [line for line in lines if "request_deferred" in line]
    assert len(deferred) == 1
    assert "[debug    ] request_deferred" in deferred[0]
    assert "[router.client] latency=daily request_id=1" in deferred[0]
    assert not any(line.lstrip().startswith("{") for line in lines)


def _read_all(fd: int) -> bytes:
    shown = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the terminal's other end is closed and everything was read
            return shown
        if not chunk:
            return shown
        shown += chunk


def test_a_disabled_call_runs_no_processor() -> None:
    ran: list[str] = []

    def record(_logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> str:
        ran.append(method)
        return ""

    stdlib = logging.getLogger("router.test_logging")
    stdlib.setLevel(logging.INFO)
    try:
        log = RouterLogger(stdlib, [record], {})
        log.debug("request_deferred", request_id=1)
        log.log(logging.DEBUG, "request_deferred", request_id=1)
        assert ran == []
        log.info("flush_done")
        log.exception("flush_failed")
        assert ran == ["info", "exception"]
    finally:
        stdlib.setLevel(logging.NOTSET)


def test_library_loggers_are_stdlib_loggers_under_router_with_a_null_handler() -> None:
    assert get_logger("router.client")._logger is logging.getLogger("router.client")
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("router").handlers)


async def test_a_shutdown_as_apscheduler_submits_a_job_cancels_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = asyncio.Event()

    async def flush(latency: str) -> None:
        started.set()

    async def idle(*_args: object) -> None:
        return None

    scheduler = RouterScheduler(classes={}, flush=flush, check_triggers=idle, poll=idle, poll_tick=3600)
    # The moment APScheduler's asyncio executor had created its task but not yet run it: a
    # shutdown then cancelled the job before it started and logged "Error running job".
    scheduler._scheduler.add_listener(lambda _event: scheduler.shutdown(), EVENT_JOB_SUBMITTED)
    caplog.set_level(logging.WARNING)
    scheduler.start()
    scheduler.flush_now("daily")
    async with asyncio.timeout(10):
        await started.wait()
    await scheduler.drain()
    assert caplog.records == []


def test_no_library_module_logs_through_structlogs_global_configuration() -> None:
    # structlog.get_logger() follows structlog.configure(), whose default prints to stdout.
    package = Path(__file__).resolve().parents[1] / "router"
    offenders = [
        str(path.relative_to(package))
        for path in sorted(package.rglob("*.py"))
        if path.name != "logs.py"
        and any(
            call in path.read_text(encoding="utf-8")
            for call in ("structlog.get_logger", "structlog.getLogger")
        )
    ]
    assert offenders == [], "use router.logs.get_logger(__name__)"
