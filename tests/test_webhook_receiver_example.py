"""examples/webhook_receiver.py over real HTTP: under uvicorn on a loopback socket, its config
from HYBRID_ROUTER_CONFIG as in production. The test does the daemon's part (flush, poll once
the batch has ended on the emulator's clock, deliver the outbox) with a second Router."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anthropic
import httpx2
import pytest
import uvicorn

from examples import webhook_receiver
from router import Router, load_config
from router.emulator import Emulator
from router.webhooks import Dispatcher, body_of, headers_for

SECRET = "whsec_" + base64.b64encode(b"the example's test secret, 32 b!").decode()


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[tuple[str, socket.socket]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = uvicorn.Server(
        uvicorn.Config(webhook_receiver.app, lifespan="on", log_config=None, access_log=False)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", sock
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        sock.close()


async def test_the_receiver_verifies_handles_each_event_once_and_fetches_a_drained_tags_results(
    tmp_path: Path, emulator: Emulator, sdk: anthropic.AsyncAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file = tmp_path / "router.toml"
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("HYBRID_ROUTER_CONFIG", str(config_file))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    monkeypatch.setenv("RECEIVER_DB", str(tmp_path / "receiver.db"))
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path / "results"))
    async with serving() as (url, _):
        config_file.write_text(
            f'[store]\npath = "{tmp_path / "service.db"}"\n[anthropic]\nbase_url = "{emulator.url}"\n'
            '[router]\nflusher = "daemon"\n'
            f'[[webhooks]]\nurl = "{url}/webhooks"\nevents = ["tag.drained", "batch.ended"]\n'
            'secret_env = "WEBHOOK_SECRET"\n'
        )
        async with httpx2.AsyncClient(base_url=url, timeout=30) as http:
            items = [{"key": f"doc-{i}", "text": f"summarise document {i}"} for i in range(3)]
            stored = await http.post("/jobs", json={"tag": "docs", "items": items})
            assert stored.status_code == 202, stored.text

            config = load_config(config_file)
            async with Router(config, anthropic=sdk, scheduler=False) as daemon:
                await daemon.flush()
                emulator.clock.advance(emulator.batch_seconds)
                await daemon.poll()
                dispatcher = Dispatcher(daemon.store, config.webhooks)
                try:
                    report = await dispatcher.run_once()
                finally:
                    await dispatcher.close()
                assert (report.sent, report.delivered) == (2, 2)  # batch.ended, tag.drained
                (delivery, *_) = await daemon.store.list_deliveries()

            lines = [json.loads(x) for x in (tmp_path / "results" / "docs.jsonl").read_text().splitlines()]
            assert [line["key"] for line in lines] == ["doc-0", "doc-1", "doc-2"]
            assert all("summarise document" in line["text"] for line in lines)

            # The same delivery again (a retry after a lost answer): handled once, answered 200.
            body = body_of(delivery.event)
            again = await http.post(
                "/webhooks", content=body, headers=headers_for(SECRET, "evt_x", body, time.time())
            )
            assert again.json() == {"duplicate": False}
            again = await http.post(
                "/webhooks", content=body, headers=headers_for(SECRET, "evt_x", body, time.time())
            )
            assert again.json() == {"duplicate": True}
            forged = headers_for(
                "whsec_" + base64.b64encode(b"another secret").decode(), "evt_y", body, time.time()
            )
            assert (await http.post("/webhooks", content=body, headers=forged)).status_code == 401
            seen = (await http.get("/seen")).json()["events"]
    assert sorted(e["type"] for e in seen) == ["batch.ended", "tag.drained", "tag.drained"]
    assert [e["times"] for e in seen if e["id"] == "evt_x"] == [2]
