"""The command line as a new user meets it: options on either side of the command, `init` and the
presets, the config lookup rule, one-line setup errors, and the presets inside a built wheel."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import router
from router import load_config
from router.cli import CONFIG_ENV, build_parser, main
from router.presets import EXAMPLE, load_preset, preset_names
from tests.durability import query
from tests.helpers import MODEL

REPO = Path(__file__).resolve().parents[1]
PRESETS = ["cost-saver", "default", "latency-first", "realtime-only"]
# What a command must be given besides the options, to parse at all.
REQUIRED = {"enqueue": ["requests.jsonl"], "webhooks": ["list"]}


def commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def write_config(tmp_path: Path, name: str = "router.toml") -> Path:
    """A config whose store is in tmp_path and whose API is nowhere (nothing here may reach it)."""
    path = tmp_path / name
    path.write_text(
        f'[store]\npath = "{tmp_path / "router.db"}"\n[anthropic]\nbase_url = "http://127.0.0.1:9"\n'
        '[classes.daily]\nroute = "batch"\ndeadline = "1d"\n',
        encoding="utf-8",
    )
    return path


def jsonl(tmp_path: Path, count: int) -> Path:
    path = tmp_path / "requests.jsonl"
    body = {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    path.write_text("".join(json.dumps({"custom_id": f"k{i}", "params": body}) + "\n" for i in range(count)))
    return path


# ---------------------------------------------------------------------------- common options


def test_every_command_takes_the_common_options_before_or_after_its_name() -> None:
    parser = build_parser()
    assert len(commands()) >= 11
    for name in commands():
        req = REQUIRED.get(name, [])
        after = parser.parse_args([name, *req, "--config", "after.toml", "--log-level", "debug"])
        assert (after.config, after.log_level) == ("after.toml", "debug"), name
        before = parser.parse_args(["-c", "before.toml", "--log-level", "error", name, *req])
        # The command's own copy of the option, left out, must not reset the one given before it.
        assert (before.config, before.log_level) == ("before.toml", "error"), name
        both = parser.parse_args(["-c", "before.toml", name, *req, "-c", "after.toml"])
        assert both.config == "after.toml", name
        neither = parser.parse_args([name, *req])
        assert (neither.config, neither.log_level) == (None, None), name


def test_every_command_help_shows_the_common_options() -> None:
    for name, command in commands().items():
        text = command.format_help()
        for expected in ("--config FILE", "-c FILE", "--log-level LEVEL", CONFIG_ENV):
            assert expected in text, (name, expected)


def test_version_is_the_package_version(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("hybrid-router")  # the installed console script
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "router.cli"]
    result = subprocess.run([*argv, "--version"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0
    assert result.stdout.strip() == f"hybrid-router {router.__version__}"
    assert router.__version__ == importlib.metadata.version("hybrid-router")


# ---------------------------------------------------------------------------- config lookup


def test_config_given_after_the_command_or_in_the_environment_is_the_one_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    given, env = write_config(tmp_path, "given.toml"), write_config(tmp_path, "env.toml")
    write_config(tmp_path)  # ./router.toml, which both must beat
    assert main(["validate", "--config", str(given)]) == 0
    assert f"(from {given})" in capsys.readouterr().out
    monkeypatch.setenv(CONFIG_ENV, str(env))
    assert main(["validate"]) == 0
    assert f"(from {env})" in capsys.readouterr().out
    assert main(["validate", "-c", str(given)]) == 0  # the option beats the variable
    assert f"(from {given})" in capsys.readouterr().out
    monkeypatch.delenv(CONFIG_ENV)
    assert main(["validate"]) == 0
    assert "(from router.toml)" in capsys.readouterr().out


def test_without_any_config_the_built_in_defaults_apply_and_the_command_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert main(["validate"]) == 0
    assert "(from the built-in defaults; no --config" in capsys.readouterr().out
    assert main(["enqueue", str(jsonl(tmp_path, 2)), "--latency", "daily"]) == 0
    err = capsys.readouterr().err
    assert f"using the built-in defaults (store {tmp_path / 'hybrid-router.db'})" in err
    assert query(tmp_path / "hybrid-router.db", "SELECT count(*) FROM requests") == [(2,)]


def test_a_config_from_init_is_found_as_router_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert main(["init"]) == 0
    assert main(["enqueue", str(jsonl(tmp_path, 1)), "--latency", "daily"]) == 0
    assert "built-in defaults" not in capsys.readouterr().err
    # The store of a file's config sits next to the file.
    assert query(tmp_path / "hybrid-router.db", "SELECT class FROM requests") == [("daily",)]


# ---------------------------------------------------------------------------- init and presets


def test_the_presets_and_the_reference_ship_with_the_package() -> None:
    assert preset_names() == [*PRESETS, EXAMPLE]
    for name in PRESETS:
        shipped = load_preset(name)
        in_repo = load_config(REPO / "policies" / f"{name}.toml")
        assert shipped.classes == in_repo.classes and shipped.rules == in_repo.rules, name
        # Relative to where the command runs, not to site-packages.
        assert str(shipped.store.path) == "hybrid-router.db"
    assert load_preset(EXAMPLE).classes == load_config(REPO / "config.example.toml").classes


@pytest.mark.parametrize("preset", [*PRESETS, EXAMPLE])
def test_init_writes_a_commented_config_of_each_preset(
    preset: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "conf" / "router.toml"
    path.parent.mkdir()
    assert main(["init", "--preset", preset, "--path", str(path)]) == 0
    assert capsys.readouterr().out == (
        f"wrote {path} (preset {preset}); check it with: hybrid-router validate {path}\n"
    )
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# ")
    config = load_config(path)
    assert config.classes == load_preset(preset).classes
    assert config.store.path == path.parent / "hybrid-router.db"
    assert main(["validate", str(path)]) == 0


def test_init_writes_where_config_points_without_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["init", "-c", "prod.toml", "--preset", "cost-saver"]) == 0
    assert "cost-saver" in (tmp_path / "prod.toml").read_text(encoding="utf-8")
    assert not (tmp_path / "router.toml").exists()


def test_init_refuses_to_overwrite_without_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    path = tmp_path / "router.toml"
    path.write_text("# mine\n", encoding="utf-8")
    assert main(["init"]) == 2
    expected = "hybrid-router: router.toml already exists; pass --force to overwrite it\n"
    assert capsys.readouterr().err == expected
    assert path.read_text(encoding="utf-8") == "# mine\n"
    assert main(["init", "--path", str(path), "--preset", "realtime-only", "--force"]) == 0
    assert not any(c.is_batch for c in load_config(path).classes.values())


@pytest.mark.parametrize("preset", [*PRESETS, EXAMPLE])
def test_validate_preset(preset: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--preset", preset]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"hybrid-router effective policy (from preset {preset})")
    assert "hybrid-router.db" in out


def test_validate_takes_a_file_or_a_preset_not_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(write_config(tmp_path)), "--preset", "default"]) == 2
    assert capsys.readouterr().err == "hybrid-router: validate: give a FILE or --preset NAME, not both\n"


def test_a_built_wheel_carries_the_presets_and_validates_them(tmp_path: Path) -> None:
    """Build the wheel from a copy of the tree, then run the CLI from the wheel's files alone."""
    source = tmp_path / "src"
    shutil.copytree(
        REPO,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "tests", "bench"
        ),
    )
    built = subprocess.run(
        # The venv's setuptools (a dev dependency): no build environment to download.
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            "dist",
            "./src",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("hybrid_router-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        for name in PRESETS:
            assert (
                archive.read(f"router/data/policies/{name}.toml")
                == (REPO / "policies" / f"{name}.toml").read_bytes()
            )
        assert archive.read("router/data/config.example.toml") == (REPO / "config.example.toml").read_bytes()
        archive.extractall(site)
    script = (
        "import sys, router; from router.cli import main;"
        f" assert router.__file__.startswith({str(site)!r}), router.__file__;"
        " sys.exit(main(sys.argv[1:]))"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script, "validate", "--preset", "cost-saver"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("hybrid-router effective policy (from preset cost-saver)")
    assert "0 2 * * *" in ran.stdout  # the cost saver's nightly cron


# ---------------------------------------------------------------------------- setup mistakes


NO_KEY = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")


# The cases a new user hit first, run again as real processes (each costs an interpreter start).
IN_A_PROCESS = ("config missing", "flush without key", "port taken")


async def test_each_setup_mistake_is_one_line_and_exit_code_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each case: argv, environment changes, the one line it prints."""
    config = write_config(tmp_path)
    enqueue = ["-c", str(config), "enqueue", str(jsonl(tmp_path, 3)), "--latency", "daily"]
    assert await asyncio.to_thread(main, enqueue) == 0  # the CLI runs its own event loop
    (tmp_path / "mine.toml").write_text("# mine\n", encoding="utf-8")
    out = tmp_path / "missing" / "results.jsonl"
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    key = {"ANTHROPIC_API_KEY": "test"}
    cases: dict[str, tuple[list[str], dict[str, str | None], str]] = {
        "config missing": (
            ["daemon", "--config", "nope.toml"],
            key,
            "nope.toml: config file not found (named by --config);"
            " `hybrid-router init --path nope.toml` writes one",
        ),
        "config variable missing": (
            ["status"],
            {CONFIG_ENV: "gone.toml"},
            "gone.toml: config file not found (named by $HYBRID_ROUTER_CONFIG);"
            " `hybrid-router init --path gone.toml` writes one",
        ),
        "init over a file": (
            ["init", "--path", "mine.toml"],
            {},
            "mine.toml already exists; pass --force to overwrite it",
        ),
        "flush without key": (
            ["flush", "-c", str(config)],
            dict.fromkeys(NO_KEY),
            "ANTHROPIC_API_KEY is not set; flush needs it to send batches"
            " (for `hybrid-router emulate`, any value will do)",
        ),
        "daemon without key": (
            ["daemon", "-c", str(config)],
            dict.fromkeys(NO_KEY),
            "ANTHROPIC_API_KEY is not set; daemon needs it to send batches"
            " (for `hybrid-router emulate`, any value will do)",
        ),
        "port out of range": (
            ["emulate", "--port", "70000"],
            {},
            "emulate --port 70000: expected a port from 0 to 65535 (0: any free one)",
        ),
        "port taken": (
            ["emulate", "--port", str(port)],
            {},
            f"emulate: cannot listen on 127.0.0.1:{port}: Address already in use;"
            " choose another --port (0: any free one)",
        ),
        "output folder missing": (
            ["results", "-c", str(config), "--out", str(out)],
            {},
            f"{out}: No such file or directory",
        ),
    }
    monkeypatch.chdir(tmp_path)
    base = {k: v for k, v in os.environ.items() if k not in (CONFIG_ENV, "ANTHROPIC_BASE_URL")}
    base["PYTHONPATH"] = str(REPO)

    def environment(env: dict[str, str | None]) -> dict[str, str]:
        return {k: v for k, v in {**base, **env}.items() if v is not None}

    async def in_a_process(argv: list[str], env: dict[str, str | None]) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "router.cli",
            *argv,
            cwd=tmp_path,
            env=environment(env),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode is not None
        return proc.returncode, err.decode()

    try:
        for name, (argv, env, line) in cases.items():
            with monkeypatch.context() as patch:
                for variable in os.environ.keys() - environment(env).keys():
                    patch.delenv(variable)
                for variable, value in environment(env).items():
                    patch.setenv(variable, value)
                code = await asyncio.to_thread(main, argv)
            assert (code, capsys.readouterr().err) == (2, f"hybrid-router: {line}\n"), name
        real = await asyncio.gather(*(in_a_process(*cases[name][:2]) for name in IN_A_PROCESS))
    finally:
        taken.close()
    for name, (code, err) in zip(IN_A_PROCESS, real, strict=True):
        assert (code, err) == (2, f"hybrid-router: {cases[name][2]}\n"), name
    # Nothing was created, claimed or overwritten on the way.
    assert (tmp_path / "mine.toml").read_text(encoding="utf-8") == "# mine\n"
    assert not (tmp_path / "nope.toml").exists() and not (tmp_path / "gone.toml").exists()
    assert query(tmp_path / "router.db", "SELECT state, count(*) FROM requests GROUP BY state") == [
        ("pending", 3)
    ]


def test_validate_of_a_missing_file_suggests_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.toml"
    assert main(["validate", str(missing)]) == 2
    assert capsys.readouterr().err == (
        f"hybrid-router: {missing}: config file not found; `hybrid-router init --path {missing}` writes one\n"
    )


def test_a_reading_command_on_the_defaults_missing_store_says_both_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "no database here" in err and "using the built-in defaults" in err
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_flush_whose_create_fails_says_why_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    assert main(["enqueue", str(jsonl(tmp_path, 2)), "--latency", "daily", "-c", str(config)]) == 0
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connection refused
    try:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{closed.getsockname()[1]}")
        assert main(["flush", "-c", str(config)]) == 1
    finally:
        closed.close()
    captured = capsys.readouterr()
    assert "2 put back to pending" in captured.out
    assert captured.err.endswith(
        "hybrid-router: flush: batches.create failed:"
        " Connection error. (ConnectError: All connection attempts failed)\n"
    )
    assert query(tmp_path / "router.db", "SELECT state, count(*) FROM requests GROUP BY state") == [
        ("pending", 2)
    ]


def test_validate_of_a_postgresql_store_names_it_without_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "pg.toml"
    config.write_text('[store]\nurl = "postgresql://app:s3cret@db.example:5432/queue"\n', encoding="utf-8")
    assert main(["validate", str(config)]) == 0
    out = capsys.readouterr().out
    assert "postgresql://app@db.example:5432/queue" in out and "engine     postgresql" in out
    assert "s3cret" not in out
