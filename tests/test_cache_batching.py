"""Cache-aware flushing: prefix groups kept together, primed, and sent with the 1-hour TTL.

Every assertion on what was sent reads the emulator's journal (`journal_batches`: each
batch's custom_ids and the TTLs of each request's cache breakpoints, in body order).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from router import Router, RouterConfig
from router.cache_report import cache_report
from router.emulator import Emulator
from router.policy import format_effective_policy
from router.store import custom_id_for
from tests.engine import creates, quiet_router
from tests.stores import raw_rows, store_toml

BOTH_ENGINES = True

MODEL = "claude-sonnet-4-5"  # caches prefixes of 1,024 tokens or more
RUBRIC = "Grade the answer for accuracy, completeness and clarity, from 1 to 5. " * 80  # ~1,400 tokens
CLASSES = """
[classes.evals]
route = "batch"
deadline = "1d"
cache_ttl = "{ttl}"
cache_priming = "{priming}"

[classes.tight]
route = "batch"
deadline = "2h"
"""


def graded(answer: str, *, rubric: str = RUBRIC, model: str = MODEL, **mark: Any) -> dict[str, Any]:
    """submit() keywords of one judge request: the rubric as a cached system block."""
    return {
        "model": model,
        "max_tokens": 16,
        "system": [{"type": "text", "text": rubric, "cache_control": {"type": "ephemeral", **mark}}],
        "messages": [{"role": "user", "content": answer}],
        "latency": "evals",
    }


@pytest.fixture
async def make_router(
    store_location: str, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> AsyncIterator[Any]:
    emulator.journal_batches = True
    opened: list[Any] = []

    async def make(ttl: str = "1h", priming: str = "off", extra: str = "") -> Router:
        cm = quiet_router(store_location, emulator, sdk, extra + CLASSES.format(ttl=ttl, priming=priming))
        opened.append(cm)
        return await cm.__aenter__()

    yield make
    for cm in reversed(opened):
        await cm.__aexit__(None, None, None)


def sent(emulator: Emulator) -> list[tuple[tuple[str, tuple[str, ...]], ...]]:
    """The requests of each accepted batches.create, in order."""
    return [e.batch_requests for e in creates(emulator) if e.status == 200]


async def ids(router: Router, tickets: list[Any]) -> list[str]:
    return [custom_id_for(t.request_id) for t in tickets]


async def test_1h_rewrites_the_marks_sent_and_leaves_the_stored_request(
    make_router: Any, emulator: Emulator
) -> None:
    router = await make_router(ttl="1h")
    tickets = [await router.messages.submit(**graded(f"answer {i}")) for i in range(3)]
    report = await router.flush("evals")
    assert report.requests == 3
    (batch,) = sent(emulator)
    assert [ttls for _, ttls in batch] == [("1h",)] * 3
    # The body was streamed with an exact Content-Length: the emulator got every byte.
    first = tickets[0].request_id
    stored = await raw_rows(router.store, f"SELECT params FROM request_params WHERE id = {first}")
    params = json.loads(bytes(stored[0][0]))
    assert params["system"][0]["cache_control"] == {"type": "ephemeral"}  # as the caller sent it
    emulator.end_batches()
    await router.poll()
    message = await router.results.wait(tickets[0].key)
    assert message.usage.cache_creation is not None
    assert message.usage.cache_creation.ephemeral_1h_input_tokens > 0


async def test_keep_sends_the_marks_as_written(make_router: Any, emulator: Emulator) -> None:
    router = await make_router(ttl="keep")
    await router.messages.submit(**graded("one"))
    await router.messages.submit(**graded("two", ttl="1h"))
    await router.flush("evals")
    (batch,) = sent(emulator)
    assert [ttls for _, ttls in batch] == [("5m",), ("1h",)]


async def test_a_flush_keeps_each_group_together_and_splits_only_at_the_limit(
    make_router: Any, emulator: Emulator
) -> None:
    router = await make_router(extra="[batch]\nmax_requests = 4\n")
    other = "Another rubric, for tone rather than accuracy. " * 120
    a, b, plain = [], [], []
    for i in range(3):  # arriving interleaved
        a.append(await router.messages.submit(**graded(f"a{i}")))
        b.append(await router.messages.submit(**graded(f"b{i}", rubric=other)))
        plain.append(
            await router.messages.submit(
                model=MODEL, max_tokens=16, messages=[{"role": "user", "content": f"p{i}"}], latency="evals"
            )
        )
    report = await router.flush("evals")
    assert len(report.batches) == 3  # 9 requests, at most 4 a batch
    # Group after group, oldest first (a batch lists its requests in id order); group b is
    # split at the limit, its parts sent back to back; the plain requests after the groups.
    a_ids, b_ids, plain_ids = await ids(router, a), await ids(router, b), await ids(router, plain)
    batches = [{cid for cid, _ in batch} for batch in sent(emulator)]
    assert batches == [{*a_ids, b_ids[0]}, set(b_ids[1:]), set(plain_ids)]
    assert all(ttls == () for _, ttls in sent(emulator)[2])  # nothing to rewrite


async def test_a_cold_group_is_primed_and_the_rest_follows_its_primer(
    make_router: Any, emulator: Emulator
) -> None:
    router = await make_router(priming="batch")
    other = "Another rubric, for tone rather than accuracy. " * 120
    first = [await router.messages.submit(**graded(f"a{i}")) for i in range(25)]
    second = [await router.messages.submit(**graded(f"b{i}", rubric=other)) for i in range(20)]
    small = [await router.messages.submit(**graded(f"c{i}", rubric=other + "!")) for i in range(3)]
    report = await router.flush("evals")
    assert report.primers == 2 and report.plan is not None and report.plan.held
    primers, smalls = sent(emulator)
    assert [cid for cid, _ in primers] == await ids(router, [first[0], second[0]])  # one small batch
    assert [cid for cid, _ in smalls] == await ids(router, small)  # below cache_prime_min: sent now
    # Until a primer ends, the rest of its group stays pending.
    assert (await router.flush("evals")).requests == 0
    emulator.end_batches()
    await router.poll()
    report = await router.flush("evals")
    assert report.requests == 24 + 19
    assert [cid for cid, _ in sent(emulator)[2]] == await ids(router, [*first[1:], *second[1:]])
    emulator.end_batches()
    await router.poll()
    for ticket in [*first[1:], *second[1:]]:
        message = await router.results.wait(ticket.key)
        assert message.usage.cache_read_input_tokens > 0, ticket.key


async def test_a_warm_group_is_not_primed(make_router: Any, emulator: Emulator) -> None:
    router = await make_router(priming="batch")
    await router.messages.submit(**graded("seed"))
    await router.flush("evals")
    emulator.end_batches()
    await router.poll()
    for i in range(25):
        await router.messages.submit(**graded(f"a{i}"))
    report = await router.flush("evals")
    assert report.primers == 0 and report.requests == 25


async def test_priming_is_skipped_when_it_would_risk_the_deadline(
    make_router: Any, emulator: Emulator
) -> None:
    # "tight" has a 2 h deadline: two turnarounds of the 1 h prior plus the margin do not fit.
    router = await make_router(priming="batch")
    for i in range(25):
        await router.messages.submit(**{**graded(f"a{i}"), "latency": "tight"})
    report = await router.flush("tight")
    assert report.primers == 0 and report.requests == 25
    assert len(sent(emulator)) == 1


async def test_a_prefix_below_the_minimum_is_sent_as_it_is(make_router: Any, emulator: Emulator) -> None:
    router = await make_router(priming="batch", ttl="1h")
    for i in range(25):  # ~350 tokens of rubric: below Sonnet 4.5's 1,024
        await router.messages.submit(**graded(f"a{i}", rubric=RUBRIC[:1400]))
    report = await router.flush("evals")
    assert report.primers == 0 and report.requests == 25
    assert report.plan is not None and len(report.plan.too_short) == 1
    (batch,) = sent(emulator)
    assert {ttls for _, ttls in batch} == {("5m",)}  # no rewrite, no priming


async def test_a_young_group_waits_within_its_deadline(make_router: Any, emulator: Emulator) -> None:
    router = await make_router(extra="", priming="off")
    router.config = router.config.model_copy(
        update={
            "classes": {
                **router.config.classes,
                "evals": router.config.classes["evals"].model_copy(update={"cache_group_wait": 300.0}),
            }
        }
    )
    for i in range(3):
        await router.messages.submit(**graded(f"a{i}"))
    assert (await router.flush("evals")).requests == 0
    emulator.clock.advance(301)
    assert (await router.flush("evals")).requests == 3


async def test_the_report_shows_cache_figures_per_group_and_tag(
    make_router: Any, emulator: Emulator, store_location: str, tmp_path: Path
) -> None:
    router = await make_router(priming="batch")
    for i in range(25):
        await router.messages.submit(**graded(f"a{i}"), tag="judge")
    for i in range(4):  # ~350 tokens: below the minimum, never cached
        await router.messages.submit(**graded(f"s{i}", rubric=RUBRIC[:1400]), tag="short")
    for _ in range(2):  # the primer, then the rest
        await router.flush("evals")
        emulator.end_batches()
        await router.poll()
    report = await cache_report(router.store, router.config)
    judge, short = report.tags
    assert (judge.name, judge.requests, judge.hits, judge.uncached_prefix) == ("judge", 25, 24, 0)
    # One 1-hour write (2 x input) and 24 reads (0.1 x), at the batch price: 8.8 % of list.
    assert judge.prefix_pct is not None and round(judge.prefix_pct, 1) == 8.8
    assert (short.requests, short.too_short) == (4, 4)
    # The CLI, in a process of its own, prints the section.
    cfg = tmp_path / "router.toml"
    cfg.write_text(f"[store]\n{store_toml(store_location)}\n" + CLASSES.format(ttl="1h", priming="batch"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli", "-c", str(cfg), "report",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert "Prompt cache" in text
    assert re.search(r"^  judge\s+claude-sonnet-4-5\s+25\s+96\.0%.*8\.8%$", text, re.MULTILINE), text
    assert "not cacheable (too short): 4 request(s) in 1 group(s)" in text


async def test_validate_names_short_prefixes_by_class_and_rule(
    make_router: Any, store_location: str, tmp_path: Path
) -> None:
    rules = '[[rules]]\ntag = "judge-*"\nclass = "evals"\n'
    router = await make_router()
    for i in range(3):  # ~350 tokens, where Sonnet 4.5 caches 1,024 or more
        await router.messages.submit(**graded(f"s{i}", rubric=RUBRIC[:1400]), tag="judge-short")
    await router.messages.submit(**graded("long"), tag="judge-long")
    cfg = tmp_path / "router.toml"
    cfg.write_text(
        f"[store]\n{store_toml(store_location)}\n" + CLASSES.format(ttl="1h", priming="batch") + rules
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli", "validate", str(cfg), "--store",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    notes = [line for line in out.decode().splitlines() if "below" in line]
    assert notes == [
        "  note: class evals, tag judge-short (rules[0]): the typical marked prefix (~357 tokens) is below"
        " claude-sonnet-4-5's minimum cacheable length (1,024); such requests are sent as they are,"
        " never cached"
    ]


def test_validate_names_a_class_with_priming_and_no_deadline_room() -> None:
    config = RouterConfig.from_toml_text(
        '[classes.quick]\nroute = "batch"\ndeadline = "2h"\ncache_priming = "batch"\n'
        '[classes.slow]\nroute = "batch"\ndeadline = "1d"\ncache_priming = "batch"\n'
    )
    text = format_effective_policy(config, "x.toml")
    assert 'note: quick: cache_priming = "batch" but its deadline 2h leaves no room for priming' in text
    assert "note: slow" not in text
