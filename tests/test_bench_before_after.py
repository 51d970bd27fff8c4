"""bench/bench_before_after.py's logic: each tree's own script run by bench/_run_once.py, the
figures read from the scripts' output, and which ratios are flagged."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.bench_before_after import Series, Tree, command, figures_of, report

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "bench" / "_run_once.py"


def old_tree(tmp_path: Path) -> Path:
    """A checkout of its own: a `router` package unlike this one's, and a bench script whose
    `_common` puts that checkout first on sys.path, as the scripts before the seam do."""
    (tmp_path / "router").mkdir()
    (tmp_path / "router" / "__init__.py").write_text('WHO = "the old tree"\n')
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "_common.py").write_text(
        textwrap.dedent(
            """\
            import sys
            from pathlib import Path

            ROOT = Path(__file__).resolve().parent.parent
            sys.path.insert(0, str(ROOT))
            """
        )
    )
    (bench / "bench_x.py").write_text(
        textwrap.dedent(
            """\
            import sys

            import _common  # noqa: F401
            import router

            REPEATS = 3


            async def main() -> int:
                print(f"  {router.WHO}, repeats  median {REPEATS} s   (runs: {REPEATS})")
                print("argv", sys.argv[1:])
                return 0


            def run_engine(engine: str, repeats: int) -> None:
                print(f"run_engine {engine!r} {repeats!r}")
            """
        )
    )
    return tmp_path


def run(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUNNER), str(tree / "bench" / "bench_x.py"), *args],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_runner_measures_the_trees_own_code_with_its_constants_set(tmp_path: Path) -> None:
    tree = old_tree(tmp_path)
    done = run(tree, "--set", "REPEATS=1", "--call", "main", "--", "--rounds", "1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"router imported from {(tree / 'router').resolve()}"
    assert "  the old tree, repeats  median 1 s   (runs: 1)" in lines
    assert "argv ['--rounds', '1']" in lines


def test_the_runner_passes_a_functions_arguments(tmp_path: Path) -> None:
    done = run(old_tree(tmp_path), "--call", "run_engine", "sqlite", "1")
    assert done.returncode == 0, done.stderr
    assert "run_engine 'sqlite' 1" in done.stdout.splitlines()


def test_the_runner_names_a_constant_the_script_lacks(tmp_path: Path) -> None:
    done = run(old_tree(tmp_path), "--set", "ROUNDS=1")
    assert done.returncode == 2
    assert "bench_x.py has no constant 'ROUNDS'" in done.stderr


def options(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(
        **{"realtime_pairs": 7, "wake_results": 300, "output": None, "engine": "sqlite", **kw}
    )


def test_each_tree_is_called_the_way_its_own_script_takes(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    for tree, body in (
        (old, "async def main() -> int: ..."),
        (new, "def run_engine(engine: str, repeats: int) -> None: ..."),
    ):
        (tree / "bench").mkdir(parents=True)
        (tree / "bench" / "bench_flush.py").write_text(f"REPEATS = 3\n\n\n{body}\n")
    planned_old = command("flush", Tree("before", old), options())
    planned_new = command("flush", Tree("after", new), options())
    assert planned_old is not None and planned_new is not None
    assert planned_old[0][2:] == [
        str(old / "bench" / "bench_flush.py"),
        "--set",
        "REPEATS=1",
        "--call",
        "main",
    ]
    assert planned_new[0][2:] == [
        str(new / "bench" / "bench_flush.py"),
        "--call",
        "run_engine",
        "sqlite",
        "1",
    ]
    # A script the tree does not have is not run on it; bench_wake is this checkout's on both.
    assert command("ingest", Tree("before", old), options()) is None
    wake = command("wake", Tree("before", old), options())
    assert wake is not None and wake[1] == {"HYBRID_ROUTER_BENCH_CODE": str(old)}
    # On PostgreSQL, only a tree whose script takes an engine runs it.
    assert command("flush", Tree("before", old), options(engine="postgresql")) is None
    planned_pg = command("flush", Tree("after", new), options(engine="postgresql"))
    assert planned_pg is not None and planned_pg[0][-2:] == ["postgresql", "1"]


def test_figures_are_read_from_every_scripts_output() -> None:
    output = "\n".join(
        [
            "  Store.enqueue (group commit), 100,000 req      median 27,075 req/s   (runs: 27,075)",
            "  ours: batcher.flush (sink server), time      median 3.52 s   (runs: 3.52)",
            "  ratio router / direct: 0.97x (ratio of medians), 0.96x (median of back-to-back pairs)",
            "  takeover after SIGKILL: median 0.55 s, max 0.61 s (0.55, 0.61)",
            "  ours: batcher.flush     29.3 s, peak RSS 115 MiB (start 92 MiB, growth 23 MiB)",
            "  SQLite, 0.25 s polls, from commit    p50 117.9, p90 231.2, p99 335.6, max 340.0, min 2.0 ms",
            "escalated           84",
            "cost                $1.2345 vs $2.5000 all-realtime (50.6% saved)",
            "wall time           12.3 s",
            "  target >= 25,000 req/s: MISSED",
        ]
    )
    got = {label: (f.value, f.unit) for label, f in figures_of(output).items()}
    assert got == {
        "Store.enqueue (group commit), 100,000 req": (27075.0, "req/s"),
        "ours: batcher.flush (sink server), time": (3.52, "s"),
        "router / direct, median of back-to-back pairs": (0.96, "x"),
        "takeover after SIGKILL": (0.55, "s"),
        "ours: batcher.flush, time": (29.3, "s"),
        "ours: batcher.flush, peak RSS": (115.0, "MiB"),
        "ours: batcher.flush, RSS growth": (23.0, "MiB"),
        "SQLite, 0.25 s polls, from commit, p50": (117.9, "ms"),
        "SQLite, 0.25 s polls, from commit, p90": (231.2, "ms"),
        "SQLite, 0.25 s polls, from commit, p99": (335.6, "ms"),
        "drill escalated": (84.0, "count"),
        "drill cost": (1.2345, "$"),
        "drill wall time": (12.3, "s"),
    }


def test_only_our_figures_worse_by_more_than_ten_percent_are_flagged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    table = {
        "enqueue: Store.enqueue": Series("req/s", {0: 100.0, 1: 100.0}, {0: 89.0, 1: 90.0}),  # 11.6 % fewer
        "enqueue: Router.messages.submit": Series("req/s", {0: 100.0}, {0: 92.0}),  # 8.7 % fewer
        "flush: ours: time": Series("s", {0: 1.0, 1: 1.0}, {0: 1.11, 1: 1.12}),
        "flush: ours: memory": Series("MiB", {0: 29.0}, {0: 31.0}),  # 6.9 % more
        "enqueue: plain aiosqlite commit per row": Series("req/s", {0: 100.0}, {0: 50.0}),
        "flush: ours: claim_batch": Series("s", {}, {0: 0.2}),  # only the new script prints it
    }
    assert report(table) == ["enqueue: Store.enqueue", "flush: ours: time"]
    out = capsys.readouterr().out
    assert "(competitor)" in out and "only after: not compared" in out
    assert table["flush: ours: time"].paired() == pytest.approx(1.115)
