"""`hybrid-router demo`: the main job, offline, end to end."""

from __future__ import annotations

import io

import pytest

from router.cli import main
from router.demo import run_demo


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
