"""`[[webhooks]]` through the command line, as a person runs it (subprocesses): config errors
name the key and exit 2 before anything starts, `validate` never shows a secret, and
`webhooks list | replay | test` against a real receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from router.config import StoreSettings
from router.store import OutboxPolicy, events, open_store
from tests.durability import env
from tests.receiver import receiver
from tests.test_outbox import batch_of, finish, new
from tests.test_store_contract import line

SECRET = "whsec_" + base64.b64encode(b"the cli test's secret, 32 bytes!").decode()


async def cli(*args: str, cwd: Path, secret: bool = True) -> tuple[int, str, str]:
    environment = env()
    environment.pop("HOOK_SECRET", None)
    if secret:
        environment["HOOK_SECRET"] = SECRET
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router.cli",
        *args,
        env=environment,
        cwd=str(cwd),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def config_with(tmp_path: Path, hook: str) -> Path:
    path = tmp_path / "router.toml"
    path.write_text(f'[store]\npath = "router.db"\n\n[[webhooks]]\n{hook}\n', encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("hook", "key", "says"),
    [
        ('url = "ftp://example.com/h"\nsecret_env = "HOOK_SECRET"', "webhooks[0].url", "http or https"),
        ('url = "http://example.com/h"\nsecret_env = "HOOK_SECRET"', "webhooks[0].url", "allow_http"),
        (
            'url = "https://example.com/h"\nsecret_env = "NOT_SET_ANYWHERE"',
            "webhooks[0].secret_env",
            "not set",
        ),
        (
            'url = "https://example.com/h"\nsecret_env = "HOOK_SECRET"\nevents = ["tag.drain"]',
            "webhooks[0].events",
            'unknown event "tag.drain" (did you mean "tag.drained"?)',
        ),
        ('url = "https://example.com/h"\nsecret = "whsec_abc"', "webhooks[0].secret", "unknown key"),
    ],
)
async def test_a_bad_webhook_is_a_config_error_naming_its_key(
    tmp_path: Path, hook: str, key: str, says: str
) -> None:
    config = config_with(tmp_path, hook)
    commands = [["validate", str(config)]]
    if key.endswith("secret_env"):  # the daemon refuses to start on the same check
        commands.append(["--config", str(config), "daemon"])
    for command in commands:
        code, out, err = await cli(*command, cwd=tmp_path)
        assert code == 2, (command, out, err)
        assert f"{key}:" in err and says in err, err
    assert not (tmp_path / "router.db").exists()  # nothing started, nothing stored
    assert "whsec_abc" not in err


async def test_validate_shows_each_endpoint_and_where_its_secret_comes_from_never_the_secret(
    tmp_path: Path,
) -> None:
    config = config_with(
        tmp_path, 'url = "https://example.com/h"\nsecret_env = "HOOK_SECRET"\nevents = ["tag.*", "request.*"]'
    )
    code, out, err = await cli("validate", str(config), cwd=tmp_path)
    assert code == 0, err
    assert "https://example.com/h: tag.drained, request.completed, request.failed, request.escalated" in out
    assert "$HOOK_SECRET" in out
    secret_body = SECRET.removeprefix("whsec_")
    assert secret_body not in out + err


async def test_webhooks_test_sends_a_signed_ping(tmp_path: Path) -> None:
    async with receiver() as hook:
        config = config_with(tmp_path, f'url = "{hook.url}"\nsecret_env = "HOOK_SECRET"')
        code, out, err = await cli("--config", str(config), "webhooks", "test", hook.url, cwd=tmp_path)
        assert code == 0, err
        assert "delivered (HTTP 200)" in out
        hook.answer = lambda n: 503
        code, out, err = await cli("--config", str(config), "webhooks", "test", hook.url, cwd=tmp_path)
        assert code == 1 and "not delivered: HTTP 503" in out
        # Another URL needs a secret named on the command line; an unset one is an error.
        code, out, err = await cli("--config", str(config), "webhooks", "test", hook.url + "?x", cwd=tmp_path)
        assert code == 2 and "--secret-env" in err
    ping = Webhook(SECRET).verify(hook.got[0].body, hook.got[0].headers)
    assert ping["type"] == "webhook.ping"
    assert len(hook.got) == 2


async def test_webhooks_list_and_replay(tmp_path: Path) -> None:
    async with receiver() as hook:
        config = config_with(
            tmp_path, f'url = "{hook.url}"\nsecret_env = "HOOK_SECRET"\nevents = ["tag.drained"]'
        )
        code, out, err = await cli("--config", str(config), "webhooks", "list", cwd=tmp_path)
        assert code == 2 and "no database" in err  # a reading command creates nothing
        store = await open_store(StoreSettings(path=tmp_path / "router.db"))
        try:
            store.set_outbox(OutboxPolicy(frozenset({events.TAG_DRAINED})))
            batch_id, ids = await batch_of(store, [new("a", "nightly")], "msgbatch_1")
            await finish(store, batch_id, [line(ids[0])])
            (event,) = await store.unrouted_events()
            await store.route_events([event.id], [(event.id, hook.url)], now=event.created_at)
            (delivery,) = await store.claim_deliveries(now=event.created_at, hold=1)
            await store.record_delivery(
                delivery.id, state="failed", next_at=None, status=404, error="HTTP 404", now=event.created_at
            )
        finally:
            await store.close()
        code, out, err = await cli("--config", str(config), "webhooks", "list", cwd=tmp_path)
        assert code == 0, err
        assert "tag.drained" in out and "failed" in out and "HTTP 404" in out and hook.url in out
        code, out, err = await cli("--config", str(config), "webhooks", "replay", str(event.id), cwd=tmp_path)
        assert code == 0, err
        assert f"evt_{event.id}_" in out and "delivered (HTTP 200)" in out
        code, out, err = await cli("--config", str(config), "webhooks", "replay", "999", cwd=tmp_path)
        assert code == 2 and "no event 999" in err
    (got,) = hook.got
    assert got.id.startswith(f"evt_{event.id}_") and got.payload["data"]["tag"] == "nightly"
    assert json.loads(got.body)["type"] == "tag.drained"
