"""The emulator's OpenAI side, through the real `openai` SDK in strict validation mode over 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import math
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from openai.types import Batch
from openai.types.chat import ChatCompletion

from router.emulator import Emulator, EmulatorClock, OutcomeConfig
from tests.helpers import interruptible

START = 1_700_000_000.0
MODEL = "gpt-5.4-mini"
REPO = Path(__file__).resolve().parents[1]


# -- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    """An emulator on a manual clock: batches move only when the test moves time."""
    async with Emulator(clock=EmulatorClock(start=START), batch_seconds=60.0, seed=7) as emulator:
        yield emulator


def make_client(url: str, **options: Any) -> openai.AsyncOpenAI:
    settings: dict[str, Any] = {"api_key": "test", "max_retries": 0, **options}
    return openai.AsyncOpenAI(base_url=f"{url}/v1", _strict_response_validation=True, **settings)


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = make_client(emu.url)
    yield sdk
    await sdk.close()


@pytest.fixture
async def raw(emu: Emulator) -> AsyncIterator[httpx2.AsyncClient]:
    """Plain HTTP, for what the SDK would not send."""
    async with httpx2.AsyncClient(base_url=emu.url, timeout=30.0) as http:
        yield http


def ask(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}


def line(custom_id: str, text: str, **body: Any) -> dict[str, Any]:
    """One request of a batch input file."""
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": ask(text, **body),
    }


def jsonl(lines: list[Any]) -> bytes:
    return b"".join(
        (line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines
    )


async def submit(client: openai.AsyncOpenAI, lines: list[Any], **options: Any) -> Batch:
    uploaded = await client.files.create(file=("input.jsonl", jsonl(lines)), purpose="batch")
    return await client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h", **options
    )


async def lines_of(client: openai.AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    content = await client.files.content(file_id)
    return [json.loads(text) for text in content.text.splitlines()]


def by_custom_id(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {line["custom_id"]: line for line in lines}


# -- chat completions ---------------------------------------------------------------------------


async def test_chat_completion_body_and_usage(emu: Emulator, client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(**ask("What is the capital of France?"))
    assert completion.object == "chat.completion" and completion.model == MODEL
    assert completion.created == int(START)
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Reply to: What is the capital of France?"
    assert choice.finish_reason == "stop"
    message = {"content": "What is the capital of France?", "role": "user"}
    prompt = math.ceil(len(json.dumps(message, separators=(",", ":"), sort_keys=True)) / 4)
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (prompt, 8)
    assert completion.usage.total_tokens == prompt + 8
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 0
    # The SDK reads x-request-id; the journal names the endpoint.
    assert completion._request_id is not None and completion._request_id.startswith("req_emu_")
    assert emu.journal[-1].endpoint == "openai.chat.completions" and emu.journal[-1].status == 200


async def test_max_completion_tokens_cuts_the_reply(client: openai.AsyncOpenAI) -> None:
    for limit in ({"max_completion_tokens": 3}, {"max_tokens": 3}):
        completion = await client.chat.completions.create(**ask("one two three four", **limit))
        assert completion.choices[0].message.content == "Reply to: one"
        assert completion.choices[0].finish_reason == "length"
        assert completion.usage is not None and completion.usage.completion_tokens == 3


async def test_streaming_adds_up_to_the_completion(client: openai.AsyncOpenAI) -> None:
    text = "stream this reply to me in several small pieces please"
    whole = await client.chat.completions.create(**ask(text))
    stream = await client.chat.completions.create(
        **ask(text), stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert {chunk.id for chunk in chunks} == {chunks[0].id} and chunks[0].object == "chat.completion.chunk"
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert deltas == whole.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    finishing = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishing == ["stop"]
    # include_usage: usage is null on every chunk but a last one, which has no choices.
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage

    plain = [chunk async for chunk in await client.chat.completions.create(**ask(text), stream=True)]
    assert all(c.usage is None and c.choices for c in plain)


async def test_streaming_raw_events_end_with_done(raw: httpx2.AsyncClient) -> None:
    headers = {"authorization": "Bearer k"}
    response = await raw.post("/v1/chat/completions", json=ask("hi", stream=True), headers=headers)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [part for part in response.text.split("\n\n") if part]
    assert all(event.startswith("data: ") for event in events)
    assert events[-1] == "data: [DONE]"
    assert response.headers["x-request-id"].startswith("req_emu_")


async def test_automatic_prompt_caching(emu: Emulator, client: openai.AsyncOpenAI) -> None:
    system = {"role": "system", "content": "Background. " * 500}  # well over 1,024 tokens
    params = {"model": MODEL, "messages": [system, {"role": "user", "content": "first"}]}

    def cached(completion: ChatCompletion) -> int:
        assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
        return completion.usage.prompt_tokens_details.cached_tokens or 0

    assert cached(await client.chat.completions.create(**params)) == 0
    again = await client.chat.completions.create(
        model=MODEL, messages=[system, {"role": "user", "content": "second"}]
    )
    assert cached(again) > 1024 and cached(again) % 128 == 0
    assert again.usage is not None and cached(again) < again.usage.prompt_tokens
    keyed = await client.chat.completions.create(**params, prompt_cache_key="other")
    assert cached(keyed) == 0  # a different cache key is a different cache
    emu.clock.advance(301)  # past the 5 minute lifetime
    assert cached(await client.chat.completions.create(**params)) == 0


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({"model": MODEL}, "messages", "missing_required_parameter"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model", "missing_required_parameter"),
        ({"model": MODEL, "messages": []}, "messages", "empty_array"),
        ({**ask("x"), "bogus": 1}, "bogus", None),
        ({**ask("x"), "stream_options": {"include_usage": True}}, "stream_options", None),
        (
            {"model": MODEL, "messages": [{"role": "robot", "content": "x"}]},
            "messages[0].role",
            "invalid_value",
        ),
        ({**ask("x"), "max_completion_tokens": 0}, "max_completion_tokens", "integer_below_min_value"),
        ({**ask("x"), "metadata": {"k": 5}}, "metadata.k", "invalid_type"),
    ],
)
async def test_bad_chat_requests_get_openai_errors(
    raw: httpx2.AsyncClient, client: openai.AsyncOpenAI, params: dict[str, Any], param: str, code: str | None
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        # client.post: the typed create() checks some of these before sending.
        await client.post("/chat/completions", cast_to=ChatCompletion, body=params)
    error = caught.value
    assert (error.status_code, error.type, error.param, error.code) == (
        400,
        "invalid_request_error",
        param,
        code,
    )
    body = (await raw.post("/v1/chat/completions", json=params, headers={"authorization": "Bearer k"})).json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(error.body, dict) and body["error"]["message"] == error.body["message"]


@pytest.mark.parametrize(
    ("error_type", "exception", "status"),
    [
        ("invalid_request_error", openai.BadRequestError, 400),
        ("authentication_error", openai.AuthenticationError, 401),
        ("permission_error", openai.PermissionDeniedError, 403),
        ("not_found_error", openai.NotFoundError, 404),
        ("rate_limit_error", openai.RateLimitError, 429),
        ("api_error", openai.InternalServerError, 500),
        ("overloaded_error", openai.InternalServerError, 503),
    ],
)
async def test_directives_raise_the_sdk_exception_for_their_status(
    client: openai.AsyncOpenAI, error_type: str, exception: type[openai.APIStatusError], status: int
) -> None:
    with pytest.raises(exception) as caught:
        await client.chat.completions.create(**ask(f"[emulator:error={error_type}]"))
    assert caught.value.status_code == status
    assert caught.value.request_id is not None and caught.value.request_id.startswith("req_emu_")


async def test_bearer_auth(raw: httpx2.AsyncClient) -> None:
    for headers in ({}, {"x-api-key": "k"}, {"authorization": "Basic k"}):
        response = await raw.post("/v1/chat/completions", json=ask("x"), headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert "Bearer" in response.json()["error"]["message"]
    async with Emulator(api_key="sk-right-key") as emu:
        wrong = make_client(emu.url, api_key="sk-wrong-key")
        with pytest.raises(openai.AuthenticationError) as caught:
            await wrong.files.list()
        assert caught.value.code == "invalid_api_key" and "sk-wrong-key" not in caught.value.message
        right = make_client(emu.url, api_key="sk-right-key")
        assert [f async for f in right.files.list()] == []
        await wrong.close()
        await right.close()


async def test_injected_429_carries_retry_after_and_the_sdk_honours_it(emu: Emulator) -> None:
    emu.faults.fail_next("openai.chat.completions", status=429, retry_after=7)
    once = make_client(emu.url)
    with pytest.raises(openai.RateLimitError) as caught:
        await once.chat.completions.create(**ask("x"))
    assert caught.value.response.headers["retry-after"] == "7"
    assert (caught.value.type, caught.value.code) == ("requests", "rate_limit_exceeded")
    await once.close()

    emu.journal.clear()
    emu.faults.fail_next("openai.chat.completions", status=429, retry_after=0.01)
    retrying = make_client(emu.url, max_retries=2)
    completion = await retrying.chat.completions.create(**ask("x"))
    assert completion.choices[0].message.content == "Reply to: x"
    assert [entry.status for entry in emu.journal] == [429, 200]
    await retrying.close()


async def test_server_errors_and_dropped_connections(emu: Emulator, client: openai.AsyncOpenAI) -> None:
    emu.faults.fail_next("openai.batches.list", status=500)
    with pytest.raises(openai.InternalServerError) as caught:
        await client.batches.list()
    assert caught.value.type == "server_error"
    emu.faults.fail_next("openai.batches.list", status=529)  # Anthropic's overloaded is OpenAI's 503
    with pytest.raises(openai.InternalServerError) as overloaded:
        await client.batches.list()
    assert overloaded.value.status_code == 503
    emu.faults.fail_next("openai.files.list", drop=True)
    with pytest.raises(openai.APIConnectionError):
        await client.files.list()
    assert emu.journal[-1].status == 0 and emu.journal[-1].endpoint == "openai.files.list"


async def test_a_lost_answer_after_the_batch_was_created(emu: Emulator, client: openai.AsyncOpenAI) -> None:
    uploaded = await client.files.create(file=("in.jsonl", jsonl([line("a", "x")])), purpose="batch")
    emu.faults.fail_next("openai.batches.create", drop=True, after=True)
    with pytest.raises(openai.APIConnectionError):
        await client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"intent": "i-1"},
        )
    # The batch exists all the same, and its metadata finds it.
    listed = [batch async for batch in client.batches.list()]
    assert [batch.metadata for batch in listed] == [{"intent": "i-1"}]


# -- files --------------------------------------------------------------------------------------


async def test_files_upload_retrieve_list_content_delete(emu: Emulator, client: openai.AsyncOpenAI) -> None:
    data = jsonl([line("a", "x"), line("b", "y")])
    uploaded = await client.files.create(file=("requests.jsonl", data, "application/jsonl"), purpose="batch")
    assert (uploaded.object, uploaded.purpose, uploaded.filename) == ("file", "batch", "requests.jsonl")
    assert (
        uploaded.bytes == len(data) and uploaded.created_at == int(START) and uploaded.status == "processed"
    )
    assert emu.journal[-1].body_size >= len(data)
    other = await client.files.create(file=("notes.txt", b"hello"), purpose="user_data")

    assert await client.files.retrieve(uploaded.id) == uploaded
    assert (await client.files.content(uploaded.id)).content == data
    assert [f.id async for f in client.files.list()] == [other.id, uploaded.id]  # newest first
    assert [f.id async for f in client.files.list(order="asc")] == [uploaded.id, other.id]
    assert [f.id async for f in client.files.list(purpose="batch")] == [uploaded.id]
    page = await client.files.list(limit=1)
    assert [f.id for f in page.data] == [other.id] and page.has_more
    assert [f.id for f in (await page.get_next_page()).data] == [uploaded.id]

    deleted = await client.files.delete(uploaded.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (uploaded.id, True, "file")
    for call in (client.files.retrieve, client.files.delete, client.files.content):
        with pytest.raises(openai.NotFoundError) as caught:
            await call(uploaded.id)
        assert caught.value.param == "id" and uploaded.id in caught.value.message


async def test_batch_files_expire(emu: Emulator, client: openai.AsyncOpenAI) -> None:
    default = await client.files.create(file=("in.jsonl", jsonl([line("a", "x")])), purpose="batch")
    assert default.expires_at == int(START) + 30 * 24 * 3600
    short = await client.files.create(
        file=("in.jsonl", jsonl([line("a", "x")])),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert short.expires_at == int(START) + 3600
    notes = await client.files.create(file=("notes.txt", b"hi"), purpose="user_data")
    assert notes.expires_at is None
    batch = await submit(
        client, [line("a", "x")], output_expires_after={"anchor": "created_at", "seconds": 7200}
    )
    emu.end_batches()
    batch = await client.batches.retrieve(batch.id)
    output = await client.files.retrieve(batch.output_file_id or "")
    assert output.expires_at == int(START) + 7200
    emu.clock.advance(3600)
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(short.id)
    assert {f.id async for f in client.files.list()} >= {default.id, output.id, notes.id}
    emu.clock.advance(3600)
    with pytest.raises(openai.NotFoundError):
        await client.files.content(output.id)
    with pytest.raises(openai.BadRequestError) as caught:
        await client.files.create(
            file=("in.jsonl", b"{}\n"), purpose="batch", expires_after={"anchor": "created_at", "seconds": 60}
        )
    assert caught.value.param == "expires_after.seconds"


async def test_bad_uploads(raw: httpx2.AsyncClient, client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match=r"Must be \.jsonl"):
        await client.files.create(file=("requests.txt", b"{}\n"), purpose="batch")
    with pytest.raises(openai.BadRequestError) as caught:
        await client.files.create(file=("a.jsonl", b"{}\n"), purpose="batch_output")  # type: ignore[arg-type]
    assert (caught.value.param, caught.value.code) == ("purpose", "invalid_value")
    headers = {"authorization": "Bearer k"}
    no_purpose = await raw.post("/v1/files", files={"file": ("a.jsonl", b"{}\n")}, headers=headers)
    assert no_purpose.status_code == 400 and no_purpose.json()["error"]["param"] == "purpose"
    no_file = await raw.post("/v1/files", files={"purpose": (None, "batch")}, headers=headers)
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
    not_multipart = await raw.post("/v1/files", json={"purpose": "batch"}, headers=headers)
    assert not_multipart.status_code == 415
    assert not_multipart.json()["error"]["message"].startswith(
        "Invalid Content-Type header (application/json), expected multipart/form-data."
    )
    assert [f async for f in client.files.list()] == []  # nothing stored


async def test_an_upload_is_taken_only_as_the_sdk_sends_it(
    emu: Emulator, raw: httpx2.AsyncClient, client: openai.AsyncOpenAI
) -> None:
    await client.files.create(file=("in.jsonl", jsonl([line("a", "x")])), purpose="batch")
    (sent,) = [e.headers["content-type"] for e in emu.journal if e.endpoint == "openai.files.create"]
    assert re.fullmatch(r"multipart/form-data; boundary=[0-9a-f]{32}", sent)  # httpx's encoder
    form = b'--b1\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--b1\r\n'
    form += b'Content-Disposition: form-data; name="file"; filename="in.jsonl"\r\n\r\n{}\n\r\n--b1--\r\n'
    headers = {"authorization": "Bearer k"}
    taken = await raw.post(
        "/v1/files", content=form, headers={**headers, "content-type": "multipart/form-data; boundary=b1"}
    )
    assert taken.status_code == 200, taken.text
    for spelling in (
        "Multipart/form-data; boundary=b1",  # RFC 9110 allows it; the API is not shown to
        "multipart/form-data",  # no boundary
        "multipart/mixed; boundary=b1",
    ):
        refused = await raw.post("/v1/files", content=form, headers={**headers, "content-type": spelling})
        assert refused.status_code == 415 and spelling in refused.json()["error"]["message"]
    assert len([f async for f in client.files.list()]) == 2


async def test_file_content_cut_short(
    emu: Emulator, raw: httpx2.AsyncClient, client: openai.AsyncOpenAI
) -> None:
    data = jsonl([line(str(i), "x") for i in range(3)])
    uploaded = await client.files.create(file=("in.jsonl", data), purpose="batch")
    emu.faults.set("openai.files.content", results_cut_after=1)
    received = bytearray()
    with pytest.raises(httpx2.RemoteProtocolError):
        async with raw.stream(
            "GET", f"/v1/files/{uploaded.id}/content", headers={"authorization": "Bearer k"}
        ) as r:
            async for chunk in r.aiter_bytes():
                received += chunk
    assert bytes(received) == data.splitlines(keepends=True)[0]


# -- batches ------------------------------------------------------------------------------------


async def test_batch_lifecycle_to_completed(emu: Emulator, client: openai.AsyncOpenAI) -> None:
    emu.config.openai.finalizing_seconds = 30
    requests = [line(f"r{i}", f"question {i}") for i in range(5)]
    batch = await submit(client, requests, metadata={"intent": "abc"})
    assert (batch.object, batch.status, batch.endpoint, batch.completion_window) == (
        "batch",
        "validating",
        "/v1/chat/completions",
        "24h",
    )
    assert batch.metadata == {"intent": "abc"} and batch.created_at == int(START)
    assert batch.expires_at == int(START) + 24 * 3600
    assert batch.request_counts is not None and batch.request_counts.total == 0

    batch = await client.batches.retrieve(batch.id)
    assert batch.status == "in_progress" and batch.in_progress_at == int(START) and batch.model == MODEL
    assert batch.request_counts is not None and batch.request_counts.total == 5
    assert batch.output_file_id is None

    emu.clock.advance(60)
    batch = await client.batches.retrieve(batch.id)
    assert batch.status == "finalizing" and batch.finalizing_at == int(START) + 60
    emu.clock.advance(30)
    batch = await client.batches.retrieve(batch.id)
    assert batch.status == "completed" and batch.completed_at == int(START) + 90
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (5, 0)
    assert batch.error_file_id is None

    output = await client.files.retrieve(batch.output_file_id or "")
    assert output.purpose == "batch_output" and output.filename == f"batch_{batch.id}_output.jsonl"
    lines = await lines_of(client, batch.output_file_id)
    assert [x["custom_id"] for x in lines] != [r["custom_id"] for r in requests]  # never in input order
    results = by_custom_id(lines)
    assert set(results) == {r["custom_id"] for r in requests}
    alone = await client.chat.completions.create(**ask("question 3"))
    for custom_id, result in results.items():
        assert set(result) == {"id", "custom_id", "response", "error"} and result["error"] is None
        assert result["id"].startswith("batch_req_") and result["response"]["status_code"] == 200
        completion = ChatCompletion.model_validate(result["response"]["body"])
        assert completion.choices[0].message.content == f"Reply to: question {custom_id[1:]}"
    # The same request costs the same tokens on both lanes, and the batch sums them.
    completion = ChatCompletion.model_validate(results["r3"]["response"]["body"])
    assert completion.usage == alone.usage
    assert batch.usage is not None and alone.usage is not None
    assert batch.usage.input_tokens == 5 * alone.usage.prompt_tokens
    assert batch.usage.output_tokens == 5 * alone.usage.completion_tokens
    assert batch.usage.total_tokens == batch.usage.input_tokens + batch.usage.output_tokens


async def test_batch_error_lines(emu: Emulator, client: openai.AsyncOpenAI) -> None:
    emu.outcomes = OutcomeConfig()
    requests = [
        line("ok", "fine"),
        line("bad-body", "x", bogus=True),
        line("limited", "[emulator:error=rate_limit_error]"),
        line("expired", "[emulator:expire]"),
    ]
    batch = await submit(client, requests)
    emu.clock.advance(60)
    batch = await client.batches.retrieve(batch.id)
    assert batch.status == "completed" and batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (
        4,
        1,
        3,
    )
    assert set(by_custom_id(await lines_of(client, batch.output_file_id))) == {"ok"}
    errors = by_custom_id(await lines_of(client, batch.error_file_id))
    assert set(errors) == {"bad-body", "limited", "expired"}
    bad = errors["bad-body"]["response"]
    assert bad["status_code"] == 400 and bad["body"]["error"]["param"] == "body.bogus"
    assert errors["bad-body"]["error"] is None
    assert errors["limited"]["response"]["status_code"] == 429
    assert errors["limited"]["response"]["body"]["error"]["code"] == "rate_limit_exceeded"
    assert errors["expired"]["response"] is None and errors["expired"]["error"]["code"] == "batch_expired"


async def test_batch_outcome_rates_apply(emu: Emulator, client: openai.AsyncOpenAI) -> None:
    emu.outcomes = OutcomeConfig(errored={"api_error": 0.5}, expired=0.25)
    batch = await submit(client, [line(f"r{i}", "x") for i in range(40)])
    emu.end_batches()
    batch = await client.batches.retrieve(batch.id)
    errors = await lines_of(client, batch.error_file_id)
    codes = [e["response"]["status_code"] if e["response"] else e["error"]["code"] for e in errors]
    assert 0 < codes.count(500) < 40 and 0 < codes.count("batch_expired") < 40
    assert batch.request_counts is not None
    assert batch.request_counts.completed + batch.request_counts.failed == 40


BAD_FILES: list[tuple[str, list[Any], str, int | None]] = [
    ("bad json", [line("a", "x"), b"{not json"], "invalid_json_line", 2),
    ("not an object", [b"[1, 2]"], "invalid_json_line", 1),
    (
        "no custom_id",
        [{"method": "POST", "url": "/v1/chat/completions", "body": ask("x")}],
        "missing_required_parameter",
        1,
    ),
    (
        "two models",
        [line("a", "x"), {**line("b", "y"), "body": {**ask("y"), "model": "gpt-5.4"}}],
        "model_mismatch",
        2,
    ),
    ("wrong endpoint", [{**line("a", "x"), "url": "/v1/embeddings"}], "url_mismatch", 1),
    ("duplicate ids", [line("a", "x"), line("a", "y")], "duplicate_custom_id", 2),
    ("empty", [b""], "empty_file", None),
    ("too many", [line(str(i), "x") for i in range(3)], "too_many_tasks", None),
    ("too big", [line("a", "x" * 1000)], "file_too_large", None),
]


@pytest.mark.parametrize(
    ("lines", "code", "number"), [case[1:] for case in BAD_FILES], ids=[c[0] for c in BAD_FILES]
)
async def test_invalid_input_files_fail_the_batch(
    emu: Emulator, client: openai.AsyncOpenAI, lines: list[Any], code: str, number: int | None
) -> None:
    emu.config.openai.max_batch_requests = 2
    emu.config.openai.max_batch_bytes = 600
    batch = await submit(client, lines)
    assert batch.status == "validating"
    batch = await client.batches.retrieve(batch.id)
    assert batch.status == "failed" and batch.failed_at == int(START)
    assert batch.errors is not None and batch.errors.object == "list" and batch.errors.data
    assert (batch.errors.data[0].code, batch.errors.data[0].line) == (code, number)
    assert batch.errors.data[0].message
    assert batch.output_file_id is None and batch.error_file_id is None
    assert batch.request_counts is not None and batch.request_counts.total == 0
    emu.clock.advance(3600)
    assert (await client.batches.retrieve(batch.id)).status == "failed"


async def test_a_queued_refusal_fails_the_next_batches_in_validation(
    emu: Emulator, raw: httpx2.AsyncClient, client: openai.AsyncOpenAI
) -> None:
    async def errors_of_next_batch() -> list[tuple[str | None, int | None, str | None]] | None:
        batch = await client.batches.retrieve((await submit(client, [line("a", "x")])).id)
        assert (batch.status == "failed") == (batch.errors is not None)
        return None if batch.errors is None else [(e.code, e.line, e.param) for e in batch.errors.data or []]

    emu.config.openai.refuse_next("model_not_found", message="Not served.", param="body.model", line=1)
    assert await errors_of_next_batch() == [("model_not_found", 1, "body.model")]
    update = {"openai": {"refusals": [{"code": "token_limit_exceeded", "count": 2}]}}
    assert (await raw.post("/_emulator/config", json=update)).status_code == 200
    assert await errors_of_next_batch() == [("token_limit_exceeded", None, None)]
    assert await errors_of_next_batch() == [("token_limit_exceeded", None, None)]
    assert await errors_of_next_batch() is None  # the queue is spent
    assert emu.config.openai.refusals == []
    bad = await raw.post("/_emulator/config", json={"openai": {"refusals": [{"code": ""}]}})
    assert bad.status_code == 400


async def test_validation_takes_validating_seconds(emu: Emulator, client: openai.AsyncOpenAI) -> None:
    emu.config.openai.validating_seconds = 10
    batch = await submit(client, [line("a", "x")])
    assert (await client.batches.retrieve(batch.id)).status == "validating"
    emu.clock.advance(10)
    assert (await client.batches.retrieve(batch.id)).in_progress_at == int(START) + 10
    # A turnaround shorter than validation still ends after it, never before.
    emu.config.openai.validating_seconds = 100
    quick = await submit(client, [line("a", "x")])
    emu.clock.advance(100)
    quick = await client.batches.retrieve(quick.id)
    assert quick.status == "completed" and quick.in_progress_at == quick.completed_at == int(START) + 110


async def test_bad_batch_creates_are_refused(client: openai.AsyncOpenAI) -> None:
    uploaded = await client.files.create(file=("in.jsonl", jsonl([line("a", "x")])), purpose="batch")
    notes = await client.files.create(file=("notes.txt", b"hi"), purpose="user_data")
    good: dict[str, Any] = {
        "input_file_id": uploaded.id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    cases: list[tuple[dict[str, Any], type[openai.APIStatusError], str]] = [
        ({**good, "completion_window": "1h"}, openai.BadRequestError, "completion_window"),
        ({**good, "endpoint": "/v1/nowhere"}, openai.BadRequestError, "endpoint"),
        ({**good, "endpoint": "/v1/embeddings"}, openai.BadRequestError, "endpoint"),
        ({**good, "input_file_id": "file-missing"}, openai.NotFoundError, "input_file_id"),
        ({**good, "input_file_id": notes.id}, openai.BadRequestError, "input_file_id"),
        ({**good, "metadata": {f"k{i}": "v" for i in range(17)}}, openai.BadRequestError, "metadata"),
        ({**good, "metadata": {"k": "v" * 513}}, openai.BadRequestError, "metadata.k"),
    ]
    for params, exception, param in cases:
        with pytest.raises(exception) as caught:
            await client.batches.create(**params)
        assert caught.value.param == param, params
    assert [b async for b in client.batches.list()] == []  # nothing stored


async def test_expired_batch_keeps_the_output_of_finished_requests(
    emu: Emulator, client: openai.AsyncOpenAI
) -> None:
    emu.outcomes = OutcomeConfig(partial_rate=1.0, partial_done=0.5)
    batch = await submit(client, [line(f"r{i}", f"q{i}") for i in range(6)])
    emu.clock.advance(23 * 3600)
    assert (await client.batches.retrieve(batch.id)).status == "in_progress"
    emu.clock.advance(3600)
    batch = await client.batches.retrieve(batch.id)
    assert batch.status == "expired" and batch.expired_at == int(START) + 24 * 3600
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (3, 3)
    done = by_custom_id(await lines_of(client, batch.output_file_id))
    expired = by_custom_id(await lines_of(client, batch.error_file_id))
    assert set(done) == {"r0", "r1", "r2"} and set(expired) == {"r3", "r4", "r5"}
    assert all(x["error"]["code"] == "batch_expired" and x["response"] is None for x in expired.values())


async def test_a_batch_past_its_window_expires_whole(emu: Emulator, client: openai.AsyncOpenAI) -> None:
    emu.batch_seconds = 25 * 3600
    batch = await submit(client, [line("a", "x"), line("b", "y")])
    emu.clock.advance(24 * 3600)
    batch = await client.batches.retrieve(batch.id)
    assert batch.status == "expired" and batch.output_file_id is None
    assert {x["error"]["code"] for x in await lines_of(client, batch.error_file_id)} == {"batch_expired"}


async def test_cancel(emu: Emulator, client: openai.AsyncOpenAI) -> None:
    batch = await submit(client, [line("a", "x"), line("b", "y")])
    await client.batches.retrieve(batch.id)  # validated: in_progress
    emu.clock.advance(5)
    cancelling = await client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at == int(START) + 5
    assert (await client.batches.cancel(batch.id)).status == "cancelling"  # again: no change
    emu.clock.advance(1)
    cancelled = await client.batches.retrieve(batch.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at == int(START) + 5
    assert cancelled.request_counts is not None and cancelled.request_counts.failed == 2
    assert {x["error"]["code"] for x in await lines_of(client, cancelled.error_file_id)} == {
        "batch_cancelled"
    }
    with pytest.raises(openai.ConflictError, match="cancelled"):
        await client.batches.cancel(batch.id)
    with pytest.raises(openai.NotFoundError):
        await client.batches.cancel("batch_missing")


async def test_list_batches_newest_first_in_pages(client: openai.AsyncOpenAI) -> None:
    created = [await submit(client, [line("a", str(i))]) for i in range(3)]
    page = await client.batches.list(limit=2)
    assert [b.id for b in page.data] == [created[2].id, created[1].id] and page.has_more
    assert [b.id async for b in client.batches.list(limit=2)] == [b.id for b in reversed(created)]
    with pytest.raises(openai.NotFoundError):
        await client.batches.retrieve("batch_missing")
    with pytest.raises(openai.BadRequestError):
        await client.batches.list(limit=101)


# -- shared controls ----------------------------------------------------------------------------


async def test_admin_routes_drive_openai_batches(
    emu: Emulator, raw: httpx2.AsyncClient, client: openai.AsyncOpenAI
) -> None:
    update = {
        "openai": {"finalizing_seconds": 5.0},
        "faults": {"endpoints": {"openai.files.list": {"server_error": 1}}},
    }
    config = (await raw.post("/_emulator/config", json=update)).json()
    assert config["openai"]["finalizing_seconds"] == 5.0 and emu.config.openai.finalizing_seconds == 5.0
    with pytest.raises(openai.InternalServerError):
        await client.files.list()
    bad = await raw.post("/_emulator/config", json={"faults": {"endpoints": {"openai.nothing": {}}}})
    assert bad.status_code == 400 and "openai.chat.completions" in bad.json()["error"]["message"]

    batch = await submit(client, [line("a", "x")])
    assert (await raw.post("/_emulator/batches/end")).json() == {"ended": 1}
    listed = (await raw.get("/_emulator/openai/batches")).json()
    assert [(b["id"], b["status"]) for b in listed] == [(batch.id, "completed")]
    journal = (await raw.get("/_emulator/journal")).json()
    assert [e["endpoint"] for e in journal] == [
        "openai.files.list",
        "openai.files.create",
        "openai.batches.create",
    ]
    assert all(e["headers"]["authorization"] == "Bearer test" for e in journal)


async def test_python_api_surface(emu: Emulator, client: openai.AsyncOpenAI) -> None:
    batch = await submit(client, [line("a", "x")])
    assert emu.openai.batches[batch.id].status == "in_progress"
    assert emu.end_batches() == 1
    stored = emu.openai.batches[batch.id]
    assert stored.status == "completed" and stored.output_file_id in emu.openai.files
    assert stored.request_counts == {"total": 1, "completed": 1, "failed": 0}
    assert emu.end_batches() == 0


async def test_served_by_hybrid_router_emulate() -> None:
    """`hybrid-router emulate` serves the OpenAI routes on real time (batches of 0 s end at once)."""
    command = [
        str(Path(sys.executable).with_name("hybrid-router")),
        "emulate",
        "--port",
        "0",
        "--batch-seconds",
        "0",
    ]
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=interruptible,
    )
    try:
        assert process.stdout is not None
        url = None
        async with asyncio.timeout(60):  # a safety net: imports are slow on a loaded machine
            while url is None:
                printed = (await process.stdout.readline()).decode()
                assert printed, "the emulator exited before printing its URL"
                match = re.search(r"listening on (http://\S+)", printed)
                url = match.group(1) if match else None
        sdk = make_client(url)
        completion = await sdk.chat.completions.create(**ask("over the wire"))
        assert completion.choices[0].message.content == "Reply to: over the wire"
        batch = await submit(sdk, [line("a", "x")])
        # With no turnaround, the next look validates, runs and completes it.
        done = await sdk.batches.retrieve(batch.id)
        assert done.status == "completed"
        assert set(by_custom_id(await lines_of(sdk, done.output_file_id))) == {"a"}
        await sdk.close()
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C, as at a terminal
        returncode = await asyncio.wait_for(process.wait(), 30)
    assert returncode == 0
