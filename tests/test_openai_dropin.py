"""`client.openai`: the Router as an `openai.AsyncOpenAI` for chat completions.

The real `openai` SDK (strict validation) over HTTP to the emulator, real SQLite files.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest
from openai import AsyncStream
from openai.types.chat import ChatCompletion

from router import InvalidRequestError, Router, RouterConfig
from router.emulator import Emulator
from tests.helpers import ask

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
    async with Router(config, anthropic=sdk, openai_client=oai, clock=emulator.clock.now) as client:
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
