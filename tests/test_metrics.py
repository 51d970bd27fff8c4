"""The daemon's /metrics, /healthz and /readyz, scraped from a real daemon subprocess on the emulator."""

from __future__ import annotations

import asyncio
import json
import math
import socket
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest
from anthropic.types import Message
from prometheus_client.parser import text_string_to_metric_families

from router import Router, RouterConfig
from router.cli import main
from router.emulator import Emulator
from router.errors import ConfigError
from tests import helpers
from tests.durability import finish, query, start_daemon, stop, until
from tests.helpers import MODEL, reply_text
from tests.test_daemon import owned_by, read_until_event

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def config_file(tmp_path: Path, url: str, *, metrics: str | None = None) -> Path:
    """A daemon-mode config: `daily` flushes every 200 ms, `weekly` not within a test (pending),
    `urgent` has a deadline no batch can meet (escalated at submit, answered real time)."""
    path = tmp_path / "router.toml"
    daemon = f'[daemon]\nmetrics = "{metrics}"\n' if metrics else ""
    path.write_text(
        f"""
[anthropic]
base_url = "{url}"
max_retries = 0

[store]
path = "router.db"

[batch]
poll_interval = "500ms"
poll_max_interval = "1s"
turnaround_prior = "1h"

[router]
flusher = "daemon"
watch_interval = "50ms"
lease_ttl = "30s"  # no takeover by lapse here: a stall on a busy machine must not make it step down

{daemon}
[classes.daily]
route = "batch"
deadline = "1d"
every = "200ms"

[classes.weekly]
route = "batch"
deadline = "7d"
every = "1h"

[classes.urgent]
route = "batch"
deadline = "30m"
every = "1h"
""",
        encoding="utf-8",
    )
    return path


async def bound_address(proc: asyncio.subprocess.Process) -> str:
    """host:port the daemon's metrics server bound (port 0 in the config: a free one)."""
    for line in await read_until_event(proc, "metrics_serving", timeout=60):
        if line.startswith("{") and json.loads(line).get("event") == "metrics_serving":
            return str(json.loads(line)["address"])
    raise AssertionError("unreachable")


async def get(address: str, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"http://{address}{path}") as response:
        return response.status, await response.text()


async def scrape(address: str) -> tuple[Samples, str]:
    status, text = await get(address, "/metrics")
    assert status == 200, text
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out, text


def value(samples: Samples, name: str, default: float | None = None, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    if key not in samples:
        if default is None:
            have = sorted(k for k in samples if k[0] == name)
            raise AssertionError(f"no sample {name}{labels}; have {have}")
        return default
    return samples[key]


def states(db: Path) -> dict[str, int]:
    return {str(s): int(n) for s, n in query(db, "SELECT state, COUNT(*) FROM requests_now GROUP BY state")}


def ask(text: str, latency: str | None = None, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": text}]
    params: dict[str, Any] = {"model": MODEL, "max_tokens": 32, "messages": messages}
    return params | ({"latency": latency} if latency else {}) | extra


async def test_a_scrape_shows_the_figures_of_every_app_moving_under_a_mixed_workload(
    tmp_path: Path, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    config = config_file(tmp_path, emulator.url, metrics="127.0.0.1:0")
    db = tmp_path / "router.db"
    daemon = await start_daemon(config)
    try:
        address = await bound_address(daemon)
        await until(lambda: owned_by(db, daemon), timeout=60)
        before, _ = await scrape(address)
        assert value(before, "hybrid_router_lease_held") == 1
        assert value(before, "hybrid_router_batches_open") == 0
        assert all(value(before, "hybrid_router_requests", state=s) == 0 for s in ("pending", "succeeded"))
        assert not [k for k in before if k[0] == "hybrid_router_requests_total"]
        assert value(before, "hybrid_router_batch_turnaround_seconds_count") == 0
        assert value(before, "hybrid_router_cost_usd_total", lane="batch") == 0

        async with Router.from_config(config, anthropic=sdk) as app:
            for i in range(3):
                await app.messages.create(**ask(f"now {i}", "realtime"))
            for i in range(2):
                await app.messages.submit(**ask(f"later {i}", "weekly", key=f"w{i}"))
            urgent = await app.messages.create(**ask("soon", "urgent"))  # no batch in 30 min: real time
            assert "soon" in reply_text(urgent)
            # Five deferred requests stored in one transaction (so in one batch), and waited for.
            tonight = [ask(f"tonight {i}", key=f"d{i}") for i in range(5)]

            async def collect() -> dict[str, str]:
                texts = {}
                async for key, outcome in app.messages.map(tonight, latency="daily"):
                    assert isinstance(outcome, Message), outcome
                    texts[key] = reply_text(outcome)
                return texts

            waiting = asyncio.create_task(collect())
            await until(lambda: states(db).get("submitted", 0) == 5, timeout=60)  # the daemon flushed
            during, _ = await scrape(address)
            assert value(during, "hybrid_router_requests", state="submitted") == 5
            assert value(during, "hybrid_router_requests", state="pending") == 2
            assert value(during, "hybrid_router_batches_open") == 1
            assert value(during, "hybrid_router_oldest_pending_seconds", **{"class": "weekly"}) > 0
            assert value(during, "hybrid_router_oldest_pending_seconds", **{"class": "daily"}) == 0
            urgent_escalations = value(
                during, "hybrid_router_escalations_total", **{"class": "urgent"}, reason="turnaround"
            )
            assert urgent_escalations == 1
            emulator.end_batches()
            texts = await asyncio.wait_for(waiting, 60)  # the daemon polled and ingested the batch
            assert {key: f"tonight {key[1:]}" in text for key, text in texts.items()} == {
                f"d{i}": True for i in range(5)
            }
        # The app has closed: its real-time accounting is committed. The waiters resolved when the
        # batch's results committed; the daemon closes the batch after that, then logs this.
        await read_until_event(daemon, "batch_ingested", timeout=60)

        after, text = await scrape(address)
        answers = {
            (dict(labels)["lane"], dict(labels)["class"], dict(labels)["outcome"]): n
            for (name, labels), n in after.items()
            if name == "hybrid_router_requests_total"
        }
        assert answers == {
            ("realtime", "realtime", "succeeded"): 3,
            ("realtime", "urgent", "succeeded"): 1,
            ("batch", "daily", "succeeded"): 5,
        }
        assert value(after, "hybrid_router_requests", state="succeeded") == 6  # 5 daily + 1 urgent
        assert value(after, "hybrid_router_requests", state="pending") == 2
        assert value(after, "hybrid_router_requests", state="submitted") == 0
        assert value(after, "hybrid_router_batches_open") == 0
        assert value(after, "hybrid_router_batch_turnaround_seconds_count") == 1
        assert value(after, "hybrid_router_batch_turnaround_seconds_bucket", le="+Inf") == 1
        assert value(after, "hybrid_router_oldest_pending_seconds", **{"class": "weekly"}) >= value(
            during, "hybrid_router_oldest_pending_seconds", **{"class": "weekly"}
        )
        batch_cost = value(after, "hybrid_router_cost_usd_total", lane="batch")
        realtime_cost = value(after, "hybrid_router_cost_usd_total", lane="realtime")
        assert batch_cost > 0 and realtime_cost > 0
        # The batch lane costs half the real-time price: what it saved equals what it cost.
        assert value(after, "hybrid_router_saved_usd_total") == pytest.approx(batch_cost)
        assert value(after, "hybrid_router_lease_held") == 1
        assert not math.isnan(value(after, "hybrid_router_last_poll_age_seconds"))
        print("\n" + "".join(line + "\n" for line in text.splitlines() if "hybrid_router" in line))

        status, body = await get(address, "/healthz")
        assert status == 200 and json.loads(body)["ok"] is True
        status, body = await get(address, "/readyz")  # holds the lease, polled within 1 s, or says why
        assert status == 200 or "poll" in json.loads(body)["reason"], body
    finally:
        done = await stop(daemon)
    assert done.code == 0, done.stderr


async def test_healthz_answers_and_readyz_is_ready_only_while_this_daemon_holds_the_lease(
    tmp_path: Path, emulator: Emulator
) -> None:
    config = config_file(tmp_path, emulator.url)
    db = tmp_path / "router.db"
    first = await start_daemon(config)
    standby: asyncio.subprocess.Process | None = None
    try:
        await until(lambda: owned_by(db, first), timeout=60)
        standby = await start_daemon(config, "--standby", "--metrics", "127.0.0.1:0")
        address = await bound_address(standby)
        await read_until_event(standby, "daemon_standby", timeout=60)

        status, body = await get(address, "/healthz")
        assert status == 200 and json.loads(body)["ok"] is True
        status, body = await get(address, "/readyz")
        assert status == 503
        reply = json.loads(body)
        assert reply["ready"] is False
        assert "another daemon holds the lease" in reply["reason"]
        samples, _ = await scrape(address)  # a standby serves the store's figures too
        assert value(samples, "hybrid_router_lease_held") == 0
        assert value(samples, "hybrid_router_requests", state="pending") == 0

        stopped = await stop(first)  # a clean stop releases the lease: the standby takes over
        assert stopped.code == 0, stopped.stderr
        await until(lambda: standby is not None and owned_by(db, standby), timeout=60)

        async def ready() -> bool:
            status, body = await get(address, "/readyz")
            return status == 200 and json.loads(body)["ready"] is True

        await helpers.until(ready, timeout=60)  # its first poll runs at once after taking the lease
        samples, _ = await scrape(address)
        assert value(samples, "hybrid_router_lease_held") == 1
    finally:
        if first.returncode is None:
            await stop(first)
        if standby is not None:
            done = await stop(standby)
            assert done.code == 0, done.stderr


async def test_a_taken_metrics_address_is_one_line_and_exit_2(tmp_path: Path, emulator: Emulator) -> None:
    config = config_file(tmp_path, emulator.url)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = await finish(await start_daemon(config, "--metrics", f"127.0.0.1:{port}"), timeout=60)
    assert done.code == 2
    assert done.stderr.splitlines() == [
        f"hybrid-router: --metrics 127.0.0.1:{port}: cannot listen there: Address already in use"
    ]
    assert query(tmp_path / "router.db", "SELECT owner FROM leases") == []  # it never drove the database


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--metrics", "0.0.0.0:9464"],
            "hybrid-router: --metrics 0.0.0.0:9464: not a loopback address, so other hosts could read"
            " the metrics; use 127.0.0.1:PORT, or add --metrics-public to serve it to other hosts",
        ),
        (
            ["--metrics", "9464"],
            'hybrid-router: --metrics: expected an address like "127.0.0.1:9464" (host:port; IPv6 in'
            " brackets, \"[::1]:9464\"), got '9464'",
        ),
    ],
)
def test_a_bad_metrics_address_is_refused_before_anything_starts(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    config = tmp_path / "router.toml"
    config.write_text('[store]\npath = "router.db"\n', encoding="utf-8")
    assert main(["--config", str(config), "daemon", *args]) == 2
    assert capsys.readouterr().err.splitlines() == [message]
    assert not (tmp_path / "router.db").exists()


def test_a_public_metrics_address_in_the_config_needs_metrics_public(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"daemon\.metrics: 0\.0\.0\.0:9464 is not a loopback address"):
        RouterConfig.from_toml_text('[daemon]\nmetrics = "0.0.0.0:9464"\n', "router.toml")
    config = RouterConfig.from_toml_text('[daemon]\nmetrics = "0.0.0.0:9464"\nmetrics_public = true\n')
    assert config.daemon.metrics == "0.0.0.0:9464"
