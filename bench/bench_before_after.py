"""One engine's figures (SQLite by default) of this code against an earlier commit's, in one
run, alternating.

The earlier commit (by default 3003882, the code before the store's engine seam) is
extracted with `git archive` into a temporary directory. Each round runs every script once
on each code, in turn (which goes first alternates between rounds), with `--engine ENGINE
--repeats 1` and HYBRID_ROUTER_BENCH_CODE naming the tree to measure (bench/_common.py puts it
first on sys.path; the emulator and the sink stay this checkout's). Then, per figure, the
median over the rounds on each side and after / before.
Target (issue 14): no figure worse by more than 10 %. The defaults take about 10 minutes here
(`--scripts enqueue` alone about 1 minute a round).

    .venv/bin/python bench/bench_before_after.py [--commit 3003882] [--rounds 3]
        [--scripts enqueue,flush,ingest] [--engine sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT, banner, median

FIGURE = re.compile(r"^  (?P<label>\S.*?)\s+median (?P<value>[\d,.]+) (?P<unit>\S+)")
# Higher is better for these units; for the others (s, MiB) lower is.
HIGHER_IS_BETTER = {"req/s", "calls/s"}


def extract(commit: str, into: Path) -> None:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)


def run_script(script: str, code: Path, engine: str) -> dict[str, tuple[float, str]]:
    """The script's figures (label: (median, unit)) on the code in `code`."""
    env = {**os.environ, "HYBRID_ROUTER_BENCH_CODE": str(code)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"bench_{script}.py"), "--engine", engine, "--repeats", "1"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench_{script}.py on {code} failed:\n{done.stderr[-3000:]}")
    figures: dict[str, tuple[float, str]] = {}
    for line in done.stdout.splitlines():
        if m := FIGURE.match(line):
            figures[m["label"]] = (float(m["value"].replace(",", "")), m["unit"])
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commit", default="3003882")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scripts", default="enqueue,flush,ingest")
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    scripts = args.scripts.split(",")
    banner(f"{args.engine} figures: this code against {args.commit}, {args.rounds} rounds, alternating")
    runs: dict[str, dict[str, dict[str, list[float]]]] = {s: {"before": {}, "after": {}} for s in scripts}
    units: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="hybrid-router-before-") as tmp:
        before = Path(tmp)
        extract(args.commit, before)
        sides = {"before": before, "after": ROOT}
        for i in range(args.rounds):
            order = ("before", "after") if i % 2 == 0 else ("after", "before")
            for script in scripts:
                for side in order:
                    for label, (value, unit) in run_script(script, sides[side], args.engine).items():
                        runs[script][side].setdefault(label, []).append(value)
                        units[label] = unit
                print(f"  (round {i + 1}: {script} done)", flush=True)
    worst = -1.0
    print(f"  {'figure':<52} {'before':>12} {'after':>12}  after/before")
    for script in scripts:
        for label, values in runs[script]["after"].items():
            olds = runs[script]["before"].get(label, [float("nan")])
            old = median(olds)
            new = median(values)
            unit = units[label]
            ratio = new / old if old else float("nan")
            # How much worse, as a fraction: slower, more memory, or fewer per second.
            worse = (1 / ratio - 1) if unit in HIGHER_IS_BETTER else (ratio - 1)
            if "SDK" not in label and "plain" not in label:  # the competitors are not our code
                worst = max(worst, worse)
            print(f"  {script + ': ' + label:<52} {old:>12,.2f} {new:>12,.2f}  {ratio:.3f}x  ({unit})")
            print(f"      runs before: {_shown(olds)};  after: {_shown(values)}")
    print(f"  worst regression of ours: {100 * worst:+.1f} %")
    print(f"  target no figure worse by more than 10 %: {'met' if worst <= 0.10 else 'MISSED'}")
    return 0


def _shown(values: list[float]) -> str:
    return ", ".join(f"{v:,.2f}" for v in values)


if __name__ == "__main__":
    sys.exit(main())
