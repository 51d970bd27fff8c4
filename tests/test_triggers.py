"""Flush triggers: interval, cron, size and age, each firing when it should and not before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import anthropic

from router import Router, RouterConfig
from router.emulator import Emulator
from tests.helpers import ask, until


def batch_posts(emulator: Emulator) -> int:
    return sum(1 for e in emulator.journal if e.method == "POST" and e.path == "/v1/messages/batches")


def config_with(db_path: Path, emulator: Emulator, classes: str) -> RouterConfig:
    text = f'[anthropic]\nbase_url = "{emulator.url}"\n[store]\npath = "{db_path}"\n{classes}'
    return RouterConfig.from_toml_text(text, db_path.parent / "router.toml")


async def test_size_trigger_flushes_at_once_when_reached_and_not_before(
    db_path: Path, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    classes = '[classes.sized]\nroute = "batch"\ndeadline = "24h"\nevery = "1h"\nmax_pending = 5'
    async with Router(config_with(db_path, emulator, classes), anthropic=sdk) as router:
        for i in range(4):
            await router.messages.submit(**ask(f"s{i}"), latency="sized")
        assert await router.check_triggers("sized") is False
        assert batch_posts(emulator) == 0
        await router.messages.submit(**ask("s4"), latency="sized")  # the fifth wakes the flush

        async def flushed() -> bool:
            return (await router.store.state_counts()) == {"submitted": 5}

        await until(flushed)
        assert batch_posts(emulator) == 1


async def test_byte_size_trigger(db_path: Path, emulator: Emulator, sdk: anthropic.AsyncAnthropic) -> None:
    classes = '[classes.bytes]\nroute = "batch"\ndeadline = "24h"\nevery = "1h"\nmax_pending_bytes = "2KB"'
    async with Router(config_with(db_path, emulator, classes), anthropic=sdk, scheduler=False) as router:
        await router.messages.submit(**ask("x" * 500), latency="bytes")
        assert await router.check_triggers("bytes") is False
        await router.messages.submit(**ask("y" * 1600), latency="bytes")
        assert await router.check_triggers("bytes") is True


async def test_age_trigger_fires_when_the_oldest_request_is_old_enough(
    db_path: Path, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    classes = '[classes.aged]\nroute = "batch"\ndeadline = "24h"\nevery = "6h"\nmax_wait = "10m"'
    config = config_with(db_path, emulator, classes)
    async with Router(config, anthropic=sdk, clock=emulator.clock.now, scheduler=False) as router:
        assert await router.check_triggers("aged") is False  # nothing pending
        await router.messages.submit(**ask("waiting"), latency="aged")
        emulator.clock.advance(599)
        assert await router.check_triggers("aged") is False
        emulator.clock.advance(1)
        assert await router.check_triggers("aged") is True


async def test_interval_and_cron_triggers_are_scheduled_as_configured(
    db_path: Path, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    classes = """
[classes.every5]
route = "batch"
deadline = "24h"
every = "5m"
[classes.nightly]
route = "batch"
deadline = "48h"
cron = "30 2 * * *"
timezone = "Europe/Paris"
"""
    async with Router(config_with(db_path, emulator, classes), anthropic=sdk) as router:
        scheduler = router.scheduler
        assert scheduler is not None
        assert {"flush:every5", "cron:nightly", "poll"} <= set(scheduler.job_ids())
        assert "flush:nightly" not in scheduler.job_ids()  # cron only: no interval flush
        paris = ZoneInfo("Europe/Paris")
        at = datetime(2026, 11, 22, 1, 0, tzinfo=paris)
        assert scheduler.next_run("cron:nightly", at) == datetime(2026, 11, 22, 2, 30, tzinfo=paris)
        after = datetime(2026, 11, 22, 2, 30, 1, tzinfo=paris)
        assert scheduler.next_run("cron:nightly", after) == datetime(2026, 11, 23, 2, 30, tzinfo=paris)
        now = datetime.now(UTC)
        first = scheduler.next_run("flush:every5", now)
        assert first is not None
        second = scheduler.next_run("flush:every5", first + timedelta(seconds=1))
        assert second is not None and second - first == timedelta(minutes=5)
