"""What a type checker sees of `client.messages`: mypy (strict) on a snippet of user code.

Each line of the snippet that calls `reveal_type` says what mypy must reveal, and each
line marked `# error` must be a mypy error; no other line may be one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SNIPPET = """
from __future__ import annotations

from anthropic.types import MessageParam

from router import Router
from router.create_params import CreateParams

ASK: list[MessageParam] = [{"role": "user", "content": "hi"}]


async def use(client: Router, flag: bool) -> None:
    create, submit = client.messages.create, client.messages.submit
    reveal_type(await create(model="m", max_tokens=9, messages=ASK))  # Message
    routed = await create(model="m", max_tokens=9, messages=ASK, latency="daily", tag="t", key="k")
    reveal_type(routed)  # Message
    reveal_type(await create(model="m", max_tokens=9, messages=ASK, stream=False))  # Message
    reveal_type(await create(model="m", max_tokens=9, messages=ASK, stream=True))  # AsyncStream[Event]
    either = await create(model="m", max_tokens=9, messages=ASK, stream=flag)
    reveal_type(either)  # Message | AsyncStream[Event]
    sdk_keywords = await create(model="m", max_tokens=9, messages=ASK, system="s", stop_sequences=["x"])
    reveal_type(sdk_keywords)  # Message
    reveal_type(await create(model="m", max_tokens=9, messages=ASK, metadata={"user_id": "u"}))  # Message
    options = await create(model="m", max_tokens=9, messages=ASK, timeout=5.0, extra_headers={"x": "y"})
    reveal_type(options)  # Message
    reveal_type(await submit(model="m", max_tokens=9, messages=ASK, latency="daily", key="k"))  # Ticket
    raw = client.messages.with_raw_response.create
    reveal_type(await raw(model="m", max_tokens=9, messages=ASK))  # AsyncAPIResponse[Message]
    raw_stream = await raw(model="m", max_tokens=9, messages=ASK, stream=True)
    reveal_type(raw_stream)  # AsyncAPIResponse[AsyncStream[Event]]
    reveal_type(client.messages.batches)  # AsyncBatches
    reveal_type(client.models)  # AsyncModels
    reveal_type(client.beta)  # AsyncBeta
    params: CreateParams = {"model": "m", "max_tokens": 9, "messages": ASK, "latency": "hourly"}
    reveal_type(await create(**params))  # Message

    await create(model="m", max_tokens="9", messages=ASK)  # error
    await create(model="m", max_tokens=9, messages=ASK, foo=1)  # error
    await create(model="m", max_tokens=9, messages=ASK, latency=3)  # error
    await create(model="m", max_tokens=9, messages=ASK, stop_sequences=5)  # error
    await create(max_tokens=9, messages=ASK)  # error
    await submit(model="m", max_tokens=9, messages=ASK, stream=True)  # error
    await submit(model="m", max_tokens=9, messages=ASK, timeout=5.0)  # error
"""
# The SDK's stream event union, as mypy spells it, stands for `Event` in the expectations.
EVENT = (
    "RawMessageStartEvent | RawMessageDeltaEvent | RawMessageStopEvent"
    " | RawContentBlockStartEvent | RawContentBlockDeltaEvent | RawContentBlockStopEvent"
)

_OUTPUT = re.compile(r"^snippet\.py:(?P<line>\d+): (?P<kind>error|note): (?P<text>.*)$")
_QUALIFIED = re.compile(r"\b(?:[a-z_][a-z0-9_]*\.)+(?=[A-Z])")  # anthropic.types.message.Message -> Message


@pytest.fixture(scope="module")
def mypy_output(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> str:
    folder = tmp_path_factory.mktemp("typing")
    (folder / "snippet.py").write_text(SNIPPET)
    # pytest's own cache folder keeps mypy's cache of the SDK between runs (a cold run takes ~15 s).
    pytest_cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    cache = pytest_cache.mkdir("mypy") if pytest_cache is not None else folder / "cache"
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(cache),
            "snippet.py",
        ],
        cwd=folder,
        env={**os.environ, "MYPYPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode in (0, 1), done.stderr  # 1: the expected errors
    # The overload listings mypy adds to an error are long and say nothing the error does not.
    return "\n".join(line for line in done.stdout.splitlines() if ": note:     " not in line)


def _expectations() -> tuple[dict[int, str], set[int]]:
    reveals: dict[int, str] = {}
    errors: set[int] = set()
    for number, line in enumerate(SNIPPET.splitlines(), start=1):
        code, _, comment = line.partition("  # ")
        if comment == "error":
            errors.add(number)
        elif "reveal_type(" in code:
            reveals[number] = comment
    return reveals, errors


def _observed(output: str) -> tuple[dict[int, str], set[int]]:
    reveals: dict[int, str] = {}
    errors: set[int] = set()
    for line in output.splitlines():
        match = _OUTPUT.match(line)
        if match is None:
            continue
        number = int(match["line"])
        if match["kind"] == "error":
            errors.add(number)
        elif match["text"].startswith("Revealed type is "):
            text = _QUALIFIED.sub("", match["text"].removeprefix("Revealed type is ").strip('"'))
            reveals[number] = text.replace(EVENT, "Event")
    return reveals, errors


def test_create_is_typed_like_the_sdks_create(mypy_output: str) -> None:
    expected, expected_errors = _expectations()
    revealed, _ = _observed(mypy_output)
    wanted = {n: t for n, t in expected.items() if n not in expected_errors}
    assert {n: revealed.get(n) for n in wanted} == wanted, mypy_output


def test_wrong_keywords_and_types_are_errors_and_nothing_else_is(mypy_output: str) -> None:
    _, expected_errors = _expectations()
    _, errors = _observed(mypy_output)
    assert errors == expected_errors, mypy_output
