"""At least once, end to end: a 1,000-request run in 10 tags through a real daemon subprocess,
delivered to examples/webhook_receiver.py running as a real process that is killed and
started again twice and answers 500 to a fifth of the deliveries it handled. Batches end on
the emulator's clock; retries wait a backoff of 50-500 ms (the endpoint's retry_initial and
retry_max), never a batch. The figures are printed (pytest -s) for the notes."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import socket
import sqlite3
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest

from router.emulator import Emulator
from router.store import OutboxEvent
from router.webhooks import message_id
from tests.durability import env, query, until

ROOT = Path(__file__).resolve().parents[1]
RECEIVER = ROOT / "tests" / "webhook_receiver_app.py"
SECRET = "whsec_" + base64.b64encode(b"the delivery test's secret, 32 b").decode()
TAGS = [f"job-{n}" for n in range(10)]
PER_TAG = 100


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


BOTH_ENGINES = True


@pytest.fixture
def db(store_location: str, tmp_path: Path) -> Path | str:
    """The daemon's store: the SQLite file beside the config, or a PostgreSQL URL."""
    return store_location if "://" in store_location else tmp_path / "router.db"


def write_config(tmp_path: Path, emulator: Emulator, port: int, db: Path | str) -> Path:
    path = tmp_path / "router.toml"
    path.write_text(
        f"""
[anthropic]
base_url = "{emulator.url}"
max_retries = 0
timeout = "10s"

[store]
{f'url = "{db}"' if isinstance(db, str) else 'path = "router.db"'}

[batch]
poll_interval = "100ms"
poll_max_interval = "200ms"

[router]
flusher = "daemon"
watch_interval = "50ms"
lease_ttl = "15s"  # no takeover here: a busy machine must not make it step down
webhook_interval = "100ms"

[classes.daily]
route = "batch"
deadline = "1d"
every = "300ms"

[[webhooks]]
url = "http://127.0.0.1:{port}/webhooks"
events = ["batch.ended", "tag.drained", "request.*"]
secret_env = "WEBHOOK_SECRET"
timeout = "2s"
retry_initial = "50ms"
retry_max = "500ms"
""",
        encoding="utf-8",
    )
    return path


def rows(db: Path | str, sql: str) -> list[tuple[Any, ...]]:
    if isinstance(db, str):  # PostgreSQL
        try:
            return query(db, sql)
        except Exception as exc:  # not migrated yet
            if type(exc).__name__ != "UndefinedTable":
                raise
            return []
    conn = sqlite3.connect(db, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


def one(db: Path | str, sql: str) -> int:
    found = rows(db, sql)
    return int(found[0][0] or 0) if found else 0


class ReceiverProcess:
    def __init__(self, tmp_path: Path, config: Path, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {
            **env(),
            "HYBRID_ROUTER_CONFIG": str(config),
            "RECEIVER_DB": str(tmp_path / "receiver.db"),
            "RECEIVER_LOG": str(tmp_path / "received.db"),
            "RESULTS_DIR": str(tmp_path / "results"),
        }
        self.proc: asyncio.subprocess.Process | None = None
        self.folder = tmp_path
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        # Output to a file: a pipe nobody reads would fill up and stop the process.
        self.log = self.folder / f"receiver-{self.starts}.log"
        with self.log.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(RECEIVER),
                str(self.port),
                str(self.starts),
                env=self.env,
                stdout=out,
                stderr=out,
            )

        async def up() -> bool:
            try:
                async with httpx2.AsyncClient(timeout=2) as client:
                    return (await client.get(f"{self.url}/seen")).status_code == 200
            except httpx2.HTTPError:
                return False

        async with asyncio.timeout(60):
            while not await up():
                assert self.proc.returncode is None, self.log.read_text()[-3000:]
                await asyncio.sleep(0.1)

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def test_every_event_arrives_through_receiver_crashes_and_failures(
    tmp_path: Path, db: Path | str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    port = free_port()
    config = write_config(tmp_path, emulator, port, db)
    log_db = tmp_path / "received.db"
    receiver = ReceiverProcess(tmp_path, config, port)
    await receiver.start()
    daemon_log = tmp_path / "daemon.log"
    with daemon_log.open("wb") as out:
        daemon = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "router.cli",
            "--config",
            str(config),
            "daemon",
            env=env(),
            cwd=str(tmp_path),
            stdout=out,
            stderr=out,
        )
    kills = 0
    try:
        async with httpx2.AsyncClient(base_url=receiver.url, timeout=60) as client:
            for tag in TAGS:
                items = [{"key": f"{tag}-{i}", "text": f"item {i} of {tag}"} for i in range(PER_TAG)]
                answer = await client.post("/jobs", json={"tag": tag, "items": items})
                assert answer.status_code == 202, answer.text

        received = lambda: one(log_db, "SELECT COUNT(*) FROM received")  # noqa: E731
        refused = lambda: one(  # noqa: E731
            db,
            "SELECT COUNT(*) FROM deliveries WHERE state = 'pending'"
            " AND substr(last_error, 1, 12) = 'ConnectError'",
        )

        async def drive(condition: Any, what: str) -> None:
            """End the batches the daemon has sent, on the emulator's clock, until `condition`."""
            try:
                async with asyncio.timeout(240):
                    while not condition():
                        assert daemon.returncode is None, daemon_log.read_text()[-3000:]
                        emulator.end_batches()
                        await asyncio.sleep(0.05)
            except TimeoutError:
                raise AssertionError(
                    f"no {what} after 240 s; daemon log:\n{daemon_log.read_text()[-3000:]}"
                ) from None

        for threshold in (150, 700):
            await drive(lambda t=threshold: received() >= t, f"{threshold} deliveries")
            await receiver.kill()
            kills += 1
            await until(
                lambda: refused() > 0, timeout=60, what="a delivery refused while the receiver is down"
            )
            await receiver.start()

        def settled() -> bool:
            final = one(db, "SELECT COUNT(*) FROM requests WHERE state IN ('succeeded', 'failed')")
            open_ = one(db, "SELECT COUNT(*) FROM outbox WHERE routed = 0") + one(
                db, "SELECT COUNT(*) FROM deliveries WHERE state = 'pending'"
            )
            drained = one(db, "SELECT COUNT(*) FROM outbox WHERE type = 'tag.drained'")
            return final == len(TAGS) * PER_TAG and drained == len(TAGS) and open_ == 0

        await drive(settled, "every request final and every delivery done")
    finally:
        await receiver.stop()
        if daemon.returncode is None:
            daemon.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(daemon.wait(), 30)
        except TimeoutError:
            daemon.kill()
            code = await daemon.wait()
    assert code == 0, daemon_log.read_text()[-3000:]
    assert kills == 2

    events = [
        OutboxEvent(int(i), str(t), float(a), g, str(p))
        for i, t, a, g, p in rows(db, "SELECT id, type, created_at, tag, payload FROM outbox ORDER BY id")
    ]
    by_type: dict[str, int] = {}
    for e in events:
        by_type[e.type] = by_type.get(e.type, 0) + 1
    states = dict(rows(db, "SELECT state, COUNT(*) FROM deliveries GROUP BY state"))
    attempts = one(db, "SELECT SUM(attempts) FROM deliveries")
    got = rows(log_db, "SELECT id, verified, status FROM received")
    seen = {i: n for i, n in rows(tmp_path / "receiver.db", "SELECT id, times FROM seen")}
    wanted = {message_id(e) for e in events}
    lost = wanted - set(seen)
    figures = {
        "events emitted": len(events),
        "events by type": by_type,
        "deliveries delivered": states.get("delivered", 0),
        "deliveries failed": states.get("failed", 0),
        "attempts": attempts,
        "retried (attempts beyond the first)": attempts - len(events),
        "deliveries received by the receiver": len(got),
        "answered 500 (injected)": sum(1 for _, _, s in got if s == 500),
        "duplicates seen by the receiver (same webhook-id)": len(got) - len({i for i, _, _ in got}),
        "duplicates the example de-duplicated": sum(n - 1 for n in seen.values()),
        "lost": len(lost),
        "signatures verified by standardwebhooks": sum(v for _, v, _ in got),
        "receiver kills": kills,
    }
    engine = "postgresql" if isinstance(db, str) else "sqlite"
    print(f"\nwebhook delivery test figures ({engine}):\n" + json.dumps(figures, indent=2))
    assert lost == set() and set(seen) == wanted
    assert states == {"delivered": len(events)}
    assert by_type["tag.drained"] == len(TAGS) and by_type["request.completed"] == len(TAGS) * PER_TAG
    assert figures["signatures verified by standardwebhooks"] == len(got)
    assert figures["answered 500 (injected)"] > 0 and figures["retried (attempts beyond the first)"] > 0
    # Every duplicate the receiver saw carried an id it had handled: it answered it once more.
    assert figures["duplicates seen by the receiver (same webhook-id)"] >= figures["answered 500 (injected)"]
    # Each tag's results were fetched when its tag.drained arrived.
    for tag in TAGS:
        lines = (tmp_path / "results" / f"{tag}.jsonl").read_text().splitlines()
        assert len(lines) == PER_TAG and all("text" in json.loads(line) for line in lines)
