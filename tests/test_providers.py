"""The provider interface: AnthropicProvider against the emulator through `Provider` alone,
and the engine's modules knowing no provider SDK."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

from router.emulator import Emulator
from router.providers.anthropic.provider import BATCH_FORMAT, AnthropicProvider
from router.providers.base import BatchFormat, Provider, RemoteBatch
from router.store import custom_id_for
from tests.helpers import ask

ROUTER = Path(__file__).resolve().parent.parent / "router"


@pytest.fixture
def provider(sdk: anthropic.AsyncAnthropic) -> Provider:
    return AnthropicProvider(sdk)


def framed(requests: dict[int, dict[str, Any]]) -> tuple[list[bytes], int]:
    """A batch body in BATCH_FORMAT's framing, in chunks, and its length by `body_bytes`."""
    frame = BATCH_FORMAT
    entries = [
        frame.entry_head % custom_id_for(rid).encode() + json.dumps(params).encode() + frame.entry_tail
        for rid, params in requests.items()
    ]
    chunks = [frame.body_head, frame.separator.join(entries), frame.body_tail]
    length = frame.body_bytes(
        requests=len(requests),
        params_bytes=sum(len(json.dumps(p).encode()) for p in requests.values()),
        custom_id_bytes=sum(len(custom_id_for(rid)) for rid in requests),
    )
    return chunks, length


class Body:
    """A streamed body that records whether the transport started reading it."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.started = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.started = True
        for chunk in self.chunks:
            yield chunk


async def create(provider: Provider, requests: dict[int, dict[str, Any]]) -> RemoteBatch:
    chunks, length = framed(requests)
    return await provider.create_batch(Body(chunks).__aiter__(), length=length, intent_id=1, model=None)


async def lines_of(provider: Provider, api_id: str) -> list[bytes]:
    async with provider.result_lines(api_id) as blocks:
        return [line async for block in blocks for line in block]


def test_the_anthropic_framing_is_the_batches_create_body() -> None:
    chunks, length = framed({7: ask("a"), 12345: ask("b")})
    body = b"".join(chunks)
    assert len(body) == length
    assert json.loads(body) == {
        "requests": [{"custom_id": "r7", "params": ask("a")}, {"custom_id": "r12345", "params": ask("b")}]
    }
    assert BATCH_FORMAT.body_bytes(requests=0, params_bytes=0, custom_id_bytes=0) == len(b'{"requests":[]}')


def test_a_batch_format_whose_overhead_disagrees_with_its_framing_is_refused() -> None:
    with pytest.raises(ValueError, match="entry_overhead is 25, but entry_head and entry_tail add 26"):
        BatchFormat(
            body_head=b"[",
            body_tail=b"]",
            separator=b",",
            entry_overhead=25,
            entry_head=b'{"custom_id":"%s","params":',
            entry_tail=b"}",
        )
    with pytest.raises(ValueError, match="one %s"):
        BatchFormat(
            body_head=b"", body_tail=b"", separator=b"\n", entry_overhead=0, entry_head=b"", entry_tail=b""
        )


async def test_create_retrieve_list_and_cancel(provider: Provider, emulator: Emulator) -> None:
    batch = await create(provider, {1: ask("one"), 2: ask("two")})
    assert (batch.ended, batch.cancel_requested, batch.request_total) == (False, False, 2)
    assert batch.created_at == pytest.approx(emulator.clock.now(), abs=1.0)
    assert batch.counts == {"processing": 2, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}

    assert await provider.retrieve_batch(batch.id) == batch
    listed = [b.id async for b in provider.list_batches(since=batch.created_at)]
    assert listed == [batch.id]
    assert [b async for b in provider.list_batches(since=batch.created_at + 1)] == []

    other = await create(provider, {3: ask("three")})
    await provider.cancel_batch(other.id)
    assert (await provider.retrieve_batch(other.id)).cancel_requested
    assert [b.id async for b in provider.list_batches(since=batch.created_at)] == [other.id, batch.id]

    emulator.end_batches()
    ended = await provider.retrieve_batch(batch.id)
    assert ended.ended and ended.ended_at is not None and ended.ended_at >= ended.created_at
    assert ended.counts["succeeded"] == 2


async def test_result_lines_are_the_api_lines_unchanged(
    provider: Provider, sdk: anthropic.AsyncAnthropic, emulator: Emulator
) -> None:
    batch = await create(provider, {1: ask("one"), 2: ask("two [emulator:error=rate_limit_error]")})
    emulator.end_batches()
    async with sdk.messages.batches.with_streaming_response.results(batch.id) as response:
        raw = b"".join([chunk async for chunk in response.iter_bytes()])
    got = await lines_of(provider, batch.id)
    assert got == [line for line in raw.split(b"\n") if line.strip()]
    kinds = {json.loads(line)["custom_id"]: json.loads(line)["result"]["type"] for line in got}
    assert kinds == {"r1": "succeeded", "r2": "errored"}


async def test_outcomes_are_what_real_time_returns_and_raises(
    provider: Provider, sdk: anthropic.AsyncAnthropic, emulator: Emulator
) -> None:
    good, bad = ask("the same question"), ask("no [emulator:error=permission_error]")
    batch = await create(provider, {1: good, 2: bad})
    emulator.end_batches()
    results = {
        json.loads(line)["custom_id"]: json.loads(line)["result"]
        for line in await lines_of(provider, batch.id)
    }

    message = provider.outcome(results["r1"])
    realtime = await sdk.messages.create(**good)
    assert isinstance(message, anthropic.types.Message)
    # The same reply but for its id and the service tier the usage names.
    assert (message.usage.service_tier, realtime.usage.service_tier) == ("batch", "standard")
    same = {"id": True, "usage": {"service_tier"}}
    assert message.model_dump(exclude=same) == realtime.model_dump(exclude=same)

    error = provider.outcome(results["r2"])
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        await sdk.messages.create(**bad)
    assert type(error) is type(caught.value)
    assert isinstance(error, anthropic.APIStatusError)
    assert (
        (error.status_code, error.type)
        == (caught.value.status_code, caught.value.type)
        == (403, "permission_error")
    )

    with pytest.raises(ValueError, match="no provider outcome for a 'expired' result"):
        provider.outcome({"type": "expired"})


async def test_a_real_time_reply_and_error_in_canonical_form(
    provider: Provider, sdk: anthropic.AsyncAnthropic, emulator: Emulator
) -> None:
    reply = await provider.send(ask("hello"))
    result = provider.reply_result(reply)
    assert result["type"] == "succeeded" and result["message"]["id"] == reply.id
    assert provider.outcome(result) == reply
    usage = provider.reply_usage(reply)
    assert usage is not None and usage[0] == reply.model and usage[1].output == reply.usage.output_tokens
    assert provider.reply_usage(object()) is None  # a stream, say: no usage

    with pytest.raises(anthropic.BadRequestError) as caught:
        await provider.send(ask("no [emulator:error=invalid_request_error]"))
    assert not provider.is_retryable(caught.value)
    errored = provider.error_result(caught.value)
    assert errored is not None and errored["type"] == "errored"
    assert errored["error"]["error"]["type"] == "invalid_request_error"
    assert provider.error_result(ValueError("not the API")) is None

    emulator.faults.fail_next("messages", status=529, error_type="overloaded_error")
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        await provider.send(ask("hello"))
    assert provider.is_retryable(overloaded.value)


async def test_which_create_failures_are_certain(provider: Provider, emulator: Emulator) -> None:
    chunks, length = framed({1: ask("one")})

    emulator.faults.fail_next("batches.create", status=500)
    body = Body(chunks)
    with pytest.raises(anthropic.InternalServerError) as answered:
        await provider.create_batch(body.__aiter__(), length=length, intent_id=1, model=None)
    assert provider.is_certain_failure(answered.value, body_started=body.started)

    emulator.faults.fail_next("batches.create", drop=True)
    body = Body(chunks)
    with pytest.raises(anthropic.APIConnectionError) as dropped:
        await provider.create_batch(body.__aiter__(), length=length, intent_id=1, model=None)
    assert body.started  # the body went out: the batch may exist
    assert not provider.is_certain_failure(dropped.value, body_started=True)

    async with anthropic.AsyncAnthropic(base_url="http://127.0.0.1:9", api_key="k", max_retries=0) as nowhere:
        refused = AnthropicProvider(nowhere)
        body = Body(chunks)
        with pytest.raises(anthropic.APIConnectionError) as unreachable:
            await refused.create_batch(body.__aiter__(), length=length, intent_id=1, model=None)
        assert not body.started  # connection refused: the request never got to its body
        assert refused.is_certain_failure(unreachable.value, body_started=body.started)


async def test_retry_after_not_found_and_transient(provider: Provider, emulator: Emulator) -> None:
    emulator.faults.fail_next("batches.retrieve", status=429, retry_after=7)
    with pytest.raises(anthropic.RateLimitError) as limited:
        await provider.retrieve_batch("msgbatch_whatever")
    assert provider.retry_after(limited.value) == 7.0
    assert provider.is_transient(limited.value) and not provider.is_not_found(limited.value)

    with pytest.raises(anthropic.NotFoundError) as missing:
        await provider.retrieve_batch("msgbatch_never_created")
    assert provider.is_not_found(missing.value) and provider.is_transient(missing.value)
    assert provider.retry_after(missing.value) is None

    request = httpx2.Request("GET", "https://api.anthropic.com/v1/messages/batches/x")
    response = httpx2.Response(529, request=request, headers={"retry-after-ms": "1500", "retry-after": "9"})
    overloaded = anthropic.InternalServerError("overloaded", response=response, body=None)
    assert provider.retry_after(overloaded) == 1.5  # the finer header wins
    assert provider.retry_after(None) is None and provider.retry_after(ValueError()) is None
    assert provider.is_transient(httpx2.ReadError("stream cut")) and not provider.is_transient(ValueError())


def _imports_of(path: Path, *, type_checking: bool = False) -> set[str]:
    """The modules a module imports, wherever the import stands (a function body included):
    absolute ones by their top-level package, relative ones as written (``..providers.base``).
    `if TYPE_CHECKING:` blocks are left out unless `type_checking`."""
    return _imports_in(path.read_text(), type_checking=type_checking)


def _imports_in(source: str, *, type_checking: bool = False) -> set[str]:
    tree = ast.parse(source)
    skip: set[int] = set()
    for node in ast.walk(tree):
        if not type_checking and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
        elif (  # importlib.import_module("openai"), __import__("openai")
            isinstance(node, ast.Call)
            and ast.unparse(node.func) in ("importlib.import_module", "import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value.split(".")[0])
    return found


ENGINE = ["batcher.py", "poller.py", "reconcile.py", "deadlines.py", "realtime.py", "watcher.py", "daemon.py"]
STORE = sorted(str(p.relative_to(ROUTER)) for p in (ROUTER / "store").rglob("*.py"))


@pytest.mark.parametrize("module", [*ENGINE, *STORE])
def test_the_engine_and_the_store_import_no_provider(module: str) -> None:
    imports = _imports_of(ROUTER / module)
    assert not imports & {"anthropic", "openai"}, imports
    # The interface (providers.base) and its helpers, never one provider's package.
    assert not [i for i in imports if "providers.anthropic" in i or "providers.openai" in i], imports


SDKS = {"anthropic", "openai"}


def test_the_import_walk_finds_type_checking_and_function_local_imports() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from anthropic import AsyncAnthropic\n"
        "def client():\n    import openai.types\n    return openai\n"
        "def later():\n    return importlib.import_module('openai.resources')\n"
    )
    assert _imports_in(source) == {"typing", "openai"}
    assert _imports_in(source, type_checking=True) == {"typing", "anthropic", "openai"}
    assert SDKS <= _imports_of(ROUTER / "providers" / "anthropic" / "params.py") | _imports_of(
        ROUTER / "providers" / "openai" / "params.py"
    )


def test_outside_the_providers_and_the_emulator_no_module_imports_a_provider_sdk() -> None:
    """The SDKs are the providers' (router/providers/) and the emulator's: the Router, the CLI,
    the daemon and the demo reach them through the providers' modules, type hints included."""
    modules = [
        p
        for p in sorted(ROUTER.rglob("*.py"))
        if p.relative_to(ROUTER).parts[0] not in ("providers", "emulator")
    ]
    assert len(modules) > 40  # the walk sees the whole package
    importing = {
        str(path.relative_to(ROUTER)): sorted(found)
        for path in modules
        if (found := _imports_of(path, type_checking=True) & SDKS)
    }
    assert importing == {}


def test_an_anthropic_only_router_never_loads_the_openai_sdk(tmp_path: Path) -> None:
    """The openai SDK takes seconds to import: an app, a CLI command or the daemon that only
    talks to Anthropic must not pay for it (a real process, so no other test's imports count)."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        import router, router.cli, router.create_params, router.daemon, router.demo
        from router import Router, RouterConfig

        async def main():
            async with Router(RouterConfig.default(store_path=sys.argv[1]), scheduler=False) as client:
                assert sorted(client.providers) == ["anthropic"], client.providers
                client.messages, client.results, client.models, client.beta

        asyncio.run(main())
        assert "anthropic" in sys.modules
        print(sorted(name for name in sys.modules if name.split(".")[0] == "openai"))
        """
    )
    env = {name: value for name, value in os.environ.items() if not name.startswith("OPENAI_")}
    # Never called: the Router builds its client at open, and sends nothing here.
    env.update(ANTHROPIC_API_KEY="unused", ANTHROPIC_BASE_URL="http://127.0.0.1:9")
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "router.db")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
