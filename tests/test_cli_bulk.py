"""`hybrid-router enqueue FILE.jsonl` and `hybrid-router results --out FILE`: the Batch API's JSONL shapes."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from anthropic.types.messages import MessageBatchIndividualResponse

from router import Router, load_config
from router.cli import main
from router.emulator import Emulator
from router.jsonl import result_line
from tests.durability import query
from tests.engine import CLASSES
from tests.helpers import MODEL

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cfg(tmp_path: Path, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    path = tmp_path / "router.toml"
    path.write_text(
        f'[store]\npath = "{tmp_path / "router.db"}"\n[anthropic]\nbase_url = "{emulator.url}"\n'
        f"max_retries = 0\n{CLASSES}"
    )
    return path


def line(custom_id: str, text: str, **params: Any) -> str:
    body = {"model": MODEL, "max_tokens": 32, "messages": [{"role": "user", "content": text}], **params}
    return json.dumps({"custom_id": custom_id, "params": body})


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{text}\n" for text in lines))
    return path


async def cli(*argv: str) -> int:
    """Run the CLI in a worker thread: it runs its own event loop while the emulator serves in ours."""
    return await asyncio.to_thread(main, list(argv))


async def stored_rows(cfg: Path) -> dict[str, Any]:
    async with Router(load_config(cfg), scheduler=False) as router:
        rows = query(router.store.path, "SELECT key, class, tag, state FROM requests")
        return {str(k): (c, t, s) for k, c, t, s in rows}


async def test_enqueue_then_results_out_round_trip(
    cfg: Path, tmp_path: Path, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = [f"doc-{i}" for i in range(40)] + ["odd key with spaces/ü"]
    source = write(tmp_path / "requests.jsonl", [line(k, f"summarize {k}") for k in keys])
    assert await cli("-c", str(cfg), "enqueue", str(source), "--latency", "daily", "--tag", "nightly") == 0
    assert "stored 41 request(s)" in capsys.readouterr().out
    rows = await stored_rows(cfg)
    assert rows.keys() == set(keys)
    assert set(rows.values()) == {("daily", "nightly", "pending")}
    # Flush with the CLI, end the batch, poll with the CLI, then export.
    assert await cli("-c", str(cfg), "flush") == 0
    emulator.end_batches()
    assert await cli("-c", str(cfg), "flush", "--poll") == 0
    out = tmp_path / "results.jsonl"
    assert await cli("-c", str(cfg), "results", "--out", str(out)) == 0
    results = [json.loads(text) for text in out.read_text().splitlines()]
    assert sorted(r["custom_id"] for r in results) == sorted(keys)
    for r in results:
        parsed = MessageBatchIndividualResponse.model_validate(r)  # the Batch API's own result shape
        assert parsed.result.type == "succeeded"
        assert parsed.result.message.content[0].text == f"Reply to: summarize {r['custom_id']}"  # type: ignore[union-attr]


async def test_enqueue_bad_lines_are_reported_by_number_and_nothing_is_stored(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write(
        tmp_path / "bad.jsonl",
        [
            line("a", "fine"),
            line("b", "fine"),
            line("c", "zero", max_tokens=0),
            line("d", "fine"),
            '{"custom_id": "e", "params": ',
            line("a", "again"),
            json.dumps({"custom_id": "f", "params": {"model": MODEL, "messages": []}}),
            line("g", "streaming", stream=True),
            json.dumps({"id": "h"}),
        ],
    )
    assert await cli("-c", str(cfg), "enqueue", str(source), "--latency", "daily") == 2
    err = capsys.readouterr().err
    assert "6 bad line(s)" in err and "nothing was stored" in err
    assert f"{source}:3: params.max_tokens" in err
    assert f"{source}:5: not valid JSON" in err
    assert f"{source}:6: custom_id 'a' already used on line 1" in err
    assert f"{source}:7: params.max_tokens: this field is required" in err
    assert f"{source}:8: params.stream" in err
    assert f"{source}:9: unexpected field(s) id" in err
    for good in (1, 2, 4):
        assert f"{source}:{good}:" not in err
    assert await stored_rows(cfg) == {}


async def test_enqueue_key_clash_with_the_store_stores_nothing_and_reruns_are_idempotent(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = write(tmp_path / "one.jsonl", [line(f"k{i}", f"q{i}") for i in range(5)])
    assert await cli("-c", str(cfg), "enqueue", str(first), "--latency", "daily") == 0
    assert await cli("-c", str(cfg), "enqueue", str(first), "--latency", "daily") == 0
    assert "stored 0 request(s)" in capsys.readouterr().out.splitlines()[-1]
    second = write(
        tmp_path / "two.jsonl", [line("new-1", "x"), line("k3", "other params"), line("new-2", "y")]
    )
    assert await cli("-c", str(cfg), "enqueue", str(second), "--latency", "daily") == 2
    assert f"{second}:2: custom_id 'k3' is already stored with different params" in capsys.readouterr().err
    assert sorted(await stored_rows(cfg)) == [f"k{i}" for i in range(5)]
    assert await cli("-c", str(cfg), "enqueue", str(second), "--latency", "someday") == 2
    assert 'unknown latency class "someday"' in capsys.readouterr().err
    # A real-time class cannot take a file.
    assert await cli("-c", str(cfg), "enqueue", str(second), "--latency", "realtime") == 2
    assert "real time" in capsys.readouterr().err


async def test_results_by_key_and_subset_and_unfinished(
    cfg: Path, tmp_path: Path, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write(
        tmp_path / "r.jsonl",
        [line("ok", "fine"), line("bad", "no [emulator:error=invalid_request_error]"), line("later", "x")],
    )
    assert await cli("-c", str(cfg), "enqueue", str(source), "--latency", "weekly") == 0
    async with Router(load_config(cfg), scheduler=False) as router:
        await router.flush()
        await router.messages.submit(  # stored after the flush: stays pending
            model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "p"}], latency="daily", key="p"
        )
    emulator.end_batches()
    assert await cli("-c", str(cfg), "flush", "--poll") == 0
    capsys.readouterr()
    # The existing one-key form still prints the Message JSON.
    assert await cli("-c", str(cfg), "results", "ok") == 0
    assert json.loads(capsys.readouterr().out)["content"][0]["text"] == "Reply to: fine"
    assert await cli("-c", str(cfg), "results") == 2
    capsys.readouterr()
    # --keys: the finished ones are written (errored too), the rest reported, exit 3.
    out = tmp_path / "some.jsonl"
    assert await cli("-c", str(cfg), "results", "--out", str(out), "--keys", "bad", "ok", "p") == 3
    assert "p: not finished (submitted)" in capsys.readouterr().err
    written = [json.loads(t) for t in out.read_text().splitlines()]
    assert [w["custom_id"] for w in written] == ["bad", "ok"]
    assert written[0]["result"]["type"] == "errored"
    assert written[0]["result"]["error"]["error"]["type"] == "invalid_request_error"
    assert await cli("-c", str(cfg), "results", "--out", str(out), "--keys", "nope") == 2
    assert "unknown key(s): nope" in capsys.readouterr().err


async def test_enqueue_and_results_in_a_real_subprocess(
    cfg: Path, tmp_path: Path, emulator: Emulator
) -> None:
    source = write(tmp_path / "requests.jsonl", [line(f"s{i}", f"sub {i}") for i in range(3)])

    async def run(*argv: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "router.cli", "-c", str(cfg), *argv,
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    code, out, err = await run("enqueue", str(source), "--latency", "daily")
    assert code == 0, err
    assert "stored 3 request(s)" in out
    assert await cli("-c", str(cfg), "flush") == 0
    emulator.end_batches()
    assert await cli("-c", str(cfg), "flush", "--poll") == 0
    code, out, err = await run("results", "--out", "-")
    assert code == 0, err
    lines = [json.loads(t) for t in out.splitlines()]
    assert sorted(x["custom_id"] for x in lines) == ["s0", "s1", "s2"]
    assert all(x["result"]["type"] == "succeeded" for x in lines)
    assert "wrote 3 result(s) to stdout" in err


def test_router_specific_outcomes_are_written_as_errored_results() -> None:
    stored = json.dumps({"custom_id": "r7", "result": {"type": "missing", "reason": "kept 29 days only"}})
    out = json.loads(result_line("my-key", stored.encode()))
    parsed = MessageBatchIndividualResponse.model_validate(out)
    assert parsed.custom_id == "my-key" and parsed.result.type == "errored"
    assert out["result"]["error"]["error"] == {
        "type": "api_error",
        "message": "hybrid-router: kept 29 days only",
    }
    same = {"custom_id": "r8", "result": {"type": "expired"}}
    assert json.loads(result_line("k", json.dumps(same).encode())) == {
        "custom_id": "k",
        "result": {"type": "expired"},
    }


async def test_enqueue_lines_no_batch_can_answer_in_time(
    tmp_path: Path, emulator: Emulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    cfg = tmp_path / "router.toml"
    cfg.write_text(
        f'[store]\npath = "{tmp_path / "router.db"}"\n[anthropic]\nbase_url = "{emulator.url}"\n'
        '[classes.urgent]\nroute = "batch"\ndeadline = "30m"\n'  # shorter than the 1 h turnaround prior
        '[classes.strict]\nroute = "batch"\ndeadline = "30m"\non_deadline_risk = "fail"\n'
    )
    source = write(tmp_path / "u.jsonl", [line("u1", "now please"), line("u2", "me too")])
    assert await cli("-c", str(cfg), "enqueue", str(source), "--latency", "strict") == 2
    assert f"{source}:1: latency: class 'strict'" in capsys.readouterr().err
    assert await stored_rows(cfg) == {}
    assert await cli("-c", str(cfg), "enqueue", str(source), "--latency", "urgent") == 0
    assert "2 sent real time" in capsys.readouterr().out
    assert {k: v[2] for k, v in (await stored_rows(cfg)).items()} == {"u1": "succeeded", "u2": "succeeded"}
    assert not emulator.batches
