"""The OpenAI provider through the real `openai` SDK (strict validation) over HTTP to the emulator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletion

from router.emulator import Emulator, EmulatorClock, OutcomeConfig
from router.pricing import PriceTable, provider_for
from router.providers.base import RemoteBatch
from router.providers.openai import (
    JSONL_FORMAT,
    BodyLengthError,
    InputFileUploadError,
    OpenAIProvider,
    OpenAIRemoteBatch,
    frame_entry,
    jsonl_body,
)
from router.providers.openai.codec import canonical_line
from router.providers.openai.errors import retry_after

START = 1_700_000_000.0
MODEL = "gpt-5.4-mini"


# -- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    """An emulator on a manual clock: batches move only when the test moves time."""
    async with Emulator(clock=EmulatorClock(start=START), batch_seconds=60.0, seed=7) as emulator:
        yield emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(
        base_url=f"{emu.url}/v1", api_key="test", max_retries=0, _strict_response_validation=True
    )
    yield sdk
    await sdk.close()


@pytest.fixture
def provider(client: openai.AsyncOpenAI) -> OpenAIProvider:
    return OpenAIProvider(client)


def ask(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}


def params_bytes(params: dict[str, Any]) -> bytes:
    """Params as the store keeps them: compact JSON, non-ASCII characters as they are."""
    return json.dumps(params, ensure_ascii=False, separators=(",", ":")).encode()


class Body:
    """A batch body of (custom_id, params) entries, streamed in blocks of two as the store does."""

    def __init__(self, entries: list[tuple[str, dict[str, Any]]]) -> None:
        self.entries = [(custom_id, params_bytes(params)) for custom_id, params in entries]
        self.length = JSONL_FORMAT.body_bytes(
            requests=len(self.entries),
            params_bytes=sum(len(p) for _, p in self.entries),
            custom_id_bytes=sum(len(c) for c, _ in self.entries),
        )
        self.started = False

    @property
    def expected(self) -> bytes:
        return b"".join(frame_entry(c, p) + b"\n" for c, p in self.entries)

    async def _blocks(self) -> AsyncIterator[list[tuple[str, bytes]]]:
        self.started = True
        for start in range(0, len(self.entries), 2):
            yield self.entries[start : start + 2]

    def stream(self) -> AsyncIterator[bytes]:
        return jsonl_body(self._blocks())


def questions(count: int, text: str = "question") -> Body:
    return Body([(f"r{i}", ask(f"{text} {i}")) for i in range(count)])


async def create(provider: OpenAIProvider, body: Body, intent_id: int = 1) -> RemoteBatch:
    return await provider.create_batch(body.stream(), length=body.length, intent_id=intent_id, model=MODEL)


async def results(provider: OpenAIProvider, batch: RemoteBatch) -> dict[str, dict[str, Any]]:
    """custom_id -> canonical `result`, from every block of the batch's results."""
    lines: list[dict[str, Any]] = []
    async with provider.result_lines(batch) as blocks:
        async for block in blocks:
            lines.extend(json.loads(line) for line in block)
    by_id = {line["custom_id"]: line["result"] for line in lines}
    assert len(by_id) == len(lines)
    return by_id


async def ended(provider: OpenAIProvider, emu: Emulator, batch: RemoteBatch, seconds: float) -> RemoteBatch:
    emu.clock.advance(seconds)
    done = await provider.retrieve_batch(batch.id)
    assert done.ended
    return done


# -- the interface ----------------------------------------------------------------------------------


def test_limits_and_format(provider: OpenAIProvider) -> None:
    assert provider.name == "openai"
    assert (provider.limits.max_requests, provider.limits.max_bytes) == (50_000, 200 * 1024 * 1024)
    assert provider.limits.one_model_per_batch
    line = frame_entry("r12", b'{"model":"m"}')
    assert line == b'{"custom_id":"r12","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}'
    assert len(line) == JSONL_FORMAT.entry_overhead + len("r12") + len(b'{"model":"m"}')


# -- create --------------------------------------------------------------------------------------


async def test_create_uploads_the_exact_file_streamed(emu: Emulator, provider: OpenAIProvider) -> None:
    body = Body(
        [
            ("r1", ask("héllo wörld ✓")),
            ("r22", ask("日本語のテキスト 🎉", max_completion_tokens=5)),
            ("r333", ask('quotes " and \\ backslashes')),
        ]
    )
    assert body.length == len(body.expected)  # multi-byte characters counted as bytes
    batch = await create(provider, body, intent_id=42)
    assert isinstance(batch, OpenAIRemoteBatch)
    assert batch.intent_id == 42 and not batch.ended and batch.status == "validating"
    assert batch.input_file_id is not None
    stored = emu.openai.files[batch.input_file_id]
    assert stored.data == body.expected and stored.purpose == "batch"
    assert stored.filename == "hybrid-router-42.jsonl"
    upload = next(e for e in emu.journal if e.endpoint == "openai.files.create")
    # The announced Content-Length is what was sent: the multipart framing plus the file.
    assert int(upload.headers["content-length"]) == upload.body_size > body.length
    assert "transfer-encoding" not in upload.headers
    # The media type as the SDK's own files.create writes it; the header that carried it
    # through the SDK's request building is gone.
    assert upload.headers["content-type"].startswith("multipart/form-data; boundary=hybrid-router-")
    assert not [name for name in upload.headers if name.startswith("x-hybrid-router")]
    assert "_prepare_request" not in vars(provider.client)  # the caller's client is untouched
    assert emu.openai.batches[batch.id].metadata == {"hybrid_router_intent": "42"}


@pytest.mark.parametrize("error", [+1, -1], ids=["announced longer", "announced shorter"])
async def test_a_wrong_length_is_a_certain_failure(
    emu: Emulator, provider: OpenAIProvider, error: int
) -> None:
    body = questions(3)
    with pytest.raises(InputFileUploadError) as caught:
        await provider.create_batch(body.stream(), length=body.length + error, intent_id=1, model=MODEL)
    assert any(isinstance(e, BodyLengthError) for e in _chain(caught.value))
    assert provider.is_certain_failure(caught.value, body_started=True)
    assert not emu.openai.batches and not emu.openai.files  # nothing stored


def _chain(exc: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


# -- results -------------------------------------------------------------------------------------


async def test_completed_batch_gives_the_realtime_completion(
    emu: Emulator, client: openai.AsyncOpenAI, provider: OpenAIProvider
) -> None:
    batch = await create(provider, questions(3))
    done = await ended(provider, emu, batch, 60)
    assert done.ended_at == START + 60 and done.request_total == 3 and not done.failed
    assert done.counts == {"total": 3, "completed": 3, "failed": 0}
    by_id = await results(provider, done)
    assert set(by_id) == {"r0", "r1", "r2"}
    assert all(r["type"] == "succeeded" for r in by_id.values())
    message = by_id["r1"]["message"]
    usage = message["usage"]
    assert message["model"] == MODEL
    assert usage["input_tokens"] == usage["prompt_tokens"] and usage["cache_read_input_tokens"] == 0
    assert usage["output_tokens"] == usage["completion_tokens"]
    assert usage["cache_creation_input_tokens"] == 0

    from_batch = provider.outcome(by_id["r1"])
    realtime = await client.chat.completions.create(**ask("question 1"))
    assert isinstance(from_batch, ChatCompletion)
    assert from_batch._request_id == by_id["r1"]["openai"]["request_id"] is not None
    # Ids and times are the only differences: usage is OpenAI's own, without the added keys.
    aligned = from_batch.model_copy(update={"id": realtime.id, "created": realtime.created})
    aligned._request_id = realtime._request_id
    assert aligned == realtime
    assert from_batch.usage is not None and from_batch.usage.model_extra == {}


async def test_cached_tokens_are_split_from_input(emu: Emulator, provider: OpenAIProvider) -> None:
    system = {"role": "system", "content": "Background. " * 500}  # well over 1,024 tokens
    entries = [
        (f"r{i}", {"model": MODEL, "messages": [system, {"role": "user", "content": f"q{i}"}]})
        for i in range(3)
    ]
    by_id = await results(provider, await ended(provider, emu, await create(provider, Body(entries)), 60))
    usages = [r["message"]["usage"] for r in by_id.values()]
    for usage in usages:
        cached = usage["prompt_tokens_details"]["cached_tokens"]
        assert usage["cache_read_input_tokens"] == cached
        assert usage["input_tokens"] == usage["prompt_tokens"] - cached
    assert any(u["cache_read_input_tokens"] > 0 for u in usages)


async def test_expired_batch_keeps_the_finished_requests(emu: Emulator, provider: OpenAIProvider) -> None:
    emu.outcomes = OutcomeConfig(partial_rate=1.0, partial_done=0.5)
    batch = await create(provider, questions(6))
    emu.clock.advance(23 * 3600)
    assert not (await provider.retrieve_batch(batch.id)).ended
    done = await ended(provider, emu, batch, 3600)
    assert isinstance(done, OpenAIRemoteBatch) and done.status == "expired" and not done.failed
    by_id = await results(provider, done)
    kinds = {custom_id: result["type"] for custom_id, result in by_id.items()}
    assert kinds == {
        "r0": "succeeded",
        "r1": "succeeded",
        "r2": "succeeded",
        "r3": "expired",
        "r4": "expired",
        "r5": "expired",
    }


async def test_failed_validation_fails_the_batch(emu: Emulator, provider: OpenAIProvider) -> None:
    body = Body([("r1", ask("x")), ("r2", {**ask("y"), "model": "gpt-5.4"})])
    batch = await create(provider, body)
    done = await provider.retrieve_batch(batch.id)
    assert done.ended and done.failed and done.ended_at == START
    assert done.failure is not None and "line 2: model_mismatch" in done.failure
    assert await results(provider, done) == {}


ERRORS: list[tuple[str, int, str, type[openai.APIStatusError]]] = [
    ("invalid_request_error", 400, "invalid_request_error", openai.BadRequestError),
    ("authentication_error", 401, "authentication_error", openai.AuthenticationError),
    ("permission_error", 403, "permission_error", openai.PermissionDeniedError),
    ("not_found_error", 404, "not_found_error", openai.NotFoundError),
    ("rate_limit_error", 429, "rate_limit_error", openai.RateLimitError),
    ("api_error", 500, "api_error", openai.InternalServerError),
    ("overloaded_error", 503, "overloaded_error", openai.InternalServerError),
    ("timeout_error", 504, "timeout_error", openai.InternalServerError),
]


async def test_errored_lines_keep_the_exception_of_each_status(
    emu: Emulator, client: openai.AsyncOpenAI, provider: OpenAIProvider
) -> None:
    entries = [(f"r{i}", ask(f"[emulator:error={kind}]")) for i, (kind, *_) in enumerate(ERRORS)]
    entries.append(("bad", ask("x", bogus=True)))  # refused by validation: a 400 line
    entries.append(("fine", ask("fine")))
    by_id = await results(provider, await ended(provider, emu, await create(provider, Body(entries)), 60))
    assert by_id["fine"]["type"] == "succeeded"
    cases = [*enumerate(ERRORS), (len(ERRORS), ("", 400, "invalid_request_error", openai.BadRequestError))]
    for i, (kind, status, canonical, exception) in cases:
        result = by_id["bad" if i == len(ERRORS) else f"r{i}"]
        assert result["type"] == "errored", kind
        assert result["error"]["type"] == "error" and result["error"]["error"]["type"] == canonical
        assert result["openai"]["status_code"] == status
        error = provider.outcome(result)
        assert type(error) is exception and error.status_code == status
        assert error.request_id == result["openai"]["request_id"]
        assert str(error) == f"Error code: {status} - {result['error']['error']['message']}"
        if kind:  # the same request in real time raises the same class with the same body shape
            with pytest.raises(openai.APIStatusError) as caught:
                await client.chat.completions.create(**ask(f"[emulator:error={kind}]"))
            assert type(caught.value) is exception and caught.value.status_code == status
            assert caught.value.type == error.type and caught.value.code == error.code
    assert provider.outcome(by_id["bad"]).param == "body.bogus"


async def test_cancelled_batch_lines_are_canceled(emu: Emulator, provider: OpenAIProvider) -> None:
    batch = await create(provider, questions(2))
    await provider.retrieve_batch(batch.id)  # validated: in progress
    await provider.cancel_batch(batch.id)
    cancelling = await provider.retrieve_batch(batch.id)
    assert cancelling.cancel_requested and not cancelling.ended
    done = await ended(provider, emu, batch, 1)
    assert done.cancel_requested
    assert {r["type"] for r in (await results(provider, done)).values()} == {"canceled"}


async def test_a_broken_results_stream_raises_before_a_cut_line(
    emu: Emulator, provider: OpenAIProvider
) -> None:
    done = await ended(provider, emu, await create(provider, questions(4)), 60)
    emu.faults.set("openai.files.content", results_cut_bytes=700)  # mid-line
    seen: list[bytes] = []
    with pytest.raises((openai.APIConnectionError, httpx2.HTTPError)):
        async with provider.result_lines(done) as blocks:
            async for block in blocks:
                seen.extend(block)
    assert len(seen) < 4
    assert all(json.loads(line)["result"]["type"] == "succeeded" for line in seen)


async def test_discard_results_deletes_the_files(emu: Emulator, provider: OpenAIProvider) -> None:
    body = Body([("ok", ask("x")), ("bad", ask("[emulator:error=api_error]"))])
    done = await ended(provider, emu, await create(provider, body), 60)
    assert isinstance(done, OpenAIRemoteBatch)
    files = {done.input_file_id, done.output_file_id, done.error_file_id}
    assert None not in files and files <= set(emu.openai.files)
    # A plain RemoteBatch (as the engine may rebuild it) works too: the files are looked up.
    plain = RemoteBatch(
        id=done.id, ended=True, created_at=done.created_at, ended_at=done.ended_at,
        cancel_requested=False, request_total=2,
    )  # fmt: skip
    await provider.discard_results(plain)
    assert not files & set(emu.openai.files)
    await provider.discard_results(done)  # already gone: fine


# -- listing and reconciliation ----------------------------------------------------------------------


async def test_list_batches_newest_first_with_intent_ids(emu: Emulator, provider: OpenAIProvider) -> None:
    for intent in (7, 8, 9):
        await create(provider, questions(1), intent_id=intent)
        emu.clock.advance(10)
    listed = [b async for b in provider.list_batches(since=START)]
    assert [b.intent_id for b in listed] == [9, 8, 7]
    assert [b.created_at for b in listed] == [START + 20, START + 10, START]
    assert [b.intent_id async for b in provider.list_batches(since=START + 10)] == [9, 8]


async def test_a_lost_create_answer_is_uncertain_and_found_by_intent(
    emu: Emulator, provider: OpenAIProvider
) -> None:
    emu.faults.fail_next("openai.batches.create", drop=True, after=True)
    body = questions(2)
    with pytest.raises(openai.APIConnectionError) as caught:
        await create(provider, body, intent_id=31)
    assert body.started
    assert not provider.is_certain_failure(caught.value, body_started=True)
    assert provider.is_transient(caught.value)
    found = [b async for b in provider.list_batches(since=START)]
    assert [(b.intent_id, b.request_total) for b in found] == [(31, 2)]
    assert found[0].id in emu.openai.batches


async def test_a_create_dropped_before_handling_is_uncertain_and_absent(
    emu: Emulator, provider: OpenAIProvider
) -> None:
    emu.faults.fail_next("openai.batches.create", drop=True)
    with pytest.raises(openai.APIConnectionError) as caught:
        await create(provider, questions(1), intent_id=5)
    assert not provider.is_certain_failure(caught.value, body_started=True)
    assert [b async for b in provider.list_batches(since=START)] == []


# -- faults ------------------------------------------------------------------------------------


UPLOAD_FAULTS: list[tuple[str, dict[str, Any], float | None]] = [
    ("429 with retry-after", {"status": 429, "retry_after": 7}, 7.0),
    ("500", {"status": 500}, None),
    ("503 overloaded", {"status": 529}, None),
    ("dropped connection", {"drop": True}, None),
]


@pytest.mark.parametrize(("fault", "hint"), [c[1:] for c in UPLOAD_FAULTS], ids=[c[0] for c in UPLOAD_FAULTS])
async def test_upload_faults_are_certain_and_transient(
    emu: Emulator, provider: OpenAIProvider, fault: dict[str, Any], hint: float | None
) -> None:
    emu.faults.fail_next("openai.files.create", **fault)
    with pytest.raises(InputFileUploadError) as caught:
        await create(provider, questions(2))
    assert provider.is_certain_failure(caught.value, body_started=True)
    assert provider.is_transient(caught.value)
    assert provider.retry_after(caught.value) == hint
    assert not provider.is_not_found(caught.value)
    assert not emu.openai.batches
    assert "files.create" not in str([e.endpoint for e in emu.journal][1:])  # sent once: no SDK retry


async def test_create_refused_is_certain_and_deletes_the_file(
    emu: Emulator, provider: OpenAIProvider
) -> None:
    emu.faults.fail_next("openai.batches.create", status=429, retry_after=3)
    with pytest.raises(openai.RateLimitError) as caught:
        await create(provider, questions(2))
    assert provider.is_certain_failure(caught.value, body_started=True)
    assert provider.is_transient(caught.value) and provider.retry_after(caught.value) == 3.0
    assert not emu.openai.batches and not emu.openai.files  # the uploaded file was deleted
    assert [e.endpoint for e in emu.journal] == [
        "openai.files.create",
        "openai.batches.create",
        "openai.files.delete",
    ]


async def test_retrieve_faults(emu: Emulator, provider: OpenAIProvider) -> None:
    batch = await create(provider, questions(1))
    emu.faults.fail_next("openai.batches.retrieve", status=429, retry_after=2)
    with pytest.raises(openai.RateLimitError) as limited:
        await provider.retrieve_batch(batch.id)
    assert provider.is_transient(limited.value) and provider.retry_after(limited.value) == 2.0
    emu.faults.fail_next("openai.batches.retrieve", status=500)
    with pytest.raises(openai.InternalServerError) as failed:
        await provider.retrieve_batch(batch.id)
    assert provider.is_transient(failed.value) and provider.retry_after(failed.value) is None
    emu.faults.fail_next("openai.batches.retrieve", drop=True)
    with pytest.raises(openai.APIConnectionError) as dropped:
        await provider.retrieve_batch(batch.id)
    assert provider.is_transient(dropped.value) and not provider.is_not_found(dropped.value)
    with pytest.raises(openai.NotFoundError) as missing:
        await provider.retrieve_batch("batch_missing")
    assert provider.is_not_found(missing.value) and not provider.is_transient(missing.value)
    assert (await provider.retrieve_batch(batch.id)).id == batch.id  # and then it works


def _status_error(status: int, headers: dict[str, str]) -> openai.APIStatusError:
    request = httpx2.Request("POST", "https://api.openai.com/v1/batches")
    response = httpx2.Response(status, request=request, headers=headers, json={"error": {"message": "x"}})
    return openai.RateLimitError("x", response=response, body=None)


def test_retry_after_headers() -> None:
    assert retry_after(_status_error(429, {"retry-after-ms": "1500", "retry-after": "9"})) == 1.5
    assert retry_after(_status_error(429, {"retry-after": "4"})) == 4.0
    assert retry_after(_status_error(429, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
    assert retry_after(_status_error(429, {"retry-after": "soon"})) is None
    assert retry_after(_status_error(429, {})) is None
    assert retry_after(None) is None and retry_after(ValueError("x")) is None


async def test_send_is_the_realtime_call(provider: OpenAIProvider) -> None:
    completion = await provider.send(ask("over real time"))
    assert isinstance(completion, ChatCompletion)
    assert completion.choices[0].message.content == "Reply to: over real time"


# -- prices --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "prices"),
    [
        ("gpt-5.4", (2.5, 0.25, 15.0)),
        ("gpt-5.4-mini", (0.75, 0.075, 4.5)),
        ("gpt-5.4-nano-2026-03-17", (0.2, 0.02, 1.25)),  # a dated snapshot
        ("gpt-5", (1.25, 0.125, 10.0)),
        ("gpt-5-mini", (0.25, 0.025, 2.0)),  # not gpt-5's price
        ("gpt-5-nano", (0.05, 0.005, 0.4)),
        ("gpt-4.1-2025-04-14", (2.0, 0.5, 8.0)),
        ("gpt-4.1-mini", (0.4, 0.1, 1.6)),
        ("gpt-4.1-nano", (0.1, 0.025, 0.4)),
        ("gpt-4o-2024-08-06", (2.5, 1.25, 10.0)),
        ("gpt-4o-mini", (0.15, 0.075, 0.6)),
        ("o3", (2.0, 0.5, 8.0)),
        ("o4-mini", (1.1, 0.275, 4.4)),
    ],
)
def test_openai_list_prices(model: str, prices: tuple[float, float, float]) -> None:
    price = PriceTable.bundled().price(model)
    assert price is not None and (price.input, price.effective_cache_read, price.output) == prices
    assert price.effective_cache_write_5m == price.input  # OpenAI bills no cache writes
    assert provider_for(model) == "openai"
    assert PriceTable.bundled().min_cacheable(model) == 1024


def test_a_models_provider_is_the_table_that_prices_it() -> None:
    assert provider_for("claude-haiku-4-5-20251001") == "anthropic"
    assert provider_for("gpt-4") is None and provider_for("gpt-5.4-turbo") is None
    assert PriceTable.bundled().price("gpt-4") is None


async def test_a_batch_line_is_priced_from_its_canonical_usage(
    emu: Emulator, provider: OpenAIProvider
) -> None:
    system = {"role": "system", "content": "Background. " * 500}
    entries = [
        (f"r{i}", {"model": MODEL, "messages": [system, {"role": "user", "content": f"q{i}"}]})
        for i in range(2)
    ]
    by_id = await results(provider, await ended(provider, emu, await create(provider, Body(entries)), 60))
    cached = next(r["message"] for r in by_id.values() if r["message"]["usage"]["cache_read_input_tokens"])
    usage = cached["usage"]
    fresh = usage["prompt_tokens"] - usage["prompt_tokens_details"]["cached_tokens"]
    expected = (
        fresh * 0.75 + usage["cache_read_input_tokens"] * 0.075 + usage["completion_tokens"] * 4.5
    ) / 1e6
    table = PriceTable.bundled()
    assert table.cost(cached["model"], usage, "realtime") == pytest.approx(expected)
    assert table.cost(cached["model"], usage, "batch") == pytest.approx(expected / 2)


# -- the codec on lines the emulator does not write ---------------------------------------------------


def test_codec_lines_without_an_http_answer_or_a_json_body(provider: OpenAIProvider) -> None:
    other = canonical_line(
        b'{"id":"x","custom_id":"r1","response":null,"error":{"code":"lost","message":"gone"}}'
    )
    result = json.loads(other)["result"]
    assert result["type"] == "errored" and result["error"]["error"] == {
        "type": "api_error",
        "message": "gone",
    }
    error = provider.outcome(result)
    assert type(error) is openai.APIError and str(error) == "gone"

    response = {"status_code": 502, "request_id": "req_1", "body": "Bad gateway"}
    text = json.dumps({"custom_id": "r2", "response": response, "error": None}).encode()
    result = json.loads(canonical_line(text))["result"]
    assert result["error"]["error"] == {"type": "api_error", "message": "HTTP 502"}
    error = provider.outcome(result)
    assert (
        type(error) is openai.InternalServerError and error.status_code == 502 and error.body == "Bad gateway"
    )

    with pytest.raises(ValueError, match="not a batch result line"):
        canonical_line(b"[1, 2]")


async def test_outcome_of_a_canonical_line_from_elsewhere(provider: OpenAIProvider) -> None:
    """A canonical errored result with no `openai` part is rebuilt from its error type."""
    result = {
        "type": "errored",
        "error": {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}},
    }
    error = provider.outcome(result)
    assert type(error) is openai.RateLimitError and str(error) == "Error code: 429 - slow"
    with pytest.raises(ValueError, match="expired"):
        provider.outcome({"type": "expired"})


async def test_outcome_without_strict_validation_is_the_same(emu: Emulator, provider: OpenAIProvider) -> None:
    by_id = await results(provider, await ended(provider, emu, await create(provider, questions(1)), 60))
    loose = openai.AsyncOpenAI(base_url=f"{emu.url}/v1", api_key="test", max_retries=0)
    try:
        assert OpenAIProvider(loose).outcome(by_id["r0"]) == provider.outcome(by_id["r0"])
    finally:
        await loose.close()


async def test_results_come_in_blocks_and_a_reader_may_stop_early(
    emu: Emulator, provider: OpenAIProvider
) -> None:
    done = await ended(provider, emu, await create(provider, questions(1001)), 60)
    async with provider.result_lines(done) as blocks:
        sizes = [len(block) async for block in blocks]
    assert sizes == [1000, 1]
    async with provider.result_lines(done) as blocks:
        first = await anext(blocks)
    assert len(first) == 1000
    assert len(await results(provider, done)) == 1001  # the early exit left nothing half open
