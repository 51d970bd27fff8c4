"""Delivery across daemon crashes (a real daemon subprocess killed at a named point): an event
committed but not yet sent is sent after the restart, and one sent but not recorded as sent
is sent again with the same webhook-id."""

from __future__ import annotations

import base64
from pathlib import Path

import anthropic
import pytest

from router import Router
from router.emulator import Emulator
from tests.durability import finish, query, start_daemon, stop, until, write_config
from tests.helpers import MODEL
from tests.receiver import receiver

BOTH_ENGINES = True
SECRET = "whsec_" + base64.b64encode(b"crash test secret of some length").decode()


@pytest.fixture
def db(store_location: str) -> Path | str:
    return store_location if "://" in store_location else Path(store_location)


def with_webhook(config: Path, url: str) -> Path:
    text = config.read_text().replace("[router]\n", '[router]\nwebhook_interval = "50ms"\n', 1)
    config.write_text(
        text
        + f"""
[[webhooks]]
url = "{url}"
events = ["tag.drained"]
secret_env = "WEBHOOK_SECRET"
timeout = "500ms"
retry_initial = "50ms"
retry_max = "200ms"
"""
    )
    return config


def deliveries(db: Path | str) -> list[tuple[object, ...]]:
    try:
        return query(db, "SELECT state, attempts FROM deliveries")
    except Exception:  # not migrated yet
        return []


@pytest.mark.parametrize(
    ("point", "sends"),
    [("webhooks.before_send", 1), ("webhooks.after_send", 2)],
    ids=["committed-not-sent", "sent-not-recorded"],
)
async def test_a_crash_loses_no_event_and_a_resend_keeps_its_id(
    tmp_path: Path,
    db: Path | str,
    emulator: Emulator,
    sdk: anthropic.AsyncAnthropic,
    monkeypatch: pytest.MonkeyPatch,
    point: str,
    sends: int,
) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    async with receiver() as hook:
        config = with_webhook(write_config(tmp_path, emulator.url, store=str(db)), hook.url)
        first = await start_daemon(config, crash_at=point)
        try:
            async with Router.from_config(config, anthropic=sdk) as app:
                await app.messages.submit(
                    model=MODEL,
                    max_tokens=16,
                    messages=[{"role": "user", "content": "hi"}],
                    latency="daily",
                    tag="job",
                    key="k1",
                )
            await until(
                lambda: query(db, "SELECT COUNT(*) FROM requests WHERE state = 'submitted'")[0][0] == 1
            )
            emulator.end_batches()
            killed = await finish(first, timeout=30)
        finally:
            if first.returncode is None:
                first.kill()
                await first.wait()
        assert killed.code == -9, killed.stderr[-2000:]  # SIGKILL at the crash point
        assert len(hook.got) == sends - 1  # before_send: nothing arrived; after_send: one did
        assert [s for s, _ in deliveries(db)] == ["pending"]

        second = await start_daemon(config)
        try:
            await until(lambda: [s for s, _ in deliveries(db)] == ["delivered"], timeout=30)
        finally:
            done = await stop(second)
        assert done.code == 0, done.stderr[-2000:]
    assert len(hook.got) == sends
    assert len({g.id for g in hook.got}) == 1  # the same webhook-id each time
    assert hook.got[0].payload["type"] == "tag.drained" and hook.got[0].payload["data"]["tag"] == "job"
    assert len({g.body for g in hook.got}) == 1
