"""The service examples: the systemd unit parses and fits, and the FastAPI app serves over real HTTP.

The FastAPI app runs under uvicorn on a loopback socket, loads its config from
HYBRID_ROUTER_CONFIG as in production and talks to the emulator. The app's config says
`flusher = "daemon"`, so the test does the daemon's part (flush, then poll once the batch has
ended on the emulator's clock) with a second Router on the same database file.
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anthropic
import httpx2
import pytest
import uvicorn

from examples import fastapi_app
from router import Router, RouterError, load_config
from router.cli import build_parser
from router.emulator import Emulator
from router.units import parse_duration

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "examples" / "systemd" / "hybrid-router.service"


# ---------------------------------------------------------------- systemd


def _unit() -> configparser.ConfigParser:
    # systemd units are ini files; keys are case-sensitive and nothing in them is interpolated.
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    return unit


def test_the_unit_restarts_on_failure_and_stops_with_sigterm_in_time_for_an_ingest() -> None:
    service = _unit()["Service"]
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    # A 100,000-result ingest takes seconds on a laptop; a minute is the least to allow.
    assert parse_duration(service["TimeoutStopSec"].replace("min", "m")) >= 60
    # A setup mistake (exit 2) is not retried in a loop.
    assert "2" in service["RestartPreventExitStatus"].split()
    assert service["EnvironmentFile"].startswith("/etc/hybrid-router/")
    assert service["User"] not in ("", "root")
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["StateDirectory"] == "hybrid-router"
    assert _unit()["Install"]["WantedBy"] == "multi-user.target"


def test_the_units_exec_start_parses_with_the_cli() -> None:
    argv = shlex.split(_unit()["Service"]["ExecStart"])
    assert Path(argv[0]).name == "hybrid-router"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "daemon"
    assert args.config == "/etc/hybrid-router/router.toml"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_unit_without_a_warning(tmp_path: Path) -> None:
    # verify insists that ExecStart's program exists: point it at this checkout's entry point.
    installed = Path(sys.executable).with_name("hybrid-router")
    assert installed.exists()
    copy = tmp_path / "hybrid-router.service"
    copy.write_text(UNIT.read_text().replace("/opt/hybrid-router/bin/hybrid-router", str(installed)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stderr, done.stdout) == (0, "", "")


# ---------------------------------------------------------------- FastAPI


@pytest.fixture
def config_file(tmp_path: Path, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "router.toml"
    path.write_text(
        f'[store]\npath = "{tmp_path / "service.db"}"\n'
        f'[anthropic]\nbase_url = "{emulator.url}"\n'
        '[router]\nflusher = "daemon"\n'
    )
    monkeypatch.setenv("HYBRID_ROUTER_CONFIG", str(path))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    return path


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[httpx2.AsyncClient]:
    """The example app under uvicorn on a loopback port, and an HTTP client for it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()  # connections wait in the backlog until the lifespan has opened the Router
    server = uvicorn.Server(uvicorn.Config(fastapi_app.app, lifespan="on", log_config=None, access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with httpx2.AsyncClient(base_url=url, timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        sock.close()


@pytest.fixture
async def http(config_file: Path) -> AsyncIterator[httpx2.AsyncClient]:
    async with serving() as client:
        yield client


@pytest.fixture
async def daemon(config_file: Path, sdk: anthropic.AsyncAnthropic) -> AsyncIterator[Router]:
    """What `hybrid-router daemon` would do for the app, driven by the test."""
    async with Router(load_config(config_file), anthropic=sdk, scheduler=False) as router:
        yield router


async def test_fastapi_example_real_time_nightly_and_results_over_http(
    http: httpx2.AsyncClient, daemon: Router, emulator: Emulator
) -> None:
    answered = await http.post("/ask", json={"question": "what is 2+2?"})
    assert answered.status_code == 200, answered.text
    assert "what is 2+2?" in answered.json()["answer"]
    assert [e.path for e in emulator.journal] == ["/v1/messages"]

    items = [
        {"key": "ticket-1", "text": "refund not received"},
        {"key": "ticket-2", "text": "[emulator:error=invalid_request_error] unreadable"},
    ]
    deferred = await http.post("/nightly", json={"items": items})
    assert deferred.status_code == 202, deferred.text
    assert deferred.json() == {"keys": ["ticket-1", "ticket-2"], "stored": 2}
    again = await http.post("/nightly", json={"items": items[:1]})
    assert again.json() == {"keys": ["ticket-1"], "stored": 0}  # a key is stored once
    assert (await http.post("/nightly", json={"items": []})).status_code == 422
    assert await daemon.store.state_counts() == {"pending": 2}

    waiting = await http.get("/results/ticket-1")
    assert (waiting.status_code, waiting.json()) == (202, {"key": "ticket-1", "state": "pending"})
    assert (await http.get("/results/ticket-99")).status_code == 404

    report = await daemon.flush()
    assert report.requests == 2 and len(report.batches) == 1
    submitted = await http.get("/results/ticket-1")
    assert (submitted.status_code, submitted.json()["state"]) == (202, "submitted")

    emulator.clock.advance(emulator.batch_seconds)  # the batch ends on the emulator's clock
    await daemon.poll()
    done = await http.get("/results/ticket-1")
    assert done.status_code == 200, done.text
    assert done.json()["state"] == "succeeded"
    assert "refund not received" in done.json()["text"]
    failed = await http.get("/results/ticket-2")
    assert failed.status_code == 200
    assert failed.json()["state"] == "failed"
    assert failed.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.usefixtures("config_file")
async def test_the_lifespan_opens_one_router_and_closes_it_with_the_server() -> None:
    async with serving() as client:
        assert (await client.get("/results/none")).status_code == 404  # served from the open store
        router = fastapi_app.app.state.router
        assert isinstance(router, Router) and router.store is not None
    with pytest.raises(RouterError, match="not open"):
        _ = router.store
