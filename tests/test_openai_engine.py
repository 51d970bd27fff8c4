"""OpenAI requests through the batch engine: the real `openai` SDK (strict validation) over HTTP
to the emulator, the Router's flush, poll and reconcile, on both store engines."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from openai.types.chat import ChatCompletion

from router import Router, RouterConfig
from router.batcher import create_batch
from router.daemon import Daemon
from router.emulator import Emulator
from router.errors import ConfigError, RequestCanceledError, RequestExpiredError, RouterError
from router.leftovers import sweep
from router.metrics import DaemonView
from router.metrics import families as metric_families
from router.observe import take
from router.pricing import TokenCounts
from router.providers.openai.provider import ORPHAN_AGE
from router.report import build_report, render_text
from router.store import LedgerEntry, Ticket
from tests.engine import engine_config
from tests.helpers import ask as ask_claude
from tests.helpers import capture_router_logs
from tests.stores import raw_rows

BOTH_ENGINES = True
GPT = "gpt-5.4-mini"
GPT_NANO = "gpt-5.4-nano"


def ask(text: str, model: str = GPT) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


@pytest.fixture
async def oa_sdk(emulator: Emulator) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(
        base_url=f"{emulator.url}/v1", api_key="test", max_retries=0, _strict_response_validation=True
    )
    yield client
    await client.close()


@contextlib.asynccontextmanager
async def opened(
    store: str | Path,
    emulator: Emulator,
    sdk: anthropic.AsyncAnthropic,
    oa_sdk: openai.AsyncOpenAI,
    extra: str = "",
) -> AsyncIterator[Router]:
    """A Router with both providers on the emulator's clock, no scheduler."""
    config = engine_config(store, emulator, extra)
    async with Router(config, anthropic=sdk, openai=oa_sdk, clock=emulator.clock.now, scheduler=False) as r:
        yield r


@pytest.fixture
async def router(
    store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic, oa_sdk: openai.AsyncOpenAI
) -> AsyncIterator[Router]:
    async with opened(store_location, emulator, sdk, oa_sdk) as r:
        yield r


async def defer(router: Router, key: str, params: dict[str, Any], latency: str = "daily") -> Ticket:
    cls = router.config.classes[latency]
    return await router._deferred_ticket(dict(params), cls, None, key, provider="openai")


async def batches(router: Router) -> list[tuple[str, str, int]]:
    """(provider, state, request_count) of every batch row, in id order."""
    rows = await raw_rows(router.store, "SELECT provider, state, request_count FROM batches ORDER BY id")
    return [(str(p), str(s), int(n)) for p, s, n in rows]


def remote_models(emulator: Emulator) -> list[set[str]]:
    """The models in each OpenAI batch's input file, in creation order (before ingest deletes it)."""
    files = emulator.openai.files
    return [
        {json.loads(line)["body"]["model"] for line in files[b.input_file_id].data.splitlines() if line}
        for b in emulator.openai.batches.values()
    ]


async def test_a_deferred_openai_request_comes_back_as_a_chat_completion(
    router: Router, emulator: Emulator
) -> None:
    await defer(router, "k1", ask("hello there"))
    report = await router.flush()
    assert len(report.batches) == 1 and report.requests == 1
    assert await batches(router) == [("openai", "in_progress", 1)]
    assert len(emulator.openai.batches) == 1 and not emulator.batches  # nothing went to Anthropic
    (remote,) = emulator.openai.batches.values()
    ((local_id,),) = await raw_rows(router.store, "SELECT id FROM batches")
    assert remote.metadata == {"hybrid_router_intent": str(local_id)}
    emulator.end_batches()
    await router.poll()
    reply = await router.results.wait("k1", timeout=10)
    assert isinstance(reply, ChatCompletion)
    assert reply.model.startswith(GPT) and reply.choices[0].message.content
    # The batch's files are deleted once its results are stored.
    assert not emulator.openai.files
    rows = await raw_rows(router.store, "SELECT provider, lane, result_type FROM ledger")
    assert [tuple(r) for r in rows] == [("openai", "batch", "succeeded")]
    assert [tuple(r) for r in await raw_rows(router.store, "SELECT provider FROM requests")] == [("openai",)]


async def test_errored_lines_raise_the_openai_exception_or_are_retried(
    router: Router, emulator: Emulator
) -> None:
    await defer(router, "bad", ask("[emulator:error=invalid_request_error]"), latency="twice")
    await defer(router, "busy", ask("[emulator:error=rate_limit_error]"), latency="twice")
    await defer(router, "down", ask("[emulator:error=api_error]"), latency="twice")
    await defer(router, "fine", ask("all good"), latency="twice")
    for _ in range(2):  # `twice`: two attempts, the retryable errors are sent again once
        await router.flush()
        emulator.end_batches()
        await router.poll()
    assert len(emulator.openai.batches) == 2
    assert [n for *_, n in await batches(router)] == [4, 2]  # only the retryable two went again
    with pytest.raises(openai.BadRequestError):
        await router.results.wait("bad")
    with pytest.raises(openai.RateLimitError) as limited:
        await router.results.wait("busy")
    assert limited.value.status_code == 429
    with pytest.raises(openai.InternalServerError):
        await router.results.wait("down")
    assert isinstance(await router.results.wait("fine"), ChatCompletion)
    row = await router.results.status("busy")
    assert row.attempts == 2


async def test_an_expired_batch_keeps_its_output_and_resubmits_the_rest(
    router: Router, emulator: Emulator
) -> None:
    keys = [f"e{i}" for i in range(4)]
    for key in keys:
        await defer(router, key, ask(f"question {key}"))
    emulator.outcomes.partial_rate = 1.0  # the batch runs out of its 24 h window half done
    emulator.outcomes.partial_done = 0.5
    await router.flush()
    emulator.end_batches()
    (first,) = emulator.openai.batches.values()
    assert first.status == "expired"
    await router.poll()
    counts = await router.store.state_counts()
    assert counts == {"succeeded": 2, "pending": 2}
    kept = {k for k in keys if (await router.results.status(k)).state == "succeeded"}
    emulator.outcomes.partial_rate = 0.0
    await router.flush()
    assert [n for *_, n in await batches(router)] == [4, 2]  # only the two unfinished went again
    emulator.end_batches()
    await router.poll()
    for key in keys:
        reply = await router.results.wait(key, timeout=10)
        assert isinstance(reply, ChatCompletion)
        assert (await router.results.status(key)).attempts == (1 if key in kept else 2)


async def test_a_cancelled_batch_is_resubmitted_then_raises_canceled(
    router: Router, emulator: Emulator, oa_sdk: openai.AsyncOpenAI
) -> None:
    await defer(router, "c", ask("cancel me"), latency="twice")
    for attempt in (1, 2):  # `twice`: the first cancel sends it again, the second is final
        report = await router.flush()
        (api_id,) = report.batches
        await oa_sdk.batches.cancel(api_id)  # someone else cancels it on the account
        emulator.clock.advance(1)  # the cancel completes once the clock moves on
        assert emulator.openai.batches[api_id].status == "cancelled"
        await router.poll()
        row = await router.results.status("c")
        assert (row.state, row.attempts) == (("pending", 1) if attempt == 1 else ("failed", 2))
    with pytest.raises(RequestCanceledError, match="after 2 attempt"):
        await router.results.wait("c", timeout=10)
    assert not emulator.openai.files


async def test_a_request_that_keeps_expiring_raises_expired(router: Router, emulator: Emulator) -> None:
    await defer(router, "x", ask("too slow [emulator:expire]"), latency="twice")
    await defer(router, "ok", ask("in time"), latency="twice")
    for _ in range(2):
        await router.flush()
        emulator.end_batches()
        await router.poll()
    with pytest.raises(RequestExpiredError, match="after 2 attempt"):
        await router.results.wait("x", timeout=10)
    assert isinstance(await router.results.wait("ok", timeout=10), ChatCompletion)
    assert [n for *_, n in await batches(router)] == [2, 1]


async def test_a_results_download_cut_short_is_read_again_without_duplicates(
    router: Router, emulator: Emulator
) -> None:
    for i in range(5):
        await defer(router, f"d{i}", ask(f"download {i}"))
    await router.flush()
    emulator.end_batches()
    emulator.faults.set("openai.files.content", results_cut_after=2)
    report = await router.poll()
    assert report.errors == 1 and report.ended == []
    assert await router.store.state_counts() == {"submitted": 5}  # open, to be read again
    assert len(emulator.openai.files) == 2  # nothing deleted before the results are stored
    emulator.faults.endpoints.clear()
    report = await router.poll()
    assert len(report.ended) == 1 and report.delivered == 5 and report.duplicates == 0
    for i in range(5):
        assert isinstance(await router.results.wait(f"d{i}", timeout=10), ChatCompletion)
    rows = await raw_rows(router.store, "SELECT count(*), sum(duplicate) FROM ledger")
    assert [tuple(r) for r in rows] == [(5, 0)]


async def test_a_batch_refused_as_a_whole_fails_its_requests_with_the_reason(
    router: Router, emulator: Emulator
) -> None:
    await defer(router, "a", ask("one", GPT))
    await defer(router, "b", ask("two", GPT_NANO))
    # Two models in one input file, which OpenAI refuses: claimed here without the
    # one-model rule, as a router that did not split by model would.
    provider = router.providers["openai"]
    claim = await router.store.claim_batch(
        latencies=None,
        max_requests=100,
        max_bytes=10**6,
        now=router.clock(),
        frame=provider.batch_format,
        provider="openai",
    )
    assert claim is not None and claim.request_count == 2
    remote = await create_batch(provider, router.store, claim)
    await router.store.mark_submitted(claim.batch_id, remote.id, now=router.clock(), next_poll_at=0)
    emulator.end_batches()
    assert emulator.openai.batches[remote.id].status == "failed"
    await router.poll()
    for key in ("a", "b"):
        # What chat.completions.create raises for a request the API refuses: a 400.
        with pytest.raises(openai.BadRequestError, match="model_mismatch") as refused:
            await router.results.wait(key, timeout=10)
        assert refused.value.code == "model_mismatch" and refused.value.param == "body.model"
        assert remote.id in refused.value.message
    assert await batches(router) == [("openai", "done", 2)]
    rows = await raw_rows(router.store, "SELECT state, outcome, attempts FROM requests ORDER BY id")
    assert [tuple(r) for r in rows] == [("failed", "errored", 1)] * 2
    ledger = await raw_rows(router.store, "SELECT provider, lane, result_type, input_tokens FROM ledger")
    assert [tuple(r) for r in ledger] == [("openai", "batch", "errored", 0)] * 2  # unbilled
    assert not emulator.openai.files


async def test_a_batch_refused_for_its_model_raises_not_found_as_real_time_does(
    router: Router, emulator: Emulator
) -> None:
    await defer(router, "m", ask("which model?"))
    emulator.config.openai.refuse_next(
        "model_not_found",
        message=f"The provided model '{GPT}' is not supported by the Batch API.",
        param="body.model",
        line=1,
    )
    await router.flush()
    emulator.end_batches()
    (remote,) = emulator.openai.batches.values()
    assert remote.status == "failed"
    await router.poll()
    with pytest.raises(openai.NotFoundError) as refused:
        await router.results.wait("m", timeout=10)
    assert refused.value.status_code == 404 and refused.value.code == "model_not_found"
    assert "not supported by the Batch API" in refused.value.message
    assert await router.store.state_counts() == {"failed": 1}
    assert len(emulator.openai.batches) == 1 and not emulator.openai.files
    # Closed at once, with no turnaround: a refusal says nothing of how long batches take.
    assert await batches(router) == [("openai", "done", 1)]
    assert [tuple(r) for r in await raw_rows(router.store, "SELECT count(*) FROM turnarounds")] == [(0,)]


async def test_a_batch_refused_for_the_moment_is_resubmitted(router: Router, emulator: Emulator) -> None:
    for key in ("t1", "t2"):
        await defer(router, key, ask(f"tokens {key}"))
    emulator.config.openai.refuse_next(
        "token_limit_exceeded", message=f"Enqueued token limit reached for {GPT} in organization org-emu."
    )
    await router.flush()
    emulator.end_batches()
    with capture_router_logs() as events:
        report = await router.poll()
    assert (report.retried, report.delivered) == (2, 0)
    assert await router.store.state_counts() == {"pending": 2}
    (refused,) = [e for e in events if e["event"] == "batch_refused"]
    assert (refused["retried"], refused["final"]) == (2, 0) and "token_limit_exceeded" in refused["error"]
    await router.flush()
    emulator.end_batches()
    await router.poll()
    assert [b.status for b in emulator.openai.batches.values()] == ["failed", "completed"]
    for key in ("t1", "t2"):
        assert isinstance(await router.results.wait(key, timeout=10), ChatCompletion)
        assert (await router.results.status(key)).attempts == 2  # the refused batch counted
    assert not emulator.openai.files


async def test_a_batch_refused_for_the_moment_until_the_class_limit_raises_rate_limit(
    router: Router, emulator: Emulator
) -> None:
    await defer(router, "q", ask("queue full"), latency="twice")
    emulator.config.openai.refuse_next(
        "token_limit_exceeded", message="Enqueued token limit reached.", count=2
    )
    for _ in range(2):  # `twice`: sent again once, then the class's attempts are spent
        await router.flush()
        emulator.end_batches()
        await router.poll()
    # What chat.completions.create raises when the account is over its limit: a 429.
    with pytest.raises(openai.RateLimitError, match="Enqueued token limit reached") as limited:
        await router.results.wait("q", timeout=10)
    assert limited.value.code == "token_limit_exceeded"
    assert [b.status for b in emulator.openai.batches.values()] == ["failed", "failed"]
    assert (await router.results.status("q")).attempts == 2


async def test_a_lost_create_answer_is_adopted_by_its_intent_id(
    router: Router, emulator: Emulator, oa_sdk: openai.AsyncOpenAI
) -> None:
    # First, another router's batch on the same account (its own intent id 7), of the same
    # size and just before: count and time would pick it; the metadata does not.
    upload = await oa_sdk.files.create(
        file=("other.jsonl", b"".join(_line(f"o{i}") for i in range(2))), purpose="batch"
    )
    other = await oa_sdk.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"hybrid_router_intent": "7"},
    )
    emulator.clock.advance(1)
    for key in ("x", "y"):
        await defer(router, key, ask(f"lost {key}"))
    emulator.faults.fail_next("openai.batches.create", drop=True, after=True)
    report = await router.flush()
    assert report.uncertain == 1 and report.batches == []
    (lost,) = [b for b in emulator.openai.batches.values() if b.id != other.id]  # its answer never came
    await router.poll()
    rows = await raw_rows(router.store, "SELECT api_id, state FROM batches")
    assert [tuple(r) for r in rows] == [(lost.id, "in_progress")]
    emulator.end_batches()
    await router.poll()
    for key in ("x", "y"):
        assert isinstance(await router.results.wait(key, timeout=10), ChatCompletion)
    assert len(emulator.openai.batches) == 2  # nothing resubmitted


def _line(custom_id: str) -> bytes:
    body = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": ask(custom_id)}
    return json.dumps(body).encode() + b"\n"


@pytest.mark.parametrize(
    ("endpoint", "fault"),
    [
        ("openai.files.create", {"status": 500}),
        ("openai.files.create", {"drop": True}),
        ("openai.batches.create", {"status": 429, "retry_after": 3}),
    ],
    ids=["upload 500", "upload dropped", "create 429"],
)
async def test_a_refused_upload_or_create_puts_the_requests_back(
    router: Router, emulator: Emulator, endpoint: str, fault: dict[str, Any]
) -> None:
    await defer(router, "f", ask("try again"))
    emulator.faults.fail_next(endpoint, **fault)
    report = await router.flush()
    assert report.released == 1 and report.batches == [] and report.failed_provider == "openai"
    assert await router.store.state_counts() == {"pending": 1}
    assert not emulator.openai.batches
    report = await router.flush()
    assert len(report.batches) == 1
    emulator.end_batches()
    await router.poll()
    assert isinstance(await router.results.wait("f", timeout=10), ChatCompletion)


async def test_a_failed_retrieve_is_polled_again(router: Router, emulator: Emulator) -> None:
    await defer(router, "r", ask("poll me"))
    await router.flush()
    emulator.end_batches()
    emulator.faults.fail_next("openai.batches.retrieve", status=500)
    report = await router.poll()
    assert report.errors == 1 and report.ended == []
    assert (await router.results.status("r")).state == "submitted"
    report = await router.poll()
    assert len(report.ended) == 1
    assert isinstance(await router.results.wait("r", timeout=10), ChatCompletion)


async def test_batches_split_by_model(router: Router, emulator: Emulator) -> None:
    for i in range(3):
        await defer(router, f"m{i}", ask(f"mini {i}", GPT))
        await defer(router, f"n{i}", ask(f"nano {i}", GPT_NANO))
    report = await router.flush()
    assert len(report.batches) == 2 and report.requests == 6
    assert remote_models(emulator) == [{GPT}, {GPT_NANO}]
    emulator.end_batches()
    await router.poll()
    assert await router.store.state_counts() == {"succeeded": 6}


async def test_batches_split_at_the_request_limit(
    store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic, oa_sdk: openai.AsyncOpenAI
) -> None:
    async with opened(store_location, emulator, sdk, oa_sdk, "[batch]\nmax_requests = 2\n") as router:
        for i in range(5):
            await defer(router, f"q{i}", ask(f"q {i}"))
        report = await router.flush()
        assert [n for *_, n in await batches(router)] == [2, 2, 1]
        assert len(report.batches) == 3
        emulator.end_batches()
        await router.poll()
        assert await router.store.state_counts() == {"succeeded": 5}


async def test_anthropic_and_openai_requests_go_in_separate_batches(
    router: Router, emulator: Emulator
) -> None:
    await router.messages.submit(**ask_claude("claude one"), latency="daily", key="c1")
    await defer(router, "g1", ask("gpt one"))
    await router.messages.submit(**ask_claude("claude two"), latency="daily", key="c2")
    await defer(router, "g2", ask("gpt two"))
    report = await router.flush()
    assert len(report.batches) == 2
    assert sorted(await batches(router)) == [("anthropic", "in_progress", 2), ("openai", "in_progress", 2)]
    assert len(emulator.batches) == 1 and len(emulator.openai.batches) == 1
    emulator.end_batches()
    await router.poll()
    assert isinstance(await router.results.wait("g1", timeout=10), ChatCompletion)
    assert isinstance(await router.results.wait("g2", timeout=10), ChatCompletion)
    claude = await router.results.wait("c1", timeout=10)
    assert isinstance(claude, anthropic.types.Message)
    rows = await raw_rows(
        router.store, "SELECT provider, count(*) FROM ledger GROUP BY provider ORDER BY provider"
    )
    assert [tuple(r) for r in rows] == [("anthropic", 2), ("openai", 2)]


async def test_the_report_and_metrics_carry_the_provider_and_unknown_cost(
    router: Router, emulator: Emulator
) -> None:
    await router.messages.submit(**ask_claude("claude"), latency="daily", key="c")
    await defer(router, "g", ask("gpt"))
    await router.flush()
    emulator.end_batches()
    await router.poll()
    # A real-time OpenAI call of a model no price table knows.
    await router.store.record_now(
        LedgerEntry(
            at=router.clock(),
            lane="realtime",
            model="mystery-model-1",
            latency="realtime",
            tag=None,
            result_type="succeeded",
            usage=TokenCounts(input=10, output=5),
            provider="openai",
        )
    )
    report = await build_report(router.store, router.config, now=router.clock())
    by_name = {p.provider: p for p in report.providers}
    assert set(by_name) == {"anthropic", "openai"}
    assert by_name["anthropic"].calls == 1 and by_name["anthropic"].cost is not None
    assert by_name["anthropic"].cost > 0 and by_name["anthropic"].unpriced == 0
    gpt = by_name["openai"]
    assert gpt.calls == 2 and gpt.unpriced == 1 and gpt.unknown_models == ("mystery-model-1",)
    assert gpt.cost is not None and gpt.cost > 0  # the priced batch call; the unknown one is not 0
    text = render_text(report)
    assert "by provider" in text
    (line,) = [row for row in text.splitlines() if row.startswith("openai")]
    assert "+ unknown (1 unpriced)" in line
    assert report.to_json()["providers"][1]["unknown_models"] == ["mystery-model-1"]
    snapshot = await take(router.store, router.config)
    families = {f.name: f for f in metric_families(snapshot, DaemonView(owner="t", last_poll_age=None))}
    costs = {tuple(s.labels.values()): s.value for s in families["hybrid_router_provider_cost_usd"].samples}
    assert costs[("openai", "batch")] > 0 and costs[("anthropic", "batch")] > 0
    assert costs[("openai", "realtime")] == 0
    unpriced = {
        s.labels["provider"]: s.value for s in families["hybrid_router_provider_unpriced_requests"].samples
    }
    assert unpriced == {"anthropic": 0, "openai": 1}


async def test_an_escalated_openai_request_goes_real_time_through_openai(
    router: Router, emulator: Emulator
) -> None:
    ticket = await defer(router, "urgent", ask("now please"))
    await defer(router, "bad", ask("[emulator:error=invalid_request_error]"))
    bad = await router.store.get_by_key("bad")
    assert bad is not None
    assert await router.escalate_now([ticket.request_id, bad.id]) == [ticket.request_id, bad.id]
    reply = await router.results.wait("urgent", timeout=10)
    assert isinstance(reply, ChatCompletion) and reply.choices[0].message.content
    with pytest.raises(openai.BadRequestError):
        await router.results.wait("bad", timeout=10)
    assert not emulator.batches and not emulator.openai.batches
    assert [e.endpoint for e in emulator.journal].count("openai.chat.completions") == 2
    rows = await raw_rows(router.store, "SELECT provider, lane FROM ledger")
    assert [tuple(r) for r in rows] == [("openai", "realtime")]


async def test_files_that_cannot_be_deleted_are_logged_and_the_results_kept(
    router: Router, emulator: Emulator
) -> None:
    await defer(router, "d", ask("keep me"))
    await router.flush()
    emulator.end_batches()
    emulator.faults.fail_next("openai.files.delete", status=500)
    with capture_router_logs() as events:
        report = await router.poll()
    assert len(report.ended) == 1
    assert isinstance(await router.results.wait("d", timeout=10), ChatCompletion)
    (warning,) = [e for e in events if e["event"] == "batch_results_not_discarded"]
    assert warning["provider"] == "openai"
    assert len(emulator.openai.files) == 1  # the one that failed is left for the sweep
    # The daemon's purge sweeps: the file of the closed batch is deleted then.
    daemon = Daemon(router.config)
    daemon._router = router
    emulator.faults.fail_next("openai.files.delete", status=500)
    with capture_router_logs() as events:
        await daemon.purge()  # this sweep's delete fails too: logged, tried again next time
    assert [e["event"] for e in events if e["event"].startswith("openai_file")] == ["openai_file_not_deleted"]
    assert len(emulator.openai.files) == 1
    await daemon.purge()
    assert not emulator.openai.files


async def test_the_input_file_of_a_batch_never_created_is_swept(
    router: Router, emulator: Emulator, oa_sdk: openai.AsyncOpenAI
) -> None:
    # Another router's batch in progress, and a file of another tool: the sweep leaves both.
    other_input = await oa_sdk.files.create(file=("hybrid-router-7.jsonl", _line("o1")), purpose="batch")
    other = await oa_sdk.batches.create(
        input_file_id=other_input.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    unrelated = await oa_sdk.files.create(file=("mine.jsonl", _line("u1")), purpose="batch")
    await defer(router, "lost", ask("never created"))
    emulator.faults.fail_next("openai.batches.create", drop=True)  # dropped before it was handled
    report = await router.flush()
    assert report.uncertain == 1 and len(emulator.openai.batches) == 1
    (orphan,) = [f for f in emulator.openai.files.values() if f.id not in (other_input.id, unrelated.id)]
    assert orphan.filename.startswith("hybrid-router-")
    emulator.clock.advance(router.config.batch.reconcile_grace + 1)
    # The listing shows no batch with the intent's id: it was never created (the other one,
    # with no metadata, has the same count and time, but OpenAI keeps intent ids: not taken).
    await router.poll()
    assert await router.store.state_counts() == {"pending": 1}
    assert await sweep(router.providers, router.store, now=router.clock()) == {"anthropic": 0, "openai": 0}
    assert orphan.id in emulator.openai.files  # younger than ORPHAN_AGE: it could be mid-flush
    emulator.clock.advance(ORPHAN_AGE)
    with capture_router_logs() as events:
        swept = await sweep(router.providers, router.store, now=router.clock())
    assert swept == {"anthropic": 0, "openai": 1}
    (swept_event,) = [e for e in events if e["event"] == "provider_swept"]
    assert swept_event["deleted"] == 1
    assert emulator.openai.batches[other.id].status == "completed"
    kept = {other_input.id, unrelated.id, *_files_of(emulator, other.id)}
    assert set(emulator.openai.files) == kept and len(kept) == 3
    await router.flush()
    emulator.end_batches()
    await router.poll()
    assert isinstance(await router.results.wait("lost", timeout=10), ChatCompletion)
    assert set(emulator.openai.files) == kept  # our batch's files went after its ingest


def _files_of(emulator: Emulator, batch_id: str) -> set[str]:
    batch = emulator.openai.batches[batch_id]
    return {f for f in (batch.output_file_id, batch.error_file_id) if f is not None}


async def test_an_upload_whose_answer_was_lost_is_sent_again_and_its_file_swept(
    router: Router, emulator: Emulator
) -> None:
    await defer(router, "u", ask("upload twice"))
    emulator.faults.fail_next("openai.files.create", drop=True, after=True)  # stored, answer lost
    report = await router.flush()
    assert report.released == 1 and report.uncertain == 0 and not emulator.openai.batches
    (orphan,) = emulator.openai.files
    await router.flush()  # no batch can read a file whose id the router never had: sent again
    emulator.end_batches()
    await router.poll()
    assert isinstance(await router.results.wait("u", timeout=10), ChatCompletion)
    assert set(emulator.openai.files) == {orphan}
    emulator.clock.advance(ORPHAN_AGE)
    assert await sweep(router.providers, router.store, now=router.clock()) == {"anthropic": 0, "openai": 1}
    assert not emulator.openai.files


async def test_a_sweep_that_cannot_list_is_logged_and_skipped(router: Router, emulator: Emulator) -> None:
    emulator.faults.fail_next("openai.files.list", status=500)
    with capture_router_logs() as events:
        assert await sweep(router.providers, router.store, now=router.clock()) == {"anthropic": 0}
    (failed,) = [e for e in events if e["event"] == "provider_sweep_failed"]
    assert failed["provider"] == "openai"


@pytest.mark.sqlite_only
def test_providers_openai_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    config = RouterConfig.from_toml_text(
        '[providers.openai]\nbase_url = "http://127.0.0.1:9"\ntimeout = "30s"\nrealtime_concurrency = 4\n'
    )
    assert config.providers.openai is not None
    assert (config.providers.openai.timeout, config.providers.openai.realtime_concurrency) == (30.0, 4)
    assert RouterConfig.from_toml_text("").providers.openai is None
    with pytest.raises(ConfigError, match=r"providers\.openai\.api_key: .*OPENAI_API_KEY"):
        RouterConfig.from_toml_text('[providers.openai]\napi_key = "sk-secret"\n')
    with pytest.raises(ConfigError, match=r"providers\.openai\.base_url: expected an http\(s\) URL"):
        RouterConfig.from_toml_text('[providers.openai]\nbase_url = "ftp://x"\n')
    with pytest.raises(ConfigError, match=r"providers\.gemini: unknown key; expected one of: openai"):
        RouterConfig.from_toml_text("[providers.gemini]\n")


@pytest.mark.sqlite_only
async def test_openai_is_there_only_when_configured(
    tmp_path: Path, emulator: Emulator, sdk: anthropic.AsyncAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    config = engine_config(tmp_path / "a.db", emulator)
    async with Router(config, anthropic=sdk, scheduler=False) as plain:
        assert set(plain.providers) == {"anthropic"}
        with pytest.raises(RouterError, match=r"\[providers\.openai\].*OPENAI_API_KEY"):
            plain.openai_client  # noqa: B018
        with pytest.raises(RouterError, match="provider 'openai' is not configured"):
            await defer(plain, "k", ask("x"))
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    monkeypatch.setenv("OPENAI_BASE_URL", f"{emulator.url}/v1")
    async with Router(config, anthropic=sdk, scheduler=False) as both:
        assert set(both.providers) == {"anthropic", "openai"}
        assert str(both.openai_client.base_url).startswith(emulator.url)
