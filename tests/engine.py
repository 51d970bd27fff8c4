"""Helpers for the batch-engine tests: routers on custom configs, journal and store probes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic

from router import Router, RouterConfig
from router.emulator import Emulator
from tests.stores import raw_rows, store_toml

BATCHES = "/v1/messages/batches"

CLASSES = """
[classes.daily]
route = "batch"
deadline = "1d"
max_attempts = 3

[classes.weekly]
route = "batch"
deadline = "7d"

[classes.twice]
route = "batch"
deadline = "2h"
max_attempts = 2
"""


def engine_config(store: str | Path, emulator: Emulator, extra: str = "") -> RouterConfig:
    """Config on the emulator: classes `daily`, `weekly` (3 attempts), `twice` (2 attempts, 2 h
    deadline); `store` is the SQLite file or a PostgreSQL URL (tests/stores.py)."""
    text = f'[store]\n{store_toml(store)}\n[anthropic]\nbase_url = "{emulator.url}"\n{extra}\n{CLASSES}'
    return RouterConfig.from_toml_text(text)


@contextlib.asynccontextmanager
async def quiet_router(
    store: str | Path, emulator: Emulator, sdk: anthropic.AsyncAnthropic, extra: str = ""
) -> AsyncIterator[Router]:
    """A Router on the emulator's clock with no scheduler: the test decides when to flush and poll."""
    config = engine_config(store, emulator, extra)
    async with Router(config, anthropic=sdk, clock=emulator.clock.now, scheduler=False) as router:
        yield router


def creates(emulator: Emulator) -> list[Any]:
    """Journal entries of batches.create calls (whatever their status)."""
    return [e for e in emulator.journal if e.method == "POST" and e.path == BATCHES]


def calls(emulator: Emulator, endpoint: str) -> int:
    return sum(1 for e in emulator.journal if e.endpoint == endpoint)


async def ledger_rows(router: Router) -> list[tuple[int, str, int]]:
    """(request_id, result_type, duplicate) of every batch ledger row."""
    rows = await raw_rows(
        router.store,
        "SELECT request_id, result_type, duplicate FROM ledger WHERE lane = 'batch' ORDER BY id",
    )
    return [(int(a), str(b), int(c)) for a, b, c in rows]


async def batch_states(router: Router) -> list[str]:
    return [str(r[0]) for r in await raw_rows(router.store, "SELECT state FROM batches ORDER BY id")]
