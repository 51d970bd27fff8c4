"""Run one function of a bench script of any checkout, as if that script were run from its own tree.

bench_before_after.py runs each tree's own copy of a script through this file, so the code
before a change is measured by the script written for it. It imports nothing of the project:
the script's directory and its tree go first on sys.path (its `_common` also puts that tree's
`router` first), the script is imported under its own name (so functions it hands to spawned children
pickle as `bench_x.fn` and the children import them from the same tree), module constants
are overridden (`--set REPEATS=1`: the old scripts have no `--repeats`; in this process only,
so a spawned child still sees the script's own value), and one function
is called (a coroutine is run with asyncio.run). Arguments after `--` become the script's argv.

    python bench/_run_once.py TREE/bench/bench_x.py [--set NAME=INT ...] [--call FUNC [ARG ...]]
        [-- SCRIPT_ARGS ...]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import sys
from pathlib import Path


def _value(text: str) -> int | str:
    return int(text) if text.lstrip("-").isdigit() else text


def main(argv: list[str]) -> int:
    script_args: list[str] = []
    if "--" in argv:
        argv, script_args = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("script", type=Path)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=INT")
    parser.add_argument("--call", nargs="+", default=["main"], metavar="FUNC")
    args = parser.parse_args(argv)
    script = args.script.resolve()
    if not script.is_file():
        parser.error(f"no script at {script}")
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if p != here]  # this checkout's bench/ must not shadow the tree's
    # The script's directory, as Python puts it, then its tree's root, as that tree's own venv
    # would (deadline_drill.py imports `router` without going through `_common`).
    sys.path[:0] = [str(script.parent), str(script.parent.parent)]
    sys.argv = [str(script), *script_args]
    module = importlib.import_module(script.stem)
    router = sys.modules.get("router")
    if router is not None:  # the harness checks this names the tree under test
        print(f"router imported from {Path(router.__file__ or '').resolve().parent}", flush=True)
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not hasattr(module, name):
            parser.error(f"--set {item}: {script.name} has no constant {name!r}")
        setattr(module, name, _value(value))
    name, *call_args = args.call
    fn = getattr(module, name, None)
    if not callable(fn):
        parser.error(f"--call {name}: {script.name} has no function {name!r}")
    result = fn(*(_value(a) for a in call_args))
    if inspect.iscoroutine(result):
        result = asyncio.run(result)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
