"""README.md cannot drift from the code: its commands parse, and its quickstart runs as written."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import os
import re
import shlex
import socket
import sqlite3
import sys
from pathlib import Path

import pytest

from router.cli import CONFIG_ENV, build_parser, main
from router.emulator import Emulator
from tests.durability import until
from tests.test_cli import commands

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")

# Sample values for the placeholders the README writes in capitals; an unknown one fails the test.
PLACEHOLDERS = {
    "F": "router.toml",
    "FILE": "router.toml",
    "N": "10",
    "P": "8765",
    "S": "5",
    "C": "daily",
    "T": "nightly",
    "KEY": "sku-42",
    "NAME": "cost-saver",
    "LEVEL": "info",
}
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def code_blocks(text: str, language: str) -> list[str]:
    return [body for lang, body in _FENCE.findall(text) if lang == language]


def documented_commands(text: str) -> list[str]:
    """Each `hybrid-router ...` of the README: lines of sh blocks and inline code spans."""
    found: list[str] = []
    for block in code_blocks(text, "sh"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value before the command
                words.pop(0)
            if words and words[0] == "hybrid-router":
                found.append(shlex.join(itertools.takewhile(lambda w: w not in ("&", "|", ";", "&&"), words)))
    prose = _FENCE.sub("", text)
    for span in re.findall(r"`([^`\n]+)`", prose):
        span = span.replace("\\|", "|")  # a pipe escaped inside a table cell
        if span.startswith("hybrid-router "):
            found.append(span)
    return found


def variants(command: str) -> list[list[str]]:
    """Argument lists for a documented command: each [optional part] left out or given, each
    a|b|c alternative on its own, placeholders replaced by sample values, `...` dropped."""
    parts: list[list[list[str]]] = []
    for optional, plain in re.findall(r"\[([^\[\]]*)\]|(\S+)", command.removeprefix("hybrid-router ")):
        tokens = (optional or plain).split()
        choices = [[PLACEHOLDERS.get(t, t)] if "|" not in t else t.split("|") for t in tokens if t != "..."]
        for token in tokens:
            assert not re.fullmatch(r"[A-Z]+", token) or token in PLACEHOLDERS, f"{command}: {token}?"
        given = [list(words) for words in itertools.product(*choices)]
        parts.append([[], *given] if optional else given)
    return [[w for words in combo for w in words] for combo in itertools.product(*parts)]


def test_every_documented_command_parses() -> None:
    parser = build_parser()
    documented = documented_commands(README)
    assert len(documented) > 20
    for command in documented:
        for argv in variants(command):
            out, err = io.StringIO(), io.StringIO()
            try:
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    parser.parse_args(argv)
            except SystemExit as exc:  # --help and --version exit 0; a rejected argv exits 2
                problem = err.getvalue().strip().rpartition("\n")[2]
                assert exc.code == 0, f"README: `{command}` as {argv}: {problem}"


def test_every_command_is_in_the_readme_table() -> None:
    documented = {shlex.split(c)[1] for c in documented_commands(README) if len(shlex.split(c)) > 1}
    assert set(commands()) <= documented
    assert "--version" in documented


def test_the_extraction_sees_optional_parts_and_alternatives() -> None:
    # The extraction itself, on a line of the command table's shape.
    text = "| `hybrid-router init [--preset a\\|b] [--force]` | x |\n```sh\nX=1 hybrid-router status &\n```\n"
    assert documented_commands(text) == [
        "hybrid-router status",
        "hybrid-router init [--preset a|b] [--force]",
    ]
    assert variants("hybrid-router init [--preset a|b] [--force]") == [
        ["init"],
        ["init", "--force"],
        ["init", "--preset", "a"],
        ["init", "--preset", "a", "--force"],
        ["init", "--preset", "b"],
        ["init", "--preset", "b", "--force"],
    ]
    assert variants("hybrid-router results --out r.jsonl [--keys KEY ...]")[1] == [
        "results",
        "--out",
        "r.jsonl",
        "--keys",
        "sku-42",
    ]


# ---------------------------------------------------------------------------- the quickstart


def quickstart() -> str:
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return section


def pending(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            return int(conn.execute("SELECT count(*) FROM requests WHERE state = 'pending'").fetchone()[0])
    except sqlite3.OperationalError:  # being created right now
        return 0


async def test_the_quickstart_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """init, then the snippet against the emulator: the real-time reply at once, the batched one
    once `hybrid-router flush --poll` has sent its batch (the emulator ends it at once)."""
    section = quickstart()
    shell = "\n".join(code_blocks(section, "sh"))
    for step in (
        "hybrid-router init",
        "hybrid-router emulate --batch-seconds 0",
        "hybrid-router flush --poll",
    ):
        assert re.search(rf"^{re.escape(step)}\s", shell, re.M), step
    (snippet,) = code_blocks(section, "python")
    (tmp_path / "quickstart.py").write_text(snippet, encoding="utf-8")

    async with Emulator(batch_seconds=0) as emulator:
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv(CONFIG_ENV, raising=False)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", emulator.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test")
        assert await asyncio.to_thread(main, ["init"]) == 0
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "quickstart.py",
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        try:
            replies: list[str] = []
            async with asyncio.timeout(60):
                while not replies:
                    line = (await proc.stdout.readline()).decode()
                    assert line, f"quickstart.py ended early: {(await proc.stderr.read()).decode()[-3000:]}"
                    if line.startswith("Reply to: "):
                        replies.append(line.rstrip("\n"))
            # The daily call is waiting on its stored request; send the batch from outside.
            await until(lambda: pending(tmp_path / "hybrid-router.db") == 1, what="the daily request stored")
            assert await asyncio.to_thread(main, ["flush", "--poll"]) == 0
            out, err = await asyncio.wait_for(proc.communicate(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, err.decode()[-3000:]
    replies += [line for line in out.decode().splitlines() if line.startswith("Reply to: ")]
    # The emulator answers "Reply to: <the prompt>"; the real-time prompt comes first in the snippet.
    prompts = re.findall(r'"content": "([^"]*)"', snippet)
    assert len(prompts) == 2
    assert replies == [f"Reply to: {prompt}" for prompt in prompts]


# ---------------------------------------------------------------------------- setup mistakes


def test_the_setup_mistakes_print_what_the_readme_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    section = README.split("**Setup mistakes**", 1)[1]
    (block,) = code_blocks(section, "text")[:1]
    monkeypatch.chdir(tmp_path)
    for name in (CONFIG_ENV, "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    printed: list[str] = []

    def run(*argv: str) -> None:
        assert main(list(argv)) == 2, argv
        printed.append(capsys.readouterr().err.rstrip("\n"))

    run("--config", "router.toml", "status")
    assert main(["init"]) == 0
    run("init")
    run("flush")
    with socket.socket() as taken:  # the README's port may be in use or free here; take another
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run("emulate", "--port", str(port))
    printed[-1] = printed[-1].replace(f":{port}:", ":8765:")
    run("emulate", "--port", "70000")
    assert printed == block.splitlines()
