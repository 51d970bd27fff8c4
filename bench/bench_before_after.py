"""SQLite figures (by default) of this code against an earlier commit's, each tree measured by
its own bench scripts, in one run, alternating.

The earlier commit (by default 3003882, the last commit before the store's engine seam) is
extracted with `git archive` into a temporary directory. Each tree runs its OWN copy of each
script (bench/_run_once.py imports it from that tree, whose `_common` puts that tree's
`router` first on sys.path; the emulator, the sink and the daemons it starts are that tree's
too, run from its root), so a script that grew since cannot break on the old code. Both
copies run the same workload: the old scripts have no CLI, so each is called as below with
its module constant REPEATS set to one run; the newer ones are called through their
`run_engine("sqlite", 1)` (for bench_enqueue.py that also leaves out its logging pairs, which
the old code cannot run):

  enqueue, flush, ingest  old: REPEATS=1, main();  new: run_engine("sqlite", 1)
  realtime                REPEATS=--realtime-pairs, main() (the script is unchanged since 3003882)
  takeover                main() with --rounds 1 (unchanged since 3003882)
  million                 main() (unchanged since 3003882; ~3 minutes a side, not in the default)
  drill                   deadline_drill.py main() with its defaults (seeded; not in the default)
  wake                    bench_wake.py did not exist before the seam: this checkout's copy
                          runs on both trees (HYBRID_ROUTER_BENCH_CODE names the tree; the
                          script adapts to the older store's calls); SQLite only

Each round runs every script once on each tree; the order of the two trees alternates from
one round to the next (ABBA...), so drift in the machine's load falls on both. Per figure:
the median over the rounds on each side, after / before, and the median of the per-round
ratios (the two sides of one round ran minutes apart). A figure of ours that is more than
10 % worse (slower, more memory, fewer per second) in the ratio of medians is flagged. The
competitors' figures (plain aiosqlite, the SDK), the same code on both sides, show the noise.
Each run also gets the CPU seconds of the whole script (all its processes, from getrusage of
the finished children): on a loaded machine it moves far less than the wall-clock figures.

    .venv/bin/python bench/bench_before_after.py [--commit 3003882] [--rounds 5]
        [--scripts enqueue,flush,ingest,realtime,takeover,wake] [--output DIR]
        [--engine sqlite|postgresql]   # postgresql: against a commit that has the engine
"""

from __future__ import annotations

import argparse
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "bench" / "_run_once.py"

DEFAULT_SCRIPTS = "enqueue,flush,ingest,realtime,takeover,wake"
FILES = {
    "enqueue": "bench_enqueue.py",
    "flush": "bench_flush.py",
    "ingest": "bench_ingest.py",
    "realtime": "bench_realtime.py",
    "takeover": "bench_takeover.py",
    "million": "bench_million.py",
    "drill": "deadline_drill.py",
    "wake": "bench_wake.py",
}
# Higher is better for these units; for the others (s, cpu-s, ms, MiB, $) lower is.
HIGHER_IS_BETTER = {"req/s", "calls/s", "x"}
# Labels of the competitors' figures: the same code on both sides.
COMPETITORS = ("SDK", "plain", "AsyncAnthropic")
BAR = 0.10


# ---------------------------------------------------------------------- figures in a script's output


@dataclass(frozen=True)
class Figure:
    label: str
    value: float
    unit: str


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _row(m: re.Match[str]) -> Iterator[Figure]:
    # `row()` of _common, and bench_takeover's "takeover after SIGKILL: median 0.55 s, max ..."
    yield Figure(m["label"].rstrip(":"), _number(m["value"]), m["unit"])


def _pairs(m: re.Match[str]) -> Iterator[Figure]:
    yield Figure("router / direct, median of back-to-back pairs", _number(m["value"]), "x")


def _million(m: re.Match[str]) -> Iterator[Figure]:
    yield Figure(f"{m['label']}, time", _number(m["secs"]), "s")
    yield Figure(f"{m['label']}, peak RSS", _number(m["peak"]), "MiB")
    yield Figure(f"{m['label']}, RSS growth", _number(m["growth"]), "MiB")


def _wake(m: re.Match[str]) -> Iterator[Figure]:
    for q in ("p50", "p90", "p99"):
        yield Figure(f"{m['label']}, {q}", _number(m[q]), "ms")


def _drill(m: re.Match[str]) -> Iterator[Figure]:
    unit = "$" if m["label"] == "cost" else m["unit"] or "count"
    yield Figure(f"drill {m['label']}", _number(m["value"]), unit)


PATTERNS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], Iterator[Figure]]]] = [
    (re.compile(r"^  (?P<label>\S.*?)\s+median (?P<value>-?[\d,.]+) (?P<unit>[^\s,]+)"), _row),
    (
        re.compile(r"^  ratio router / direct: .*?, (?P<value>[\d.]+)x \(median of back-to-back pairs\)"),
        _pairs,
    ),
    (
        re.compile(
            r"^  (?P<label>\S.*?)\s+(?P<secs>[\d.]+) s, peak RSS (?P<peak>[\d,]+) MiB"
            r" \(start [\d,]+ MiB, growth (?P<growth>-?[\d,]+) MiB\)"
        ),
        _million,
    ),
    (
        re.compile(
            r"^  (?P<label>\S.*?, from \S.*?)\s+p50 (?P<p50>-?[\d.]+), p90 (?P<p90>-?[\d.]+),"
            r" p99 (?P<p99>-?[\d.]+),"
        ),
        _wake,
    ),
    (
        re.compile(
            r"^(?P<label>escalated|deadlines missed|cost|wall time)\s+\$?(?P<value>[\d.]+)\s*(?P<unit>s)?"
        ),
        _drill,
    ),
]


def figures_of(output: str) -> dict[str, Figure]:
    """Every figure a bench script printed, by label."""
    found: dict[str, Figure] = {}
    for line in output.splitlines():
        for pattern, make in PATTERNS:
            if m := pattern.match(line):
                found.update((f.label, f) for f in make(m))
                break
    return found


def worse_by(ratio: float, unit: str) -> float:
    """How much worse `after / before` is, as a fraction: slower, more memory, or fewer per second."""
    return (1 / ratio - 1) if unit in HIGHER_IS_BETTER else (ratio - 1)


def is_ours(label: str) -> bool:
    return not any(word in label for word in COMPETITORS)


# ---------------------------------------------------------------------- running a script on a tree


@dataclass(frozen=True)
class Tree:
    name: str  # "before" or "after"
    root: Path


def command(script: str, tree: Tree, args: argparse.Namespace) -> tuple[list[str], dict[str, str]] | None:
    """How to run `script` once on `tree` (argv, extra environment), or None if the tree has none
    (or it cannot run on `args.engine`)."""
    if script == "wake":  # this checkout's copy on both trees (the old tree has none)
        argv = [
            str(ROOT / "bench" / FILES[script]),
            "--engine",
            args.engine,
            "--results",
            str(args.wake_results),
        ]
        return [sys.executable, *argv], {"HYBRID_ROUTER_BENCH_CODE": str(tree.root)}
    path = tree.root / "bench" / FILES[script]
    if not path.is_file():
        return None
    source = path.read_text(encoding="utf-8")
    call: list[str]
    if script in ("enqueue", "flush", "ingest"):
        if re.search(r"^def run_engine\(engine: str, repeats: int", source, re.M):
            call = ["--call", "run_engine", args.engine, "1"]
        elif args.engine == "sqlite":
            call = ["--set", "REPEATS=1", "--call", "main"]
        else:
            return None  # a script from before the engines: SQLite only
    elif script == "realtime":
        call = ["--set", f"REPEATS={args.realtime_pairs}", "--call", "main"]
    elif script == "takeover":
        call = ["--call", "main", "--", "--rounds", "1"]
    elif args.engine != "sqlite":
        return None  # SQLite only
    else:  # million, drill: their defaults
        call = ["--call", "main", "--"]
    return [sys.executable, str(RUNNER), str(path), *call], {}


def run_once(script: str, tree: Tree, args: argparse.Namespace, tag: str) -> dict[str, Figure] | None:
    """The figures of one run of `script` on `tree`; None (and the error shown) if it failed."""
    planned = command(script, tree, args)
    if planned is None:
        return None
    argv, extra = planned
    env = {k: v for k, v in os.environ.items() if k != "HYBRID_ROUTER_BENCH_CODE"} | extra
    start, cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run(argv, cwd=tree.root, env=env, capture_output=True, text=True, check=False)
    seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if args.output is not None:
        (args.output / f"{tag}.out").write_text(
            done.stdout + "\n--- stderr\n" + done.stderr, encoding="utf-8"
        )
    imported = re.search(r"^(?:router imported from|code measured:) (\S+)", done.stdout, re.M)
    if imported and not Path(imported[1]).resolve().is_relative_to(tree.root.resolve()):
        raise RuntimeError(f"{script} on the {tree.name} tree measured the code in {imported[1]}")
    if done.returncode != 0:
        print(f"  {tag}: FAILED (exit {done.returncode}):\n{done.stderr[-3000:]}", flush=True)
        return None
    figures = figures_of(done.stdout)
    # CPU time moves far less with the machine's load than wall time does; it covers the whole
    # script (setup and competitors included), so it dilutes a change of ours but shows it.
    figures[CPU_LABEL] = Figure(CPU_LABEL, cpu, "cpu-s")
    print(f"  {tag}: {len(figures)} figures in {seconds:.0f} s (load {os.getloadavg()[0]:.2f})", flush=True)
    return figures


CPU_LABEL = "CPU of the whole script run, all its processes"


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished (waited-for) descendants so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def extract(commit: str, into: Path) -> str:
    """`commit`'s tree into `into`; returns its short hash and subject."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%h %<(60,trunc)%s", commit],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


# ---------------------------------------------------------------------- the comparison


@dataclass
class Series:
    """One figure's runs: per round, on each side (NaN where a side did not run)."""

    unit: str
    before: dict[int, float] = field(default_factory=dict)
    after: dict[int, float] = field(default_factory=dict)

    def medians(self) -> tuple[float, float]:
        return _median(list(self.before.values())), _median(list(self.after.values()))

    def paired(self) -> float:
        """The median of after / before over the rounds in which both ran."""
        return _median([self.after[r] / self.before[r] for r in self.after if self.before.get(r)])


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def record(table: dict[str, Series], script: str, side: str, rnd: int, figures: dict[str, Figure]) -> None:
    for f in figures.values():
        series = table.setdefault(f"{script}: {f.label}", Series(f.unit))
        getattr(series, side)[rnd] = f.value


def report(table: dict[str, Series]) -> list[str]:
    """Print the table; returns the figures of ours worse by more than the bar (ratio of medians)."""
    flagged: list[str] = []
    print(f"\n  {'figure':<66} {'before':>10} {'after':>10} {'after/before':>12} {'paired':>7}")
    for label, s in table.items():
        old, new = s.medians()
        if not (s.before and s.after):
            print(f"  {label:<66} (only {'after' if s.after else 'before'}: not compared)")
            continue
        ratio = new / old if old else math.nan
        worse = worse_by(ratio, s.unit)
        ours = is_ours(label)
        flag = "  WORSE > 10 %" if ours and worse > BAR else ("" if ours else "  (competitor)")
        if ours and worse > BAR:
            flagged.append(label)
        print(
            f"  {label:<66} {old:>10,.2f} {new:>10,.2f} {ratio:>11.3f}x {s.paired():>6.3f}x"
            f"  {s.unit} ({100 * worse:+.1f} %){flag}"
        )
        print(f"      before: {_shown(s.before)};  after: {_shown(s.after)}")
    return flagged


def _shown(runs: dict[int, float]) -> str:
    return ", ".join(f"{v:,.2f}" for _, v in sorted(runs.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commit", default="3003882")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scripts", default=DEFAULT_SCRIPTS, help=f"of: {', '.join(FILES)}")
    parser.add_argument("--realtime-pairs", type=int, default=7, help="bench_realtime's pairs a run")
    parser.add_argument("--wake-results", type=int, default=300)
    parser.add_argument(
        "--engine",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="postgresql: enqueue, flush, ingest and wake, on two trees that both have the engine",
    )
    parser.add_argument("--output", type=Path, help="keep each run's output in this directory")
    args = parser.parse_args()
    scripts = [s for s in args.scripts.split(",") if s]
    if unknown := [s for s in scripts if s not in FILES]:
        parser.error(f"unknown script(s) {', '.join(unknown)}; known: {', '.join(FILES)}")
    if args.output is not None:
        args.output.mkdir(parents=True, exist_ok=True)
    table: dict[str, Series] = {}
    with tempfile.TemporaryDirectory(prefix="hybrid-router-before-") as tmp:
        described = extract(args.commit, Path(tmp))
        trees = (Tree("before", Path(tmp)), Tree("after", ROOT))
        head = subprocess.run(
            ["git", "-C", str(ROOT), "log", "-1", "--format=%h %<(60,trunc)%s"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        print(f"### {args.engine} figures: this code ({head}) against {described}")
        print(f"machine: {os.cpu_count()} cpus, python {sys.version.split()[0]}", flush=True)
        print(f"{args.rounds} rounds of {', '.join(scripts)}", flush=True)
        print(f"load average at the start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        for rnd in range(args.rounds):
            order = trees if rnd % 2 == 0 else trees[::-1]
            for script in scripts:
                for tree in order:
                    figures = run_once(script, tree, args, f"round {rnd + 1} {script} {tree.name}")
                    if figures is not None:
                        record(table, script, tree.name, rnd, figures)
            if rnd + 1 < args.rounds:  # so far, in case the run is cut short
                print(f"\n  after round {rnd + 1}:", end="")
                report(table)
                print(flush=True)
    print(f"\nload average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}", end="")
    flagged = report(table)
    print(f"  figures of ours more than {100 * BAR:.0f} % worse (ratio of medians): {len(flagged)}")
    for label in flagged:
        print(f"    {label}")
    print(f"  target no figure worse by more than 10 %: {'met' if not flagged else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
