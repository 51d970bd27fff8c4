"""Prompt caching in the emulator (parallel batch waves, TTLs, minimum length) and the
cache_control rules, at the emulator and at the router's call time.

Everything goes through the real SDK in strict validation mode over 127.0.0.1; time only
moves when a test moves the emulator clock.
"""

from __future__ import annotations

import asyncio
import math
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import Message, Usage
from anthropic.types.messages import MessageBatchIndividualResponse

from router import InvalidRequestError, Router
from router.emulator import DEFAULT_BATCH_PARALLELISM, Emulator, EmulatorClock
from router.providers.anthropic.cache_rules import min_cacheable_tokens
from tests.helpers import interruptible

BOTH_ENGINES = True  # the call-time checks below store nothing, on either engine

START = 1_700_000_000.0
MODEL = "claude-haiku-4-5"  # a 4,096-token minimum cacheable prefix
REPO = Path(__file__).resolve().parents[1]
# A system block of `chars` characters is a prefix of ceil((chars + 25) / 4) tokens: the
# emulator counts its canonical JSON, {"text":"...","type":"text"} (see router.emulator.replies).
_BLOCK_OVERHEAD = len('{"text":"","type":"text"}')
RUBRIC = "Grade the answer against the rubric, one criterion at a time. " * 300
PREFIX_TOKENS = math.ceil((len(RUBRIC) + _BLOCK_OVERHEAD) / 4)


def text_of_tokens(tokens: int) -> str:
    """A system text whose block is a prefix of exactly `tokens` tokens."""
    return "r" * (4 * tokens - _BLOCK_OVERHEAD)


def judged(index: int, *, ttl: str | None = None, system: str = RUBRIC, model: str = MODEL) -> Any:
    cache_control: dict[str, Any] = {"type": "ephemeral"}
    if ttl is not None:
        cache_control["ttl"] = ttl
    return {
        "model": model,
        "max_tokens": 16,
        "system": [{"type": "text", "text": system, "cache_control": cache_control}],
        "messages": [{"role": "user", "content": f"Answer {index} to grade."}],
    }


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(clock=EmulatorClock(start=START), batch_seconds=60.0, seed=3) as emulator:
        yield emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    sdk = anthropic.AsyncAnthropic(
        base_url=emu.url, api_key="test", max_retries=0, _strict_response_validation=True
    )
    yield sdk
    await sdk.close()


async def create_batch(client: anthropic.AsyncAnthropic, requests: list[Any]) -> str:
    batch = await client.messages.batches.create(
        requests=[{"custom_id": f"r{i}", "params": params} for i, params in enumerate(requests)]
    )
    return batch.id


async def usages_of(client: anthropic.AsyncAnthropic, batch_id: str) -> dict[str, Usage]:
    """Usage of each succeeded result by custom_id, each line re-validated strictly."""
    usages: dict[str, Usage] = {}
    async for line in await client.messages.batches.results(batch_id):
        result = MessageBatchIndividualResponse.model_validate(line.model_dump(mode="json")).result
        assert result.type == "succeeded"
        usages[line.custom_id] = result.message.usage
    return usages


async def run_batch(emu: Emulator, client: anthropic.AsyncAnthropic, requests: list[Any]) -> dict[str, Usage]:
    """A batch sent now and ended by its turnaround on the emulator clock; its usage by custom_id."""
    batch_id = await create_batch(client, requests)
    emu.clock.advance(emu.batch_seconds)
    return await usages_of(client, batch_id)


def reads(usages: dict[str, Usage]) -> set[str]:
    return {custom_id for custom_id, usage in usages.items() if usage.cache_read_input_tokens}


# -- cold, primed, back to back --------------------------------------------------------------------


async def test_a_cold_batch_reads_nothing_every_request_writes_the_prefix(
    emu: Emulator, client: anthropic.AsyncAnthropic
) -> None:
    usages = await run_batch(emu, client, [judged(i) for i in range(140)])
    assert len(usages) == 140 and reads(usages) == set()
    for usage in usages.values():
        assert usage.cache_creation_input_tokens == PREFIX_TOKENS
        assert usage.cache_creation is not None
        assert usage.cache_creation.ephemeral_5m_input_tokens == PREFIX_TOKENS
        assert usage.cache_creation.ephemeral_1h_input_tokens == 0


@pytest.mark.parametrize("primer", ["realtime", "batch"])
async def test_a_primed_batch_reads_the_prefix_in_every_request(
    emu: Emulator, client: anthropic.AsyncAnthropic, primer: str
) -> None:
    if primer == "realtime":
        first = (await client.messages.create(**judged(-1, ttl="1h"))).usage
    else:
        (first,) = (await run_batch(emu, client, [judged(-1, ttl="1h")])).values()
    assert (
        first.cache_creation is not None and first.cache_creation.ephemeral_1h_input_tokens == PREFIX_TOKENS
    )
    usages = await run_batch(emu, client, [judged(i, ttl="1h") for i in range(140)])
    assert len(reads(usages)) == 140
    assert {(u.cache_read_input_tokens, u.cache_creation_input_tokens) for u in usages.values()} == {
        (PREFIX_TOKENS, 0)
    }


async def test_a_batch_right_after_a_finished_one_reads_at_a_high_rate(
    emu: Emulator, client: anthropic.AsyncAnthropic
) -> None:
    first = await run_batch(emu, client, [judged(i) for i in range(100)])
    second = await run_batch(emu, client, [judged(i) for i in range(100, 200)])
    assert (len(reads(first)), len(reads(second))) == (0, 100)


@pytest.mark.parametrize(
    ("width", "readers"), [(1, 399), (100, 300), (DEFAULT_BATCH_PARALLELISM, 250), (400, 0)]
)
async def test_a_wave_reads_the_writes_of_earlier_waves_only(
    emu: Emulator, client: anthropic.AsyncAnthropic, width: int, readers: int
) -> None:
    emu.batch_parallelism = width
    usages = await run_batch(emu, client, [judged(i) for i in range(400)])
    # Waves take the requests in request order: the first wave writes, every later one reads.
    assert reads(usages) == {f"r{i}" for i in range(width, 400)} and len(reads(usages)) == readers


async def test_the_width_is_the_one_in_force_when_the_batch_was_created(
    emu: Emulator, client: anthropic.AsyncAnthropic
) -> None:
    assert emu.batch_parallelism == DEFAULT_BATCH_PARALLELISM
    batch_id = await create_batch(client, [judged(i) for i in range(20)])
    emu.batch_parallelism = 1  # sequential from now on; the batch above keeps its width
    emu.clock.advance(60)
    assert reads(await usages_of(client, batch_id)) == set()
    later = await run_batch(emu, client, [judged(i, system=RUBRIC + "v2") for i in range(20)])
    assert reads(later) == {f"r{i}" for i in range(1, 20)}


async def test_the_width_is_set_in_process_and_over_http() -> None:
    async with (
        Emulator(clock=EmulatorClock(start=START), batch_parallelism=1) as emu,
        httpx2.AsyncClient(base_url=emu.url) as http,
    ):
        assert emu.config.batch_parallelism == 1 and "batch_parallelism=1" in repr(emu)
        assert (await http.get("/_emulator/config")).json()["batch_parallelism"] == 1
        changed = (await http.post("/_emulator/config", json={"batch_parallelism": 40})).json()
        assert changed["batch_parallelism"] == 40 and emu.batch_parallelism == 40
        refused = await http.post("/_emulator/config", json={"batch_parallelism": 0})
        assert refused.status_code == 400
        assert refused.json()["error"]["message"].startswith("batch_parallelism:")
        assert emu.batch_parallelism == 40


# -- one cache for both lanes ----------------------------------------------------------------------


async def test_the_realtime_lane_and_batches_share_one_cache(
    emu: Emulator, client: anthropic.AsyncAnthropic
) -> None:
    batch_id = await create_batch(client, [judged(i) for i in range(3)])
    emu.clock.advance(10)
    # The batch has not ended: none of its writes is readable yet, so this call writes...
    during = (await client.messages.create(**judged(99))).usage
    assert (during.cache_read_input_tokens, during.cache_creation_input_tokens) == (0, PREFIX_TOKENS)
    emu.clock.advance(50)
    # ...and the batch, processed when it ends 50 s later, reads what the call wrote.
    assert len(reads(await usages_of(client, batch_id))) == 3
    cold = await run_batch(emu, client, [judged(i, system=RUBRIC + "other") for i in range(3)])
    assert reads(cold) == set()
    written = {usage.cache_creation_input_tokens for usage in cold.values()}
    after = (await client.messages.create(**judged(98, system=RUBRIC + "other"))).usage
    assert written == {after.cache_read_input_tokens} and after.cache_creation_input_tokens == 0


# -- TTLs on the emulator clock --------------------------------------------------------------------


@pytest.mark.parametrize(("ttl", "readers"), [("5m", 0), ("1h", 10)])
async def test_a_primer_outlives_a_ten_minute_batch_only_with_the_one_hour_ttl(
    emu: Emulator, client: anthropic.AsyncAnthropic, ttl: str, readers: int
) -> None:
    emu.batch_seconds = 600
    await client.messages.create(**judged(-1, ttl=ttl))
    usages = await run_batch(emu, client, [judged(i, ttl=ttl) for i in range(10)])
    assert len(reads(usages)) == readers


async def test_a_read_refreshes_the_ttl_and_an_unused_entry_expires(
    emu: Emulator, client: anthropic.AsyncAnthropic
) -> None:
    async def read_tokens(index: int) -> int:
        return (await client.messages.create(**judged(index, ttl="1h"))).usage.cache_read_input_tokens or 0

    assert await read_tokens(0) == 0  # writes
    emu.clock.advance(3599)
    assert await read_tokens(1) == PREFIX_TOKENS  # reads, and the hour starts again
    emu.clock.advance(3599)
    assert await read_tokens(2) == PREFIX_TOKENS
    emu.clock.advance(3600)  # an hour without a use: gone
    assert await read_tokens(3) == 0
    emu.clock.advance(300)
    five = (await client.messages.create(**judged(4))).usage  # a 5m entry of the same prefix
    assert five.cache_read_input_tokens == PREFIX_TOKENS  # the 1 h entry written just before
    # Batches are read at their end, on the same clock: 10 minutes later the 1 h entry still serves.
    emu.batch_seconds = 600
    assert len(reads(await run_batch(emu, client, [judged(i, ttl="1h") for i in range(5)]))) == 5


# -- minimum cacheable length ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "minimum"),
    [("claude-haiku-4-5", 4096), ("claude-opus-4-6", 4096), ("claude-sonnet-4-6", 1024)],
)
async def test_a_prefix_below_the_model_minimum_is_silently_not_cached(
    emu: Emulator, client: anthropic.AsyncAnthropic, model: str, minimum: int
) -> None:
    assert min_cacheable_tokens(model) == minimum
    short, enough = text_of_tokens(minimum - 1), text_of_tokens(minimum)
    for _ in range(2):
        below = (await client.messages.create(**judged(0, system=short, model=model))).usage
        assert (below.cache_creation_input_tokens, below.cache_read_input_tokens) == (0, 0)
        counted = await client.messages.count_tokens(
            model=model, system=judged(0, system=short)["system"], messages=judged(0)["messages"]
        )
        assert below.input_tokens == counted.input_tokens
    written = (await client.messages.create(**judged(0, system=enough, model=model))).usage
    assert written.cache_creation_input_tokens == minimum
    usages = await run_batch(emu, client, [judged(i, system=short, model=model) for i in range(3)])
    assert {(u.cache_creation_input_tokens, u.cache_read_input_tokens) for u in usages.values()} == {(0, 0)}


async def test_only_the_breakpoints_past_the_minimum_count(client: anthropic.AsyncAnthropic) -> None:
    system = [
        {"type": "text", "text": text_of_tokens(1000), "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "text", "text": RUBRIC, "cache_control": {"type": "ephemeral"}},
    ]
    body: Any = {**judged(0), "system": system}
    first = (await client.messages.create(**body)).usage
    # The 1,000-token breakpoint is below the 4,096 minimum: everything up to the second is a 5m write.
    assert first.cache_creation is not None
    assert first.cache_creation.ephemeral_1h_input_tokens == 0
    assert first.cache_creation.ephemeral_5m_input_tokens == first.cache_creation_input_tokens
    assert first.cache_creation_input_tokens == 1000 + PREFIX_TOKENS


async def test_cache_creation_is_split_by_ttl(client: anthropic.AsyncAnthropic) -> None:
    system = [
        {"type": "text", "text": RUBRIC, "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "text", "text": text_of_tokens(500), "cache_control": {"type": "ephemeral", "ttl": "5m"}},
    ]
    body: Any = {**judged(0), "system": system}
    first = (await client.messages.create(**body)).usage
    assert first.cache_creation is not None
    assert (
        first.cache_creation.ephemeral_1h_input_tokens,
        first.cache_creation.ephemeral_5m_input_tokens,
    ) == (
        PREFIX_TOKENS,
        500,
    )
    assert first.cache_creation_input_tokens == PREFIX_TOKENS + 500
    second = (await client.messages.create(**body)).usage
    assert (second.cache_read_input_tokens, second.cache_creation_input_tokens) == (PREFIX_TOKENS + 500, 0)


# -- the 20-block lookback ------------------------------------------------------------------------


@pytest.mark.parametrize(("blocks", "read"), [(1, True), (19, True), (20, False)])
async def test_a_read_looks_back_up_to_20_blocks_for_an_entry_another_request_wrote(
    client: anthropic.AsyncAnthropic, blocks: int, read: bool
) -> None:
    await client.messages.create(**judged(0))  # writes the system prefix at the system block
    # The same system, unmarked, then `blocks` user blocks, the last one marked: the system
    # block is `blocks` blocks back from that breakpoint.
    content: list[Any] = [{"type": "text", "text": f"part {i}"} for i in range(blocks)]
    content[-1]["cache_control"] = {"type": "ephemeral"}
    body: Any = {**judged(1), "system": RUBRIC, "messages": [{"role": "user", "content": content}]}
    counted = await client.messages.count_tokens(model=MODEL, system=RUBRIC, messages=body["messages"])
    usage = (await client.messages.create(**body)).usage
    assert usage.cache_read_input_tokens == (PREFIX_TOKENS if read else 0)
    # Writes happen at the breakpoint only: everything up to it that was not read.
    assert usage.cache_creation_input_tokens == counted.input_tokens - (usage.cache_read_input_tokens or 0)
    assert usage.input_tokens == 0


# -- bad cache_control: the emulator and the router refuse the same things -------------------------


def _body(**changes: Any) -> dict[str, Any]:
    return {**judged(0), **changes}


def _block(text: str = "x", **cache_control: Any) -> dict[str, Any]:
    return {"type": "text", "text": text, "cache_control": {"type": "ephemeral", **cache_control}}


ORDER = (
    "a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block."
    " Note that blocks are processed in the following order: `tools`, `system`, `messages`."
)
TOOL = {"name": "lookup", "input_schema": {"type": "object"}}
BAD_CACHE_CONTROL: dict[str, tuple[dict[str, Any], str]] = {
    "unknown ttl": (
        _body(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, _block(ttl="2h")]}]),
        "messages.0.content.1.cache_control.ttl: Input should be '5m' or '1h'",
    ),
    "unknown type": (
        _body(system=[{"type": "text", "text": "s", "cache_control": {"type": "permanent"}}]),
        "system.0.cache_control.type: Input should be 'ephemeral'",
    ),
    "unknown key": (
        _body(tools=[{**TOOL, "cache_control": {"type": "ephemeral", "scope": "global"}}]),
        "tools.0.cache_control.scope: Extra inputs are not permitted",
    ),
    "not an object": (
        _body(cache_control="ephemeral"),
        "cache_control: Input should be a valid dictionary",
    ),
    "on a thinking block": (
        _body(
            messages=[
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "thinking",
                            "thinking": "t",
                            "signature": "s",
                            "cache_control": {"type": "ephemeral"},
                        }
                    ],
                },
                {"role": "user", "content": "more"},
            ]
        ),
        "messages.1.content.0.cache_control: cache_control cannot be set for thinking blocks",
    ),
    "on an empty text block": (
        _body(system=[_block("")]),
        "system.0.text: cache_control cannot be set for empty text blocks",
    ),
    "five breakpoints": (
        _body(system=[_block("a"), _block("b"), _block("c"), _block("d"), _block("e")]),
        "system.4.cache_control: A maximum of 4 blocks with cache_control may be provided. Found 5.",
    ),
    "four breakpoints and the top-level one": (
        _body(
            system=[_block("a"), _block("b"), _block("c"), _block("d")], cache_control={"type": "ephemeral"}
        ),
        "cache_control: A maximum of 4 blocks with cache_control may be provided. Found 5.",
    ),
    "1h after 5m, tools before system": (
        _body(tools=[{**TOOL, "cache_control": {"type": "ephemeral"}}], system=[_block("s", ttl="1h")]),
        f"system.0.cache_control.ttl: {ORDER}",
    ),
    "1h at the top level after a 5m block": (
        _body(cache_control={"type": "ephemeral", "ttl": "1h"}),
        f"cache_control: {ORDER}",
    ),
    "1h inside a tool_result after 5m": (
        _body(
            messages=[
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": [_block("r", ttl="1h")]}
                    ],
                },
            ]
        ),
        f"messages.2.content.0.content.0.cache_control.ttl: {ORDER}",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CACHE_CONTROL))
async def test_the_emulator_refuses_bad_cache_control_naming_the_field(
    emu: Emulator, client: anthropic.AsyncAnthropic, case: str
) -> None:
    body, message = BAD_CACHE_CONTROL[case]
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.post("/v1/messages", body=body, cast_to=Message)
    assert caught.value.type == "invalid_request_error" and caught.value.api_message == message
    with pytest.raises(anthropic.BadRequestError) as in_batch:
        await create_batch(client, [judged(0), body])
    assert in_batch.value.api_message == f"requests.1.params.{message}"
    assert emu.batches == {}


@pytest.mark.parametrize("case", list(BAD_CACHE_CONTROL))
async def test_the_router_refuses_bad_cache_control_at_call_time_and_stores_nothing(
    router: Router, emulator: Emulator, case: str
) -> None:
    body, message = BAD_CACHE_CONTROL[case]
    with pytest.raises(InvalidRequestError) as caught:
        await router.messages.submit(**body, latency="daily")
    assert str(caught.value) == message
    with pytest.raises(InvalidRequestError, match=re.escape(message)):
        await router.messages.create(**body, latency="daily")
    assert await router.store.state_counts() == {}
    assert emulator.journal == []


async def test_the_router_stores_good_cache_control_as_given(router: Router, emulator: Emulator) -> None:
    body = _body(
        tools=[{**TOOL, "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        system=[_block("s", ttl="1h"), _block("t")],
        messages=[{"role": "user", "content": [_block("q", ttl="5m")]}],
    )
    ticket = await router.messages.submit(**body, latency="daily")
    assert ticket.created and await router.store.state_counts() == {"pending": 1}
    assert emulator.journal == []


async def test_a_message_level_cache_control_is_refused_by_both(
    router: Router, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    body = _body(messages=[{"role": "user", "content": "q", "cache_control": {"type": "ephemeral"}}])
    with pytest.raises(
        InvalidRequestError, match=r"^messages\.0\.cache_control: Extra inputs are not permitted"
    ):
        await router.messages.submit(**body, latency="daily")
    with pytest.raises(anthropic.BadRequestError, match=r"messages\.0\.cache_control: Extra inputs"):
        await sdk.post("/v1/messages", body=body, cast_to=Message)
    assert await router.store.state_counts() == {}


# -- the command lines -----------------------------------------------------------------------------


async def _read_url(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    async with asyncio.timeout(30):
        while True:
            line = (await process.stdout.readline()).decode()
            assert line, "the emulator exited before printing its URL"
            if match := re.search(r"listening on (http://\S+)", line):
                return match.group(1)


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "router.emulator", "--port", "0", "--batch-parallelism", "2", "--manual-clock", str(START)],
        ["-m", "router.cli", "emulate", "--port", "0", "--batch-parallelism", "2"],
    ],
    ids=["python -m router.emulator", "hybrid-router emulate"],
)
async def test_batch_parallelism_on_the_command_line(argv: list[str]) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=interruptible,
    )
    try:
        url = await _read_url(process)
        async with httpx2.AsyncClient(base_url=url) as http:
            assert (await http.get("/_emulator/config")).json()["batch_parallelism"] == 2
            sdk = anthropic.AsyncAnthropic(base_url=url, api_key="k", _strict_response_validation=True)
            batch_id = await create_batch(sdk, [judged(i) for i in range(5)])
            assert (await http.post("/_emulator/batches/end")).json() == {"ended": 1}
            assert reads(await usages_of(sdk, batch_id)) == {"r2", "r3", "r4"}
            await sdk.close()
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C: how both commands are stopped by hand
        returncode = await asyncio.wait_for(process.wait(), 60)  # a safety net only
    assert returncode == 0


BAD_WIDTH = {
    "python -m router.emulator": (
        ["-m", "router.emulator", "--batch-parallelism", "0"],
        "python -m router.emulator: error: argument --batch-parallelism: expected an integer of at least 1,"
        " got '0'",
    ),
    "hybrid-router emulate": (
        ["-m", "router.cli", "emulate", "--batch-parallelism", "0"],
        "hybrid-router: emulate --batch-parallelism 0: expected a wave width of at least 1"
        " (1: one request at a time)",
    ),
}


async def test_a_batch_parallelism_below_one_is_one_line_and_exit_code_2() -> None:
    async def run(argv: list[str]) -> tuple[int | None, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *argv, cwd=REPO, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        _, err = await asyncio.wait_for(process.communicate(), 60)
        return process.returncode, err.decode().splitlines()[-1]

    outcomes = await asyncio.gather(*(run(argv) for argv, _ in BAD_WIDTH.values()))
    for (name, (_, line)), outcome in zip(BAD_WIDTH.items(), outcomes, strict=True):
        assert outcome == (2, line), name
