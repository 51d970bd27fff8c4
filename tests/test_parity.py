"""Drop-in parity with `AsyncAnthropic`: keywords, raw responses and the resources passed through.

Everything runs through the real SDK in strict validation mode against the emulator.
"""

from __future__ import annotations

import asyncio

import anthropic
import pytest
from anthropic.types import Message
from anthropic.types.beta import BetaMessage

from router import InvalidRequestError, Router, RouterConfig, RouterError
from router.create_params import CreateParams, CreateParamsStreaming, SubmitParams
from router.emulator import Emulator
from router.params import ROUTER_KEYWORDS
from router.providers.anthropic.params import SDK_CREATE_KEYWORDS
from tests.helpers import MODEL, ask, reply_text, run_batches, stored

UNEXPECTED = r"create\(\) got an unexpected keyword argument 'temprature'"


def keys(typed_dict: type) -> frozenset[str]:
    return frozenset(typed_dict.__required_keys__ | typed_dict.__optional_keys__)


# ---------------------------------------------------------------- unknown keywords


async def test_the_sdk_itself_raises_this_type_error(sdk: anthropic.AsyncAnthropic) -> None:
    """The reference: the message the router copies is the SDK's own."""
    with pytest.raises(TypeError, match=UNEXPECTED):
        await sdk.messages.create(**ask("x"), temprature=0.5)


@pytest.mark.parametrize("latency", ["realtime", "daily"])
async def test_an_unknown_keyword_is_a_type_error_on_both_lanes_before_anything_happens(
    router: Router, emulator: Emulator, latency: str
) -> None:
    call = router.messages.create
    with pytest.raises(TypeError, match=UNEXPECTED):
        await call(**ask("x"), latency=latency, temprature=0.5)
    with pytest.raises(TypeError, match=UNEXPECTED):
        await router.messages.with_raw_response.create(**ask("x"), latency=latency, temprature=0.5)
    with pytest.raises(TypeError, match=r"^submit\(\) got an unexpected keyword argument 'temprature'"):
        await router.messages.submit(**ask("x"), latency="daily", temprature=0.5)
    assert await router.store.state_counts() == {}
    assert emulator.journal == []


async def test_the_unknown_keyword_comes_before_bad_values_and_a_typo_gets_a_hint(
    router: Router, emulator: Emulator
) -> None:
    # As with Python's own binding, the keyword is checked before any value (here a bad tag).
    with pytest.raises(TypeError, match=r"'max_token'; did you mean 'max_tokens'\?"):
        await router.messages.create(model=MODEL, max_token=5, messages=[], tag=5, latency="daily")
    # A bad value of a known keyword stays an InvalidRequestError naming the field.
    with pytest.raises(InvalidRequestError, match="tag"):
        await router.messages.create(**ask("x"), tag=5, latency="daily")
    assert emulator.journal == []


async def test_a_map_item_with_an_unknown_field_is_still_yielded_as_bad_input(router: Router) -> None:
    # Items are data, not a call: the bad one is yielded with its error and the rest go on.
    items = [ask("x", key="bad", temprature=0.5)]
    outcomes = [o async for o in router.messages.map(items, latency="daily")]
    assert len(outcomes) == 1 and outcomes[0][0] == "bad"
    assert isinstance(outcomes[0][1], InvalidRequestError) and "temprature" in str(outcomes[0][1])


@pytest.mark.parametrize("header", ["workspace_id", "user_profile_id"])
async def test_keywords_the_sdk_sends_as_headers_are_refused_for_a_batch(
    router: Router, emulator: Emulator, header: str
) -> None:
    # Stored in the params, they would make the Batch API reject every batch holding the request.
    with pytest.raises(InvalidRequestError, match=rf"^{header}: per-call transport options and headers"):
        await router.messages.submit(**ask("x"), latency="daily", **{header: "wrkspc_1"})
    assert await router.store.state_counts() == {}
    await router.messages.create(**ask("real time takes it"), latency="realtime", **{header: "wrkspc_1"})
    assert emulator.journal[-1].headers[f"anthropic-{header.replace('_', '-')}"] == "wrkspc_1"


def test_the_typed_keywords_are_the_sdks_plus_the_routers() -> None:
    """The TypedDicts come from the SDK's, so they cannot drift from what the runtime check accepts."""
    assert keys(CreateParams) == SDK_CREATE_KEYWORDS | ROUTER_KEYWORDS
    assert keys(CreateParamsStreaming) == SDK_CREATE_KEYWORDS | ROUTER_KEYWORDS
    # A stored request has a body only: no per-call transport options.
    transport = {"extra_headers", "extra_query", "timeout"}
    assert keys(SubmitParams) == (SDK_CREATE_KEYWORDS | ROUTER_KEYWORDS) - transport


# ---------------------------------------------------------------- with_raw_response


async def test_raw_response_on_the_real_time_lane_is_the_sdks_and_is_accounted(
    router: Router, emulator: Emulator
) -> None:
    response = await router.messages.with_raw_response.create(**ask("raw please"), latency="realtime")
    assert isinstance(response, anthropic.AsyncAPIResponse)
    assert response.http_response.status_code == 200
    assert response.headers["request-id"].startswith("req_emu_")
    message = await response.parse()
    assert isinstance(message, Message) and "raw please" in reply_text(message)
    assert await response.parse() is message  # the lane's parse is the SDK's cached one
    totals = await router.store.ledger_totals()
    assert [(t["lane"], t["requests"], t["input_tokens"]) for t in totals] == [
        ("realtime", 1, message.usage.input_tokens)
    ]
    assert await router.store.state_counts() == {}
    assert [e.path for e in emulator.journal] == ["/v1/messages"]


async def test_raw_response_of_a_stream_and_of_count_tokens(router: Router) -> None:
    response = await router.messages.with_raw_response.create(
        **ask("stream raw"), latency="realtime", stream=True
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    stream = await response.parse()
    kinds = [event.type async for event in stream]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    counted = await router.messages.with_raw_response.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "count"}]
    )
    assert (await counted.parse()).input_tokens > 0


async def test_raw_response_on_a_batch_class_is_refused_before_anything_is_stored(
    router: Router, emulator: Emulator
) -> None:
    with pytest.raises(InvalidRequestError, match=r"class 'daily' is deferred to batches.*no HTTP response"):
        await router.messages.with_raw_response.create(**ask("x"), latency="daily")
    assert await router.store.state_counts() == {}
    assert emulator.journal == []


# ---------------------------------------------------------------- resources passed through


async def test_messages_batches_is_the_sdks_and_sees_the_routers_batches(
    router: Router, emulator: Emulator
) -> None:
    call = asyncio.create_task(router.messages.create(**ask("via a batch"), latency="daily"))
    await stored(router, 1)
    report = await router.flush()
    assert router.messages.batches is router.anthropic.messages.batches
    listed = [b.id async for b in router.messages.batches.list()]
    assert listed == report.batches
    emulator.end_batches()
    ended = await router.messages.batches.retrieve(report.batches[0])
    assert ended.processing_status == "ended" and ended.request_counts.succeeded == 1
    await router.poll()
    assert "via a batch" in reply_text(await asyncio.wait_for(call, 5))
    raw = await router.messages.with_raw_response.batches.retrieve(report.batches[0])
    assert (await raw.parse()).id == report.batches[0]


async def test_models_list_and_retrieve_pass_through(router: Router, emulator: Emulator) -> None:
    listed = [m.id async for m in router.models.list(limit=5)]  # several pages of 5
    assert "claude-haiku-4-5-20251001" in listed and len(listed) == len(set(listed)) > 5
    model = await router.models.retrieve(MODEL)  # the alias resolves to the snapshot
    assert (model.id, model.display_name, model.type) == (
        "claude-haiku-4-5-20251001",
        "Claude Haiku 4.5",
        "model",
    )
    with pytest.raises(anthropic.NotFoundError):
        await router.models.retrieve("claude-nonexistent-1")
    assert {e.endpoint for e in emulator.journal} == {"models.list", "models.retrieve"}


async def test_beta_passes_through(router: Router, emulator: Emulator) -> None:
    reply = await router.beta.messages.create(**ask("beta hello"))
    assert isinstance(reply, BetaMessage) and "beta hello" in "".join(
        getattr(block, "text", "") for block in reply.content
    )
    beta_models = [m.id async for m in router.beta.models.list()]
    assert beta_models == [m.id async for m in router.models.list()]
    assert await router.store.state_counts() == {}  # beta calls are not routed
    assert emulator.journal[0].path == "/v1/messages"


async def test_passthroughs_need_an_open_router(config: RouterConfig) -> None:
    client = Router(config)
    for name in ("models", "beta"):
        with pytest.raises(RouterError, match="not open"):
            getattr(client, name)
    with pytest.raises(RouterError, match="not open"):
        _ = client.messages.batches


# ---------------------------------------------------------------- the emulator's models endpoint


async def test_emulator_models_page_newest_first_with_cursors(sdk: anthropic.AsyncAnthropic) -> None:
    every = (await sdk.models.list(limit=1000)).data
    assert not any(m.id == MODEL for m in every)  # an alias is not listed on its own
    first = await sdk.models.list(limit=2)
    assert [m.id for m in first.data] == [m.id for m in every[:2]]
    assert first.has_more and first.last_id == every[1].id
    after = await sdk.models.list(limit=2, after_id=every[1].id)
    assert [m.id for m in after.data] == [m.id for m in every[2:4]]
    before = await sdk.models.list(limit=2, before_id=every[3].id)
    assert [m.id for m in before.data] == [m.id for m in every[1:3]]
    assert (await sdk.models.list(lifecycle=["retired"])).data == []
    assert [m.id for m in (await sdk.models.list(lifecycle=["active"], limit=1000)).data] == [
        m.id for m in every
    ]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"limit": 0}, "limit: Input should be between 1 and 1000"),
        ({"after_id": "claude-nope"}, "after_id: no model with id 'claude-nope'"),
        ({"lifecycle": ["gone"]}, "lifecycle: Input should be"),
    ],
)
async def test_emulator_models_reject_bad_queries(
    sdk: anthropic.AsyncAnthropic, query: dict[str, object], message: str
) -> None:
    with pytest.raises(anthropic.BadRequestError, match=message):
        await sdk.models.list(**query)


async def test_a_deferred_request_still_works_next_to_the_passthroughs(
    router: Router, emulator: Emulator
) -> None:
    """The new attributes change nothing for the routed calls."""
    ticket = await router.messages.submit(**ask("still deferred"), latency="daily", key="p-1")
    await run_batches(router, emulator)
    assert "still deferred" in reply_text(await router.results.wait(ticket.key))
