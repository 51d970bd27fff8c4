"""Emulator faults added for the batch engine at scale: partial batches, lost answers, mid-line cuts."""

from __future__ import annotations

from collections import Counter

import anthropic
import httpx2
import pytest

from router.emulator import Emulator, EmulatorClock, FaultConfig, OutcomeConfig
from tests.test_emulator import HEADERS, START, client, emu, make_client, request, results_of

__all__ = ["client", "emu"]  # fixtures shared with test_emulator.py


async def test_partial_batch_processes_a_share_and_expires_the_rest() -> None:
    emu = Emulator(
        clock=EmulatorClock(start=START),
        batch_seconds=60,
        outcomes=OutcomeConfig(partial_rate=1.0, partial_done=0.3),
    )
    async with emu:
        sdk = make_client(emu)
        batch = await sdk.messages.batches.create(requests=[request(f"r{i}", f"q{i}") for i in range(10)])
        emu.clock.advance(3600)  # a partial batch runs to the 24 h limit, not batch_seconds
        assert (await sdk.messages.batches.retrieve(batch.id)).processing_status == "in_progress"
        emu.clock.advance(24 * 3600)
        ended = await sdk.messages.batches.retrieve(batch.id)
        assert ended.processing_status == "ended"
        assert (ended.request_counts.succeeded, ended.request_counts.expired) == (3, 7)
        by_type = Counter(r.result.type for r in await results_of(sdk, batch.id))
        assert by_type == {"succeeded": 3, "expired": 7}
        await sdk.close()


async def test_partial_batch_ended_early_is_partial_too() -> None:
    emu = Emulator(clock=EmulatorClock(start=START), outcomes=OutcomeConfig(partial_rate=1.0))
    async with emu:
        sdk = make_client(emu)
        batch = await sdk.messages.batches.create(requests=[request(f"r{i}", "x") for i in range(4)])
        emu.end_batches()
        counts = (await sdk.messages.batches.retrieve(batch.id)).request_counts
        assert (counts.succeeded, counts.expired) == (2, 2)
        await sdk.close()


async def test_partial_rate_is_per_batch_and_seeded() -> None:
    emu = Emulator(clock=EmulatorClock(start=START), outcomes=OutcomeConfig(partial_rate=0.5), seed=3)
    async with emu:
        sdk = make_client(emu)
        for _ in range(20):
            await sdk.messages.batches.create(requests=[request("a", "x"), request("b", "y")])
        emu.end_batches()
        partial = [b.partial_done is not None for b in emu.batches.values()]
        assert 3 <= sum(partial) <= 17
        for batch in emu.batches.values():
            expected = 1 if batch.partial_done is not None else 0
            assert batch.request_counts["expired"] == expected
        await sdk.close()
    with pytest.raises(ValueError):
        OutcomeConfig(partial_done=1.5)


async def test_lost_answer_after_the_batch_was_created(
    emu: Emulator, client: anthropic.AsyncAnthropic
) -> None:
    emu.faults.fail_next("batches.create", drop=True, after=True)
    with pytest.raises(anthropic.APIConnectionError):
        await client.messages.batches.create(requests=[request("a", "x")])
    assert len(emu.batches) == 1  # it exists: only the answer was lost
    assert emu.journal[-1].status == 0
    listed = await client.messages.batches.list()
    assert [b.id for b in listed.data] == list(emu.batches)


async def test_lost_answer_rate(emu: Emulator, client: anthropic.AsyncAnthropic) -> None:
    emu.faults.set("batches.create", drop_after=1.0)
    for _ in range(3):
        with pytest.raises(anthropic.APIConnectionError):
            await client.messages.batches.create(requests=[request("a", "x")])
    assert len(emu.batches) == 3
    assert FaultConfig(drop_after=0.25).rates_for("batches.create").drop_after == 0.25


async def test_results_stream_cut_mid_line(emu: Emulator, client: anthropic.AsyncAnthropic) -> None:
    batch = await client.messages.batches.create(requests=[request(f"r{i}", "x") for i in range(10)])
    emu.end_batches()
    full = b"".join(emu.batches[batch.id].result_lines())
    cut = full.index(b"\n") + 25  # a few bytes into the second line
    emu.faults.set("batches.results", results_cut_bytes=cut)
    received = b""
    async with httpx2.AsyncClient() as http:
        url = f"{emu.url}/v1/messages/batches/{batch.id}/results"
        async with http.stream("GET", url, headers=HEADERS) as response:
            with pytest.raises(httpx2.RemoteProtocolError):
                async for chunk in response.aiter_raw():
                    received += chunk
    assert received == full[:cut]
    assert not received.endswith(b"\n")
    emu.faults.clear()
    assert len(await results_of(client, batch.id)) == 10


async def test_new_faults_are_settable_over_the_admin_api(emu: Emulator) -> None:
    async with httpx2.AsyncClient(base_url=emu.url) as http:
        response = await http.post(
            "/_emulator/config",
            json={
                "outcomes": {"partial_rate": 1.0, "partial_done": 0.25},
                "faults": {"endpoints": {"batches.create": {"drop_after": 0.5}}},
            },
        )
        assert response.status_code == 200
        bad = await http.post("/_emulator/config", json={"outcomes": {"partial_done": 2}})
        assert bad.status_code == 400 and "partial_done" in bad.text
    assert (emu.outcomes.partial_rate, emu.outcomes.partial_done) == (1.0, 0.25)
    assert emu.faults.rates_for("batches.create").drop_after == 0.5
    assert emu.faults.rates_for("batches.results").results_cut_bytes is None
