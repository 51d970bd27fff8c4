"""`hybrid-router demo`: the main job, offline, end to end."""

from __future__ import annotations

import asyncio
import io

import pytest

from router.cli import main
from router.demo import PROVIDERS, build_workload, run_demo

OPENAI_URL: list[str | None] = [None]


async def test_demo_answers_every_request_with_its_own_reply_and_saves_money() -> None:
    out = io.StringIO()
    result = await run_demo(total=300, out=out)
    assert result.requests == 300
    assert result.failed == 0 and result.mismatched == 0
    assert result.batches >= 1
    assert result.realtime > 0 and result.deferred > result.realtime
    text = out.getvalue()
    assert "hybrid-router demo report" in text
    assert "saving: $" in text


def test_demo_command_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--requests", "120"]) == 0
    assert "wrong replies   0" in capsys.readouterr().out


def test_demo_live_without_a_key_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert main(["demo", "--live"]) == 2
    assert "ANTHROPIC_API_KEY" in capsys.readouterr().err


def test_the_workload_mixes_both_providers_in_their_own_shapes() -> None:
    calls = build_workload(1000)
    by_provider = {p: [c for q, c in calls if q == p] for p in PROVIDERS}
    assert len(by_provider["anthropic"]) == 700 and len(by_provider["openai"]) == 300
    assert all("max_tokens" in c and "system" in c for c in by_provider["anthropic"])
    assert all(c["model"].startswith("gpt-") and "system" not in c for c in by_provider["openai"])
    assert {c["latency"] for c in by_provider["openai"]} == {"realtime", "daily", "weekly"}


async def test_the_openai_side_of_the_demo_prints_its_saving() -> None:
    """The GPT half alone, both lanes."""
    out = io.StringIO()
    result = await run_demo(total=200, out=out, providers=("openai",))
    assert result.requests == 200 and result.failed == 0 and result.mismatched == 0
    assert result.realtime == 33 and result.batches >= 1
    text = out.getvalue()
    line = next(line for line in text.splitlines() if line.strip().startswith("openai "))
    assert "saving $" in line and "(0.0%)" not in line
    assert "anthropic " not in text.split("saving per provider")[1]


async def test_the_mixed_demo_prints_the_saving_per_provider() -> None:
    out = io.StringIO()
    async with asyncio.timeout(120):  # a safety net
        result = await run_demo(total=300, out=out, providers=PROVIDERS)
    assert result.failed == 0 and result.mismatched == 0
    per_provider = out.getvalue().split("saving per provider\n")[1].splitlines()
    assert [row.split()[0] for row in per_provider[:2]] == ["anthropic", "openai"]
    assert all("saving $" in row for row in per_provider[:2])
