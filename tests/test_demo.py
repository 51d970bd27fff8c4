"""`hybrid-router demo`: the main job, offline, end to end."""

from __future__ import annotations

import asyncio
import io

import openai
import pytest

import router.client as client_module
import router.demo as demo_module
from router.cli import main
from router.demo import PROVIDERS, build_workload, run_demo
from router.providers.openai import OpenAIProvider

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


async def test_the_openai_side_of_the_demo_prints_its_saving(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPT half alone, both lanes. STAND-IN for wt-oaengine's engine: on this branch the
    engine has one provider, so it is given OpenAI's here (see tests/test_openai_dropin.py)."""
    made: list[OpenAIProvider] = []

    def openai_engine(_client: object) -> OpenAIProvider:
        made.append(OpenAIProvider(demo_module.build_openai_client(OPENAI_URL[0], "emulator-demo-key")))
        return made[-1]

    real_build = demo_module.build_openai_client

    def remember(base_url: str | None = None, api_key: str | None = None) -> openai.AsyncOpenAI:
        OPENAI_URL[:] = [base_url]
        return real_build(base_url, api_key)

    monkeypatch.setattr(demo_module, "build_openai_client", remember)
    monkeypatch.setattr(client_module, "AnthropicProvider", openai_engine)
    out = io.StringIO()
    result = await run_demo(total=200, out=out, providers=("openai",))
    assert result.requests == 200 and result.failed == 0 and result.mismatched == 0
    assert result.realtime == 33 and result.batches >= 1
    text = out.getvalue()
    line = next(line for line in text.splitlines() if line.strip().startswith("openai "))
    assert "saving $" in line and "(0.0%)" not in line
    assert "anthropic " not in text.split("saving per provider")[1]


@pytest.mark.xfail(
    strict=True, reason="STAND-IN: needs wt-oaengine's engine, which batches OpenAI rows beside Anthropic's"
)
async def test_the_mixed_demo_prints_the_saving_per_provider() -> None:
    out = io.StringIO()
    # A safety net: on this branch the GPT requests are never answered (see the reason).
    async with asyncio.timeout(15):
        result = await run_demo(total=300, out=out, providers=PROVIDERS)
    assert result.failed == 0 and result.mismatched == 0
    per_provider = out.getvalue().split("saving per provider\n")[1].splitlines()
    assert [row.split()[0] for row in per_provider[:2]] == ["anthropic", "openai"]
    assert all("saving $" in row for row in per_provider[:2])
