"""The emulator, exercised through the real SDK in strict validation mode over 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import math
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import Message
from anthropic.types.messages import MessageBatchIndividualResponse

from router.emulator import Emulator, EmulatorClock, FaultConfig, OutcomeConfig

START = 1_700_000_000.0
MODEL = "claude-haiku-4-5"
REPO = Path(__file__).resolve().parents[1]


# -- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    """An emulator on a manual clock: batches end only when the test moves time."""
    async with Emulator(clock=EmulatorClock(start=START), batch_seconds=60.0, seed=7) as emulator:
        yield emulator


def make_client(emu: Emulator, **options: Any) -> anthropic.AsyncAnthropic:
    settings: dict[str, Any] = {"api_key": "test", "max_retries": 0, **options}
    return anthropic.AsyncAnthropic(base_url=emu.url, _strict_response_validation=True, **settings)


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    sdk = make_client(emu)
    yield sdk
    await sdk.close()


@pytest.fixture
async def raw(emu: Emulator) -> AsyncIterator[httpx2.AsyncClient]:
    """Plain HTTP, for header-level checks the SDK would not let us make."""
    async with httpx2.AsyncClient(base_url=emu.url, timeout=30.0) as http:
        yield http


HEADERS = {"x-api-key": "test", "anthropic-version": "2023-06-01"}


def params(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": text}], **extra}


def request(custom_id: str, text: str, **extra: Any) -> Any:
    """One batch request (typed Any: the SDK's TypedDicts would reject the invalid ones we send)."""
    return {"custom_id": custom_id, "params": params(text, **extra)}


def text_of(message: Message) -> str:
    return "".join(getattr(block, "text", "") for block in message.content)


async def results_of(client: anthropic.AsyncAnthropic, batch_id: str) -> list[MessageBatchIndividualResponse]:
    """Results through the SDK, each line re-validated strictly (the SDK's JSONL decoder does not)."""
    lines = [line async for line in await client.messages.batches.results(batch_id)]
    return [MessageBatchIndividualResponse.model_validate(line.model_dump(mode="json")) for line in lines]


# -- /v1/messages -------------------------------------------------------------------------------


async def test_create_replies_deterministically(client: anthropic.AsyncAnthropic) -> None:
    message = await client.messages.create(**params("What is the capital of France?"))
    again = await client.messages.create(**params("What is the capital of France?"))
    assert text_of(message) == "Reply to: What is the capital of France?"
    assert message.type == "message" and message.role == "assistant" and message.model == MODEL
    assert message.id.startswith("msg_emu_") and message.id != again.id
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.output_tokens == 8  # words of the reply
    assert message.usage.input_tokens >= 1
    assert message.usage.cache_creation_input_tokens == 0 and message.usage.cache_read_input_tokens == 0
    assert message.usage == again.usage
    assert text_of(message) == text_of(again)


async def test_reply_quotes_last_user_message_text_blocks(client: anthropic.AsyncAnthropic) -> None:
    message = await client.messages.create(
        model=MODEL,
        max_tokens=500,
        messages=[
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "second "}, {"type": "text", "text": "x" * 300}],
            },
        ],
    )
    assert text_of(message) == "Reply to: second " + "x" * 193  # 200 characters quoted


async def test_reply_is_cut_at_max_tokens(client: anthropic.AsyncAnthropic) -> None:
    message = await client.messages.create(**{**params("one two three four five"), "max_tokens": 4})
    assert text_of(message) == "Reply to: one two"
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 4


async def test_stream_helper_matches_create(client: anthropic.AsyncAnthropic) -> None:
    body = params("Stream me a few words please, emulator")
    reference = await client.messages.create(**body)
    async with client.messages.stream(**body) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert len(pieces) > 1
    assert "".join(pieces) == text_of(reference)
    assert [b.model_dump() for b in final.content] == [b.model_dump() for b in reference.content]
    assert final.stop_reason == reference.stop_reason
    assert final.usage.output_tokens == reference.usage.output_tokens
    assert final.usage.input_tokens == reference.usage.input_tokens


async def test_create_stream_true_yields_the_api_event_sequence(client: anthropic.AsyncAnthropic) -> None:
    stream = await client.messages.create(**params("short one"), stream=True)
    events = [event async for event in stream]
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start" and kinds[1] == "content_block_start"
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    text = "".join(
        e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert text == "Reply to: short one"
    delta = next(e for e in events if e.type == "message_delta")
    assert delta.delta.stop_reason == "end_turn" and delta.usage.output_tokens == 4


async def test_stream_sse_wire_format(raw: httpx2.AsyncClient) -> None:
    response = await raw.post("/v1/messages", json=params("wire", stream=True), headers=HEADERS)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["request-id"].startswith("req_emu_")
    blocks = [b for b in response.text.split("\n\n") if b]
    for block in blocks:
        event_line, data_line = block.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        assert json.loads(data_line[6:])["type"] == event_line[7:]


async def test_count_tokens_adds_up_to_create_usage(client: anthropic.AsyncAnthropic) -> None:
    body = params("count me", system="You are terse.")
    counted = await client.messages.count_tokens(
        model=MODEL, messages=body["messages"], system=body["system"]
    )
    message = await client.messages.create(**body)
    usage = message.usage
    total = (
        usage.input_tokens + (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)
    )
    assert counted.input_tokens == total
    # The documented formula: ceil(characters of the canonical segments / 4).
    segments = [
        '{"text":"You are terse.","type":"text"}',
        'user:{"text":"count me","type":"text"}',
    ]
    assert counted.input_tokens == math.ceil(sum(map(len, segments)) / 4)


# -- validation -----------------------------------------------------------------------------------

INVALID_CREATE = [
    ({"max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}, "model"),
    ({**params("x"), "model": ""}, "model"),
    ({**params("x"), "model": 12}, "model"),
    ({"model": MODEL, "max_tokens": 10}, "messages"),
    ({**params("x"), "messages": []}, "messages"),
    ({**params("x"), "messages": "hi"}, "messages"),
    ({**params("x"), "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
    ({**params("x"), "messages": [{"role": "user"}]}, "messages.0.content"),
    ({**params("x"), "messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    (
        {**params("x"), "messages": [{"role": "user", "content": [{"text": "no type"}]}]},
        "messages.0.content.0.type",
    ),
    (
        {**params("x"), "messages": [{"role": "user", "content": [{"type": "text"}]}]},
        "messages.0.content.0.text",
    ),
    ({"model": MODEL, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({**params("x"), "max_tokens": 0}, "max_tokens"),
    ({**params("x"), "max_tokens": "10"}, "max_tokens"),
    ({**params("x"), "max_tokens": True}, "max_tokens"),
    ({**params("x"), "temperature": 3}, "temperature"),
    ({**params("x"), "system": 5}, "system"),
    ({**params("x"), "tools": [{"description": "nameless"}]}, "tools.0.name"),
    ({**params("x"), "frobnicate": True}, "frobnicate"),
    (
        {**params("x"), "system": [{"type": "text", "text": "s", "cache_control": {"type": "permanent"}}]},
        "system.0.cache_control.type",
    ),
    (
        {
            **params("x"),
            "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral", "ttl": "2h"}}],
        },
        "system.0.cache_control.ttl",
    ),
]


@pytest.mark.parametrize(("body", "field"), INVALID_CREATE)
async def test_create_validation_names_the_field(
    client: anthropic.AsyncAnthropic, body: dict[str, Any], field: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.post("/v1/messages", body=body, cast_to=Message)
    assert caught.value.type == "invalid_request_error"
    assert caught.value.api_message is not None and caught.value.api_message.startswith(f"{field}:")
    assert caught.value.request_id is not None and caught.value.request_id.startswith("req_emu_")
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": caught.value.api_message},
        "request_id": caught.value.request_id,
    }


async def test_create_accepts_every_sdk_keyword(client: anthropic.AsyncAnthropic) -> None:
    message = await client.messages.create(
        **params("all the knobs"),
        metadata={"user_id": "u-1"},
        stop_sequences=["STOP"],
        system=[{"type": "text", "text": "system"}],
        thinking={"type": "disabled"},
        tool_choice={"type": "auto"},
        tools=[{"name": "lookup", "description": "d", "input_schema": {"type": "object"}}],
        service_tier="auto",
        speed="standard",
        inference_geo="us",
        output_config={"effort": "low"},
        extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 5},  # older callers still send these
    )
    assert text_of(message) == "Reply to: all the knobs"


async def test_bad_json_and_count_tokens_validation(
    client: anthropic.AsyncAnthropic, raw: httpx2.AsyncClient
) -> None:
    response = await raw.post("/v1/messages", content=b"{not json", headers=HEADERS)
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError, match="max_tokens: Extra inputs"):
        await client.post("/v1/messages/count_tokens", body=params("x"), cast_to=object)


@pytest.mark.parametrize(
    ("error_type", "status", "exception"),
    [
        ("invalid_request_error", 400, anthropic.BadRequestError),
        ("authentication_error", 401, anthropic.AuthenticationError),
        ("billing_error", 402, anthropic.APIStatusError),
        ("permission_error", 403, anthropic.PermissionDeniedError),
        ("not_found_error", 404, anthropic.NotFoundError),
        ("rate_limit_error", 429, anthropic.RateLimitError),
        ("api_error", 500, anthropic.InternalServerError),
        ("timeout_error", 504, anthropic.InternalServerError),
        ("overloaded_error", 529, anthropic.OverloadedError),
    ],
)
async def test_error_directive_on_messages(
    client: anthropic.AsyncAnthropic, error_type: str, status: int, exception: type[anthropic.APIStatusError]
) -> None:
    with pytest.raises(exception) as caught:
        await client.messages.create(**params(f"please fail [emulator:error={error_type}]"))
    assert caught.value.status_code == status and caught.value.type == error_type


async def test_unknown_directive_type_is_rejected(client: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.messages.create(**params("[emulator:error=nope_error]"))
    assert caught.value.api_message is not None
    assert caught.value.api_message.startswith("messages: unknown error type 'nope_error'")


async def test_expire_directive_is_ignored_in_real_time(client: anthropic.AsyncAnthropic) -> None:
    message = await client.messages.create(**params("[emulator:expire] still answered"))
    assert text_of(message) == "Reply to: [emulator:expire] still answered"


# -- auth and versions ----------------------------------------------------------------------------


async def test_missing_key_is_401(raw: httpx2.AsyncClient) -> None:
    response = await raw.post("/v1/messages", json=params("x"), headers={"anthropic-version": "2023-06-01"})
    assert response.status_code == 401
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert body["request_id"] == response.headers["request-id"]


async def test_wrong_key_is_authentication_error() -> None:
    async with Emulator(api_key="secret") as emu:
        good = make_client(emu, api_key="secret")
        bad = make_client(emu, api_key="wrong")
        assert text_of(await good.messages.create(**params("ok"))) == "Reply to: ok"
        with pytest.raises(anthropic.AuthenticationError) as caught:
            await bad.messages.create(**params("x"))
        assert caught.value.type == "authentication_error"
        await good.close()
        await bad.close()


async def test_both_auth_header_styles(emu: Emulator, raw: httpx2.AsyncClient) -> None:
    bearer = make_client(emu)
    await bearer.messages.create(**params("bearer"))
    x_api_key = make_client(emu, default_headers={"x-api-key": "test", "Authorization": anthropic.Omit()})
    await x_api_key.messages.create(**params("x-api-key"))
    response = await raw.post("/v1/messages", json=params("raw"), headers=HEADERS)
    assert response.status_code == 200
    first, second, third = (e.headers for e in emu.journal if e.path == "/v1/messages")
    assert first["authorization"] == "Bearer test" and "x-api-key" not in first
    assert second["x-api-key"] == "test" and "authorization" not in second
    assert third["x-api-key"] == "test"
    await bearer.close()
    await x_api_key.close()


async def test_both_api_versions(emu: Emulator, raw: httpx2.AsyncClient) -> None:
    new = make_client(emu)
    old = make_client(emu, default_headers={"anthropic-version": "2023-06-01"})
    await new.messages.create(**params("new"))
    await old.messages.create(**params("old"))
    versions = [e.headers["anthropic-version"] for e in emu.journal]
    assert versions == ["2026-10-21", "2023-06-01"]
    missing = await raw.post("/v1/messages", json=params("x"), headers={"x-api-key": "k"})
    assert missing.status_code == 400
    assert missing.json()["error"]["message"] == "anthropic-version: header is required"
    bogus = make_client(emu, default_headers={"anthropic-version": "2020-01-01"})
    with pytest.raises(anthropic.BadRequestError, match="anthropic-version"):
        await bogus.messages.create(**params("x"))
    for sdk in (new, old, bogus):
        await sdk.close()


async def test_unknown_route_is_a_json_404(raw: httpx2.AsyncClient) -> None:
    response = await raw.get("/v1/nothing-here", headers=HEADERS)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
    assert response.headers["request-id"] == response.json()["request_id"]


# -- batches ----------------------------------------------------------------------------------------


async def test_batch_lifecycle_on_the_manual_clock(emu: Emulator, client: anthropic.AsyncAnthropic) -> None:
    batch = await client.messages.batches.create(
        requests=[request(f"r{i}", f"question {i}") for i in range(5)]
    )
    assert batch.id.startswith("msgbatch_") and batch.type == "message_batch"
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.model_dump() == {
        "processing": 5,
        "succeeded": 0,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }
    assert batch.created_at.timestamp() == START
    assert (batch.expires_at - batch.created_at).total_seconds() == 24 * 3600
    assert batch.ended_at is None and batch.results_url is None and batch.cancel_initiated_at is None

    emu.clock.advance(59.9)
    assert (await client.messages.batches.retrieve(batch.id)).processing_status == "in_progress"
    emu.clock.advance(0.1)
    ended = await client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert ended.ended_at is not None and ended.ended_at.timestamp() == START + 60
    assert ended.results_url == f"{emu.url}/v1/messages/batches/{batch.id}/results"
    assert ended.request_counts.processing == 0 and ended.request_counts.succeeded == 5

    results = await results_of(client, batch.id)
    assert sorted(r.custom_id for r in results) == [f"r{i}" for i in range(5)]
    assert [r.custom_id for r in results] != [f"r{i}" for i in range(5)]  # not request order
    for result in results:
        assert result.result.type == "succeeded"
        number = result.custom_id[1:]
        assert text_of(result.result.message) == f"Reply to: question {number}"
        assert result.result.message.usage.service_tier == "batch"


async def test_batch_reply_equals_realtime_reply(emu: Emulator, client: anthropic.AsyncAnthropic) -> None:
    body: Any = params("same answer on both lanes, cut short please", max_tokens=5)
    realtime = await client.messages.create(**body)
    batch = await client.messages.batches.create(requests=[{"custom_id": "one", "params": body}])
    assert emu.end_batches() == 1
    (result,) = await results_of(client, batch.id)
    assert result.result.type == "succeeded"
    assert result.result.message.content == realtime.content
    assert result.result.message.stop_reason == "max_tokens"
    assert result.result.message.usage.output_tokens == realtime.usage.output_tokens


async def test_batch_results_of_every_type(emu: Emulator, client: anthropic.AsyncAnthropic) -> None:
    batch = await client.messages.batches.create(
        requests=[
            request("ok-1", "fine"),
            request("bad-1", "fail [emulator:error=overloaded_error]"),
            request("bad-2", "fail [emulator:error=invalid_request_error]"),
            request("late-1", "too slow [emulator:expire]"),
            request("ok-2", "fine too"),
        ]
    )
    doomed = await client.messages.batches.create(requests=[request("c-1", "never"), request("c-2", "never")])
    await client.messages.batches.cancel(doomed.id)
    emu.clock.advance(60)
    ended = await client.messages.batches.retrieve(batch.id)
    assert ended.request_counts.model_dump() == {
        "processing": 0,
        "succeeded": 2,
        "errored": 2,
        "canceled": 0,
        "expired": 1,
    }
    by_id = {r.custom_id: r.result for r in await results_of(client, batch.id)}
    assert {k: v.type for k, v in by_id.items()} == {
        "ok-1": "succeeded",
        "ok-2": "succeeded",
        "bad-1": "errored",
        "bad-2": "errored",
        "late-1": "expired",
    }
    errored = by_id["bad-1"]
    assert errored.type == "errored"
    assert errored.error.type == "error" and errored.error.error.type == "overloaded_error"
    canceled = await results_of(client, doomed.id)
    assert {r.custom_id: r.result.type for r in canceled} == {"c-1": "canceled", "c-2": "canceled"}


async def test_results_wire_format_is_jsonl(emu: Emulator, client: anthropic.AsyncAnthropic) -> None:
    batch = await client.messages.batches.create(requests=[request(f"r{i}", "x") for i in range(3)])
    emu.end_batches()
    async with httpx2.AsyncClient() as http:
        response = await http.get(
            f"{emu.url}/v1/messages/batches/{batch.id}/results",
            headers={**HEADERS, "accept": "application/binary"},
        )
    assert response.status_code == 200
    assert response.headers.get("transfer-encoding") == "chunked"
    assert response.text.endswith("\n") and "\n\n" not in response.text
    lines = response.text.splitlines()
    assert len(lines) == 3
    for line in lines:
        MessageBatchIndividualResponse.model_validate_json(line)


async def test_batch_validation_names_the_request(client: anthropic.AsyncAnthropic) -> None:
    cases: list[tuple[list[Any], str]] = [
        ([request("bad id!", "x")], "requests.0.custom_id:"),
        ([request("x" * 65, "x")], "requests.0.custom_id:"),
        ([request("a", "x"), request("a", "y")], "requests.1.custom_id:"),
        ([request("a", "x", max_tokens=0)], "requests.0.params.max_tokens:"),
        ([request("a", "x"), request("b", "x", stream=True)], "requests.1.params.stream:"),
        ([request("a", "x", surprise=1)], "requests.0.params.surprise:"),
        ([{"custom_id": "a", "params": {"model": MODEL, "max_tokens": 5}}], "requests.0.params.messages:"),
        ([{"custom_id": "a"}], "requests.0.params:"),
        ([{"custom_id": "a", "params": params("x"), "extra": 1}], "requests.0.extra:"),
        ([], "requests:"),
        ([request("a", "[emulator:error=made_up]")], "requests.0.params.messages:"),
    ]
    for requests, prefix in cases:
        with pytest.raises(anthropic.BadRequestError) as caught:
            await client.messages.batches.create(requests=requests)
        assert caught.value.type == "invalid_request_error"
        assert caught.value.api_message is not None and caught.value.api_message.startswith(prefix), (
            prefix,
            caught.value.api_message,
        )
    with pytest.raises(anthropic.BadRequestError, match="surprise: Extra inputs"):
        await client.post(
            "/v1/messages/batches", body={"requests": [request("a", "x")], "surprise": 1}, cast_to=object
        )


async def test_batch_over_100000_requests_is_413(emu: Emulator, client: anthropic.AsyncAnthropic) -> None:
    tiny: Any = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(anthropic.APIStatusError) as caught:
        await client.messages.batches.create(
            requests=[{"custom_id": f"r{i}", "params": tiny} for i in range(100_001)]
        )
    assert caught.value.status_code == 413 and str(caught.value.type) == "request_too_large"
    assert not emu.batches


async def test_batch_over_the_byte_limit_is_413() -> None:
    async with Emulator(max_batch_bytes=10_000) as emu:
        client = make_client(emu)
        small = await client.messages.batches.create(requests=[request("a", "y" * 9_000)])
        assert small.request_counts.processing == 1
        with pytest.raises(anthropic.APIStatusError) as caught:
            await client.messages.batches.create(requests=[request("a", "y" * 10_000)])
        assert caught.value.status_code == 413 and str(caught.value.type) == "request_too_large"
        await client.close()


async def test_batch_over_256_mb_is_413_at_the_default_limit(emu: Emulator) -> None:
    item = json.dumps(request("x", "y" * 1_000_000)).encode() + b","
    copies = 256_000_000 // len(item) + 1

    async def body() -> AsyncIterator[bytes]:
        yield b'{"requests": ['
        for _ in range(copies):
            yield item
        yield json.dumps(request("z", "end")).encode() + b"]}"

    async with httpx2.AsyncClient(timeout=60.0) as http:
        response = await http.post(f"{emu.url}/v1/messages/batches", content=body(), headers=HEADERS)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"
    assert emu.journal[-1].body_size > 256_000_000


async def test_list_paginates_newest_first(client: anthropic.AsyncAnthropic) -> None:
    created = [(await client.messages.batches.create(requests=[request("a", f"b{i}")])).id for i in range(5)]
    walked = [batch.id async for batch in client.messages.batches.list(limit=2)]
    assert walked == created[::-1]
    page = await client.messages.batches.list(limit=2)
    assert page.has_more is True and page.first_id == created[4] and page.last_id == created[3]
    last = await client.messages.batches.list(limit=2, after_id=created[1])
    assert [b.id for b in last.data] == [created[0]] and last.has_more is False
    newer = await client.messages.batches.list(limit=2, before_id=created[1])
    assert [b.id for b in newer.data] == [created[3], created[2]] and newer.has_more is True
    backwards = [batch.id async for batch in client.messages.batches.list(limit=2, before_id=created[0])]
    assert sorted(backwards) == sorted(created[1:])
    with pytest.raises(anthropic.BadRequestError, match="limit"):
        await client.messages.batches.list(limit=1001)


async def test_cancel_then_end_with_canceled_requests(
    emu: Emulator, client: anthropic.AsyncAnthropic
) -> None:
    batch = await client.messages.batches.create(requests=[request("a", "x"), request("b", "y")])
    canceling = await client.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None and canceling.cancel_initiated_at.timestamp() == START
    emu.clock.advance(1)
    ended = await client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert ended.request_counts.canceled == 2 and ended.request_counts.processing == 0
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.batches.cancel("msgbatch_unknown")


async def test_delete_only_once_ended(emu: Emulator, client: anthropic.AsyncAnthropic) -> None:
    batch = await client.messages.batches.create(requests=[request("a", "x")])
    with pytest.raises(anthropic.BadRequestError, match="cannot be deleted"):
        await client.messages.batches.delete(batch.id)
    emu.end_batches()
    deleted = await client.messages.batches.delete(batch.id)
    assert deleted.id == batch.id and deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError) as caught:
        await client.messages.batches.retrieve(batch.id)
    assert caught.value.type == "not_found_error"
    assert batch.id not in emu.batches


async def test_results_before_end_and_of_unknown_batch(
    client: anthropic.AsyncAnthropic, raw: httpx2.AsyncClient
) -> None:
    batch = await client.messages.batches.create(requests=[request("a", "x")])
    early = await raw.get(f"/v1/messages/batches/{batch.id}/results", headers=HEADERS)
    assert early.status_code == 400 and early.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.AnthropicError, match="results_url"):
        await client.messages.batches.results(batch.id)
    missing = await raw.get("/v1/messages/batches/msgbatch_nope/results", headers=HEADERS)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"


async def test_batch_seconds_applies_to_later_batches(
    emu: Emulator, client: anthropic.AsyncAnthropic
) -> None:
    slow = await client.messages.batches.create(requests=[request("a", "x")])
    emu.batch_seconds = 10.0
    fast = await client.messages.batches.create(requests=[request("a", "x")])
    emu.clock.advance(10)
    assert (await client.messages.batches.retrieve(fast.id)).processing_status == "ended"
    assert (await client.messages.batches.retrieve(slow.id)).processing_status == "in_progress"
    assert emu.end_batches() == 1
    assert emu.batches[slow.id].ended


async def test_batch_past_24_hours_expires(emu: Emulator, client: anthropic.AsyncAnthropic) -> None:
    emu.batch_seconds = 3 * 24 * 3600
    batch = await client.messages.batches.create(requests=[request("a", "x"), request("b", "y")])
    emu.clock.advance(24 * 3600)
    ended = await client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.request_counts.expired == 2


async def test_results_are_archived_after_29_days(emu: Emulator, client: anthropic.AsyncAnthropic) -> None:
    batch = await client.messages.batches.create(requests=[request("a", "x")])
    emu.end_batches()
    emu.clock.advance(29 * 24 * 3600)
    archived = await client.messages.batches.retrieve(batch.id)
    assert archived.archived_at is not None
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.batches.results(batch.id)


async def test_real_time_clock_ends_batches_when_due() -> None:
    async with Emulator(batch_seconds=0.0) as emu:
        client = make_client(emu)
        batch = await client.messages.batches.create(requests=[request("a", "x")])
        assert (await client.messages.batches.retrieve(batch.id)).processing_status == "ended"
        with pytest.raises(RuntimeError):
            emu.clock.advance(1)
        await client.close()


async def test_outcome_rates(emu: Emulator, client: anthropic.AsyncAnthropic) -> None:
    emu.outcomes.errored = {"api_error": 1.0}
    first = await client.messages.batches.create(requests=[request(f"r{i}", "x") for i in range(4)])
    emu.end_batches()
    assert {r.result.type for r in await results_of(client, first.id)} == {"errored"}
    emu.outcomes.errored = {}
    emu.outcomes.expired = 0.5
    second = await client.messages.batches.create(requests=[request(f"r{i}", "x") for i in range(200)])
    emu.end_batches()
    counts = (await client.messages.batches.retrieve(second.id)).request_counts
    assert counts.expired + counts.succeeded == 200 and 60 < counts.expired < 140
    with pytest.raises(ValueError):
        OutcomeConfig(errored={"no_such_error": 0.5})


async def test_late_batches_take_longer(client: anthropic.AsyncAnthropic) -> None:
    late = Emulator(
        clock=EmulatorClock(start=START),
        batch_seconds=60,
        outcomes=OutcomeConfig(late_rate=1.0, late_seconds=30),
    )
    async with late:
        sdk = make_client(late)
        batch = await sdk.messages.batches.create(requests=[request("a", "x")])
        late.clock.advance(60)
        assert (await sdk.messages.batches.retrieve(batch.id)).processing_status == "in_progress"
        late.clock.advance(30)
        assert (await sdk.messages.batches.retrieve(batch.id)).processing_status == "ended"
        await sdk.close()


async def test_same_seed_same_result_order() -> None:
    orders = []
    for _ in range(2):
        async with Emulator(clock=EmulatorClock(start=START), seed=3) as emu:
            sdk = make_client(emu)
            batch = await sdk.messages.batches.create(requests=[request(f"r{i}", "x") for i in range(20)])
            emu.end_batches()
            orders.append([r.custom_id for r in await results_of(sdk, batch.id)])
            await sdk.close()
    assert orders[0] == orders[1]


# -- prompt caching ---------------------------------------------------------------------------------


def cached_params(text: str, ttl: str | None = None) -> Any:
    cache_control: dict[str, Any] = {"type": "ephemeral"}
    if ttl:
        cache_control["ttl"] = ttl
    # ~4,350 tokens: past the 4,096-token minimum cacheable prefix of MODEL (claude-haiku-4-5).
    system = [{"type": "text", "text": "You are a careful assistant. " * 600, "cache_control": cache_control}]
    return params(text, system=system)


async def test_prompt_cache_write_then_read_then_expire(
    emu: Emulator, client: anthropic.AsyncAnthropic
) -> None:
    first = (await client.messages.create(**cached_params("one"))).usage
    assert first.cache_creation_input_tokens and first.cache_creation_input_tokens > 0
    assert first.cache_read_input_tokens == 0
    assert first.cache_creation is not None
    assert first.cache_creation.ephemeral_5m_input_tokens == first.cache_creation_input_tokens
    second = (await client.messages.create(**cached_params("two"))).usage
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.cache_creation_input_tokens == 0
    counted = await client.messages.count_tokens(
        model=MODEL, messages=cached_params("two")["messages"], system=cached_params("two")["system"]
    )
    assert counted.input_tokens == second.input_tokens + second.cache_read_input_tokens
    emu.clock.advance(299)  # a read refreshed the 5 minutes
    assert (await client.messages.create(**cached_params("three"))).usage.cache_read_input_tokens
    emu.clock.advance(301)
    expired = (await client.messages.create(**cached_params("four"))).usage
    assert expired.cache_read_input_tokens == 0 and expired.cache_creation_input_tokens


async def test_prompt_cache_one_hour_ttl_and_batches(emu: Emulator, client: anthropic.AsyncAnthropic) -> None:
    written = (await client.messages.create(**cached_params("hour", ttl="1h"))).usage
    assert written.cache_creation is not None
    assert written.cache_creation.ephemeral_1h_input_tokens == written.cache_creation_input_tokens
    emu.clock.advance(3000)
    batch = await client.messages.batches.create(
        requests=[{"custom_id": f"r{i}", "params": cached_params(f"q{i}", ttl="1h")} for i in range(3)]
    )
    emu.clock.advance(60)
    for result in await results_of(client, batch.id):
        assert result.result.type == "succeeded"
        assert result.result.message.usage.cache_read_input_tokens == written.cache_creation_input_tokens


async def test_no_cache_control_means_no_cache_tokens(client: anthropic.AsyncAnthropic) -> None:
    body = params("plain", system="You are a careful assistant. " * 40)
    for _ in range(2):
        usage = (await client.messages.create(**body)).usage
        assert usage.cache_creation_input_tokens == 0 and usage.cache_read_input_tokens == 0


# -- faults -----------------------------------------------------------------------------------------


async def test_rate_limit_without_retries(emu: Emulator, client: anthropic.AsyncAnthropic) -> None:
    emu.faults.set("messages", rate_limit=1.0)
    with pytest.raises(anthropic.RateLimitError) as caught:
        await client.messages.create(**params("x"))
    assert caught.value.response.headers["retry-after"] == "0"
    assert caught.value.type == "rate_limit_error"
    # Other endpoints are untouched.
    assert (await client.messages.count_tokens(model=MODEL, messages=params("x")["messages"])).input_tokens


async def test_fail_next_then_success_honours_retry_after(emu: Emulator) -> None:
    emu.faults.retry_after = 0.05
    emu.faults.fail_next("messages", status=429, count=2)
    sdk = make_client(emu, max_retries=2)
    started = time.monotonic()
    message = await sdk.messages.create(**params("eventually"))
    elapsed = time.monotonic() - started
    assert text_of(message) == "Reply to: eventually"
    # Two waits of 0.05 s: shorter than the SDK's own backoff (>= 0.375 s), so retry-after was used.
    assert 0.1 <= elapsed < 0.7
    attempts = [(e.status, e.headers["x-stainless-retry-count"]) for e in emu.journal]
    assert attempts == [(429, "0"), (429, "1"), (200, "2")]
    await sdk.close()


async def test_forced_overloaded_on_batch_create_creates_nothing(
    emu: Emulator, client: anthropic.AsyncAnthropic
) -> None:
    emu.faults.fail_next("batches.create", status=529)
    with pytest.raises(anthropic.OverloadedError):
        await client.messages.batches.create(requests=[request("a", "x")])
    assert not emu.batches
    assert (
        await client.messages.batches.create(requests=[request("a", "x")])
    ).processing_status == "in_progress"


async def test_dropped_connection_and_server_error(emu: Emulator, client: anthropic.AsyncAnthropic) -> None:
    emu.faults.fail_next("count_tokens", drop=True)
    with pytest.raises(anthropic.APIConnectionError):
        await client.messages.count_tokens(model=MODEL, messages=params("x")["messages"])
    assert emu.journal[-1].status == 0
    emu.faults.server_error = 1.0
    with pytest.raises(anthropic.InternalServerError):
        await client.messages.batches.list()
    emu.faults.clear()
    assert (await client.messages.batches.list()).data == []


async def test_slow_answers(emu: Emulator, client: anthropic.AsyncAnthropic) -> None:
    emu.faults.set("batches.list", slow_seconds=0.2)
    started = time.monotonic()
    await client.messages.batches.list()
    assert time.monotonic() - started >= 0.2
    sdk = make_client(emu, timeout=0.05)
    with pytest.raises(anthropic.APITimeoutError):
        await sdk.messages.batches.list()
    await sdk.close()


async def test_seeded_fault_rates_are_reproducible() -> None:
    def pattern(seed: int) -> list[bool]:
        from router.emulator.faults import FaultInjector

        config = FaultConfig(rate_limit=0.5)
        injector = FaultInjector(seed)
        return [injector.decide(config, "messages")[1] is not None for _ in range(50)]

    assert pattern(1) == pattern(1)
    assert pattern(1) != pattern(2)
    assert 10 < sum(pattern(1)) < 40


async def test_results_stream_cut(emu: Emulator, client: anthropic.AsyncAnthropic) -> None:
    batch = await client.messages.batches.create(requests=[request(f"r{i}", "x") for i in range(10)])
    emu.end_batches()
    emu.faults.set("batches.results", results_cut_after=3)
    seen: list[str] = []
    with pytest.raises((anthropic.APIConnectionError, httpx2.HTTPError)):
        async for line in await client.messages.batches.results(batch.id):
            seen.append(line.custom_id)
    # The SDK reads in 64-byte pieces, so it may lose the tail of the last line before the cut.
    assert 1 <= len(seen) <= 3
    received = b""
    async with httpx2.AsyncClient() as http:
        url = f"{emu.url}/v1/messages/batches/{batch.id}/results"
        async with http.stream("GET", url, headers=HEADERS) as response:
            with pytest.raises(httpx2.RemoteProtocolError):
                async for chunk in response.aiter_raw():
                    received += chunk
    assert received.count(b"\n") == 3 and received.endswith(b"\n")


# -- journal, admin, subprocess ----------------------------------------------------------------


async def test_journal_records_requests(
    emu: Emulator, client: anthropic.AsyncAnthropic, raw: httpx2.AsyncClient
) -> None:
    content = json.dumps(params("journal")).encode()
    await raw.post("/v1/messages", content=content, headers={**HEADERS, "X-Custom": "Yes"})
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.batches.retrieve("msgbatch_missing")
    first, second = emu.journal
    assert (first.method, first.path, first.status, first.endpoint) == (
        "POST",
        "/v1/messages",
        200,
        "messages",
    )
    assert first.body_size == len(content)
    assert first.at == START and first.headers["x-custom"] == "Yes"
    assert all(key == key.lower() for key in first.headers)
    assert second.headers["authorization"] == "Bearer test"
    assert (second.method, second.path, second.status) == (
        "GET",
        "/v1/messages/batches/msgbatch_missing",
        404,
    )


async def test_admin_endpoints(
    emu: Emulator, client: anthropic.AsyncAnthropic, raw: httpx2.AsyncClient
) -> None:
    assert (await raw.get("/_emulator/health")).json() == {"ok": True}
    batch = await client.messages.batches.create(requests=[request("a", "x")])
    advanced = await raw.post("/_emulator/clock/advance", json={"seconds": 30})
    assert advanced.json() == {"now": START + 30}
    assert emu.clock.now() == START + 30
    assert (await raw.post("/_emulator/batches/end")).json() == {"ended": 1}
    assert emu.batches[batch.id].ended
    journal = (await raw.get("/_emulator/journal")).json()
    assert [(e["method"], e["path"]) for e in journal] == [("POST", "/v1/messages/batches")]
    assert set(journal[0]) >= {"method", "path", "headers", "body_size", "status", "at"}

    update = {
        "batch_seconds": 5,
        "faults": {"endpoints": {"messages": {"rate_limit": 1.0, "retry_after": 2}}},
        "outcomes": {"expired": 0.25},
    }
    config = (await raw.post("/_emulator/config", json=update)).json()
    assert config["batch_seconds"] == 5 and emu.batch_seconds == 5
    assert emu.faults.rates_for("messages").rate_limit == 1.0 and emu.outcomes.expired == 0.25
    with pytest.raises(anthropic.RateLimitError) as caught:
        await client.messages.create(**params("x"))
    assert caught.value.response.headers["retry-after"] == "2"
    forced = {"faults": {"endpoints": {}, "forced": [{"endpoint": "count_tokens", "status": 500}]}}
    await raw.post("/_emulator/config", json=forced)
    with pytest.raises(anthropic.InternalServerError):
        await client.messages.count_tokens(model=MODEL, messages=params("x")["messages"])
    bad = await raw.post("/_emulator/config", json={"faults": {"rate_limit": 7}})
    assert bad.status_code == 400 and "rate_limit" in bad.json()["error"]["message"]
    assert (await raw.get("/_emulator/config")).json()["faults"]["rate_limit"] == 0.0
    assert (await raw.delete("/_emulator/journal")).json()["cleared"] >= 1
    assert emu.journal == []


async def test_admin_advance_needs_a_manual_clock() -> None:
    async with Emulator() as emu, httpx2.AsyncClient(base_url=emu.url) as http:
        response = await http.post("/_emulator/clock/advance", json={"seconds": 1})
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"


async def test_runs_as_a_subprocess() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router.emulator",
        "--port",
        "0",
        "--batch-seconds",
        "5",
        "--manual-clock",
        str(START),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        url = None
        async with asyncio.timeout(60):  # a safety net: imports are slow on a loaded machine
            while url is None:
                line = (await process.stdout.readline()).decode()
                assert line, "the emulator exited before printing its URL"
                match = re.search(r"listening on (http://\S+)", line)
                url = match.group(1) if match else None
        async with httpx2.AsyncClient(base_url=url) as http:
            assert (await http.get("/_emulator/health")).json() == {"ok": True}
            sdk = anthropic.AsyncAnthropic(base_url=url, api_key="k", _strict_response_validation=True)
            batch = await sdk.messages.batches.create(requests=[request("a", "x")])
            assert (await http.post("/_emulator/clock/advance", json={"seconds": 5})).json() == {
                "now": START + 5
            }
            assert (await sdk.messages.batches.retrieve(batch.id)).processing_status == "ended"
            await sdk.close()
    finally:
        process.terminate()
        returncode = await asyncio.wait_for(process.wait(), 30)
    assert returncode == 0


async def test_python_api_surface(emu: Emulator) -> None:
    assert emu.url.startswith("http://127.0.0.1:") and emu.port > 0
    assert emu.clock.now() == START
    assert emu.clock.advance(5) == START + 5
    assert emu.end_batches() == 0
    assert dict(emu.batches) == {}
    assert isinstance(emu.faults, FaultConfig) and isinstance(emu.outcomes, OutcomeConfig)
    with pytest.raises(RuntimeError):
        _ = Emulator().url
