"""Shared fixtures: a real emulator on 127.0.0.1, the real SDK in strict mode, real SQLite files."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anthropic
import pytest

from router import Router, RouterConfig
from router.emulator import Emulator, EmulatorClock
from router.logs import reset_logging
from tests.durability import kill_leftovers

# Store fixtures for both engines (pg_server, pg_url, engine, store_settings, store).
pytest_plugins = ["tests.stores"]


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Tests that run the CLI configure logging; later tests start from the library default."""
    yield
    reset_logging()


@pytest.fixture(autouse=True)
def _no_daemon_outlives_its_test() -> Iterator[None]:
    """A test that fails before stopping its daemons leaves them to be killed here."""
    yield
    kill_leftovers()


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """An emulator whose batch clock only moves when a test advances it."""
    emu = Emulator(clock=EmulatorClock(start=time.time()), batch_seconds=600.0)
    async with emu:
        yield emu


@pytest.fixture
async def sdk(emulator: Emulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """The real SDK pointed at the emulator, validating every response body against its types."""
    client = anthropic.AsyncAnthropic(
        base_url=emulator.url, api_key="test-key", max_retries=0, _strict_response_validation=True
    )
    yield client
    await client.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "router.db"


@pytest.fixture
def config(db_path: Path, store_location: str, emulator: Emulator) -> RouterConfig:
    """The default config on the emulator; the store is `db_path`, or PostgreSQL in a module
    that runs on both engines (tests/stores.py)."""
    return RouterConfig.default(store_path=db_path).with_store(store_location).with_base_url(emulator.url)


@pytest.fixture
async def router(
    config: RouterConfig, sdk: anthropic.AsyncAnthropic, emulator: Emulator
) -> AsyncIterator[Router]:
    """An open Router on the emulator, on the emulator's clock."""
    async with Router(config, anthropic=sdk, clock=emulator.clock.now) as client:
        yield client
