"""`client.openai`: the Router as an `openai.AsyncOpenAI` for chat completions.

The real `openai` SDK (strict validation) over HTTP to the emulator, real SQLite files.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from openai import AsyncStream
from openai.types.chat import ChatCompletion

from router import InvalidRequestError, Router, RouterConfig
from router.config import load_config
from router.emulator import Emulator
from router.errors import ConfigError
from router.policy import Policy, format_effective_policy
from tests.helpers import ask, run_batches, stored

GPT = "gpt-5.4-mini"


def chat(text: str, **extra: Any) -> dict[str, Any]:
    """chat.completions.create() keywords for a one-turn question."""
    return {"model": GPT, "messages": [{"role": "user", "content": text}], **extra}


@pytest.fixture
async def oai(emulator: Emulator) -> AsyncIterator[openai.AsyncOpenAI]:
    """The real `openai` SDK on the emulator, validating every response body."""
    client = openai.AsyncOpenAI(
        base_url=f"{emulator.url}/v1", api_key="test-key", max_retries=0, _strict_response_validation=True
    )
    yield client
    await client.close()


@pytest.fixture
async def router(
    config: RouterConfig, sdk: anthropic.AsyncAnthropic, oai: openai.AsyncOpenAI, emulator: Emulator
) -> AsyncIterator[Router]:
    async with Router(config, anthropic=sdk, openai=oai, clock=emulator.clock.now) as client:
        yield client


def shape(completion: ChatCompletion) -> dict[str, Any]:
    """What a completion is, whatever its id and time: its fields and content."""
    body = completion.model_dump(exclude={"id", "created"})
    return body


# ---------------------------------------------------------------- the real-time lane


async def test_realtime_create_is_the_sdk_call(router: Router, oai: openai.AsyncOpenAI) -> None:
    direct = await oai.chat.completions.create(**chat("Name a colour."))
    routed = await router.openai.chat.completions.create(**chat("Name a colour."), latency="realtime")
    assert type(routed) is ChatCompletion
    assert shape(routed) == shape(direct)
    assert routed.choices[0].message.content


async def test_realtime_usage_goes_to_the_ledger(router: Router) -> None:
    reply = await router.openai.chat.completions.create(**chat("Ledger me."), latency="realtime", tag="t1")
    assert reply.usage is not None
    totals = await router.store.ledger_totals()
    assert [(t["lane"], t["model"], t["requests"], t["output_tokens"]) for t in totals] == [
        ("realtime", reply.model, 1, reply.usage.completion_tokens)
    ]


async def test_stream_passes_through_on_the_realtime_lane(router: Router, oai: openai.AsyncOpenAI) -> None:
    stream = await router.openai.chat.completions.create(
        **chat("Stream it."), latency="realtime", stream=True
    )
    assert isinstance(stream, AsyncStream)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    direct = await oai.chat.completions.create(**chat("Stream it."))
    assert text == direct.choices[0].message.content


async def test_stream_for_a_batch_class_is_refused_before_anything_is_stored(
    router: Router, emulator: Emulator
) -> None:
    with pytest.raises(InvalidRequestError, match=r"^stream: class 'daily' is deferred to batches"):
        await router.openai.chat.completions.create(**chat("x"), latency="daily", stream=True)
    with pytest.raises(InvalidRequestError, match=r"^stream: "):
        await router.openai.chat.completions.submit(**chat("x"), latency="daily", stream=True)
    assert await router.store.state_counts() == {}
    assert emulator.journal == []


async def test_a_realtime_error_is_the_sdk_exception(router: Router, oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as direct:
        await oai.chat.completions.create(**chat("[emulator:error=invalid_request_error]"))
    with pytest.raises(openai.BadRequestError) as routed:
        await router.openai.chat.completions.create(
            **chat("[emulator:error=invalid_request_error]"), latency="realtime"
        )
    assert routed.value.status_code == direct.value.status_code == 400
    assert str(routed.value) == str(direct.value)


async def test_other_resources_are_the_sdk_clients(router: Router, oai: openai.AsyncOpenAI) -> None:
    assert router.openai.files is oai.files
    assert router.openai.batches is oai.batches


# ---------------------------------------------------------------- keywords of the other SDK


@pytest.mark.parametrize("keyword", ["system", "max_tokens_to_sample", "top_k", "bogus"])
@pytest.mark.parametrize("latency", ["realtime", "daily"])
async def test_an_anthropic_keyword_on_chat_completions_is_the_openai_sdks_type_error(
    router: Router, oai: openai.AsyncOpenAI, emulator: Emulator, keyword: str, latency: str
) -> None:
    with pytest.raises(TypeError) as sdk_error:
        await oai.chat.completions.create(**chat("x"), **{keyword: 1})
    with pytest.raises(TypeError) as routed:
        await router.openai.chat.completions.create(**chat("x"), latency=latency, **{keyword: 1})
    assert str(routed.value) == str(sdk_error.value)
    assert str(routed.value) == f"AsyncCompletions.create() got an unexpected keyword argument '{keyword}'"
    assert await router.store.state_counts() == {}
    assert emulator.journal == []


@pytest.mark.parametrize("keyword", ["response_format", "n", "logprobs", "frequency_penalty"])
@pytest.mark.parametrize("latency", ["realtime", "daily"])
async def test_an_openai_keyword_on_messages_is_the_anthropic_sdks_type_error(
    router: Router, sdk: anthropic.AsyncAnthropic, emulator: Emulator, keyword: str, latency: str
) -> None:
    with pytest.raises(TypeError) as sdk_error:
        await sdk.messages.create(**ask("x"), **{keyword: 1})
    with pytest.raises(TypeError) as routed:
        await router.messages.create(**ask("x"), latency=latency, **{keyword: 1})
    assert str(routed.value) == str(sdk_error.value)
    assert str(routed.value) == f"AsyncMessages.create() got an unexpected keyword argument '{keyword}'"
    assert await router.store.state_counts() == {}
    assert emulator.journal == []


async def test_routing_keywords_are_checked_as_for_messages(router: Router) -> None:
    with pytest.raises(InvalidRequestError, match=r"^tag: "):
        await router.openai.chat.completions.create(**chat("x"), latency="daily", tag=5)
    with pytest.raises(InvalidRequestError, match=r"^key: "):
        await router.openai.chat.completions.submit(**chat("x"), latency="daily", key="")
    with pytest.raises(InvalidRequestError, match='unknown latency class "dayly"'):
        await router.openai.chat.completions.create(**chat("x"), latency="dayly")
    assert await router.store.state_counts() == {}


async def test_a_bad_deferred_body_is_refused_naming_the_field(router: Router) -> None:
    with pytest.raises(InvalidRequestError, match=r"^messages\.0\.role: "):
        await router.openai.chat.completions.submit(
            model=GPT, messages=[{"role": "robot", "content": "x"}], latency="daily"
        )
    with pytest.raises(InvalidRequestError, match=r"^timeout: "):
        await router.openai.chat.completions.submit(**chat("x"), latency="daily", timeout=5)
    assert await router.store.state_counts() == {}


# ---------------------------------------------------------------- the deferred lane (stored)


async def test_submit_stores_the_chat_completions_body(router: Router) -> None:
    ticket = await router.openai.chat.completions.submit(
        **chat("Later."), latency="daily", key="oa-1", tag="nightly", max_completion_tokens=20
    )
    assert ticket.key == "oa-1" and ticket.latency == "daily" and ticket.created
    row = await router.results.status("oa-1")
    assert (row.state, row.tag, row.model) == ("pending", "nightly", GPT)
    with pytest.raises(InvalidRequestError, match="is real time; submit"):
        await router.openai.chat.completions.submit(**chat("x"), latency="realtime")


# ---------------------------------------------------------------- the deferred lane, end to end


@pytest.fixture
async def oa_engine(
    config: RouterConfig,
    sdk: anthropic.AsyncAnthropic,
    oai: openai.AsyncOpenAI,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Router]:
    """A Router with OpenAI configured: the engine batches each row through its provider."""
    async with Router(config, anthropic=sdk, openai=oai, clock=emulator.clock.now) as client:
        yield client


async def test_a_deferred_create_returns_the_chat_completion_of_a_direct_call(
    oa_engine: Router, oai: openai.AsyncOpenAI, emulator: Emulator
) -> None:
    call = asyncio.create_task(
        oa_engine.openai.chat.completions.create(**chat("Later, please."), latency="daily")
    )
    await stored(oa_engine, 1)
    assert emulator.journal == []  # nothing sent before the flush
    await run_batches(oa_engine, emulator)
    routed = await asyncio.wait_for(call, 10)
    direct = await oai.chat.completions.create(**chat("Later, please."))
    assert type(routed) is ChatCompletion
    assert shape(routed) == shape(direct)


async def test_submit_then_results_wait_by_key(oa_engine: Router, emulator: Emulator) -> None:
    ticket = await oa_engine.openai.chat.completions.submit(**chat("Keyed."), latency="daily", key="k-1")
    assert ticket.created
    await run_batches(oa_engine, emulator)
    completion = await oa_engine.results.wait("k-1", timeout=10)
    assert isinstance(completion, ChatCompletion)
    assert completion.model == GPT and completion.choices[0].message.content


async def test_a_failed_deferred_request_raises_what_real_time_raises(
    oa_engine: Router, oai: openai.AsyncOpenAI, emulator: Emulator
) -> None:
    text = "[emulator:error=invalid_request_error]"
    with pytest.raises(openai.BadRequestError) as direct:
        await oai.chat.completions.create(**chat(text))
    call = asyncio.create_task(oa_engine.openai.chat.completions.create(**chat(text), latency="daily"))
    await stored(oa_engine, 1)
    await run_batches(oa_engine, emulator)
    with pytest.raises(openai.BadRequestError) as deferred:
        await asyncio.wait_for(call, 10)
    assert deferred.value.status_code == direct.value.status_code == 400
    assert deferred.value.type == direct.value.type == "invalid_request_error"


async def test_map_yields_every_key_with_its_outcome(oa_engine: Router, emulator: Emulator) -> None:
    items = [
        chat("one", key="m-1"),
        chat("two", key="m-2"),
        {"model": GPT, "messages": [{"role": "user", "content": "x"}], "key": "bad", "system": "s"},
        chat("[emulator:error=invalid_request_error]", key="m-err"),
    ]
    results: dict[str, object] = {}

    async def consume() -> None:
        async for key, outcome in oa_engine.openai.chat.completions.map(items, latency="daily"):
            results[key] = outcome

    task = asyncio.create_task(consume())
    await stored(oa_engine, 3)
    await run_batches(oa_engine, emulator)
    await asyncio.wait_for(task, 10)
    assert isinstance(results["m-1"], ChatCompletion) and isinstance(results["m-2"], ChatCompletion)
    assert isinstance(results["m-err"], openai.BadRequestError)
    assert isinstance(results["bad"], InvalidRequestError)
    assert "AsyncCompletions.create() got an unexpected keyword argument 'system'" in str(results["bad"])
    with pytest.raises(InvalidRequestError, match="is real time; map"):
        oa_engine.openai.chat.completions.map(items, latency="realtime")


# ---------------------------------------------------------------- rules by provider and model


RULES = """
[[rules]]
tag = "bulk-*"
provider = "openai"
class = "weekly"

[[rules]]
model = "gpt-5*"
class = "daily"

[[rules]]
provider = "anthropic"
tag = "bulk-*"
class = "hourly"
"""


@pytest.fixture
def rules_config(db_path: Path, emulator: Emulator) -> RouterConfig:
    return RouterConfig.from_toml_text(RULES).with_store(str(db_path)).with_base_url(emulator.url)


async def test_rules_route_by_provider_and_model_glob(
    rules_config: RouterConfig, sdk: anthropic.AsyncAnthropic, oai: openai.AsyncOpenAI, emulator: Emulator
) -> None:
    async with Router(rules_config, anthropic=sdk, openai=oai, clock=emulator.clock.now) as client:
        completions = client.openai.chat.completions
        assert (await completions.submit(**chat("a"), tag="bulk-1")).latency == "weekly"
        assert (await completions.submit(**chat("b"))).latency == "daily"  # model glob, no tag
        # The Anthropic side: its own provider rule; an untagged Claude call gets the default.
        assert (await client.messages.submit(**ask("c"), tag="bulk-1")).latency == "hourly"
        with pytest.raises(InvalidRequestError, match="is real time; submit"):
            await client.messages.submit(**ask("d"))
        # A model no rule names on the OpenAI side goes real time (the default class).
        reply = await completions.create(model="o4-mini", messages=[{"role": "user", "content": "e"}])
        assert isinstance(reply, ChatCompletion)
    policy = Policy(rules_config)
    assert policy.resolve(None, "bulk-1", "gpt-4o", provider="openai").name == "weekly"
    assert policy.resolve(None, None, "gpt-5.4", provider="anthropic").name == "daily"
    assert policy.resolve(None, "bulk-1", "claude-haiku-4-5").name == "hourly"


def test_validate_shows_the_provider_column(rules_config: RouterConfig) -> None:
    text = format_effective_policy(rules_config, "rules.toml")
    rows = [line.split() for line in text.splitlines() if line.strip().startswith(("rule ", "rules["))]
    assert rows == [
        ["rule", "tag", "model", "provider", "->", "class"],
        ["rules[0]", "bulk-*", "*", "openai", "weekly"],
        ["rules[1]", "*", "gpt-5*", "*", "daily"],
        ["rules[2]", "bulk-*", "*", "anthropic", "hourly"],
    ]


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ('[[rules]]\nclass = "daily"\n', "rules[0].tag", "a rule needs at least one"),
        ('[[rules]]\nprovider = "gemini"\nclass = "daily"\n', "rules[0].provider", "matches no provider"),
        ('[[rules]]\nprovider = 5\nclass = "daily"\n', "rules[0].provider", 'a provider glob like "openai"'),
    ],
)
def test_a_bad_rule_names_the_file_and_key(tmp_path: Path, text: str, where: str, problem: str) -> None:
    path = tmp_path / "router.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message and where in message and problem in message
