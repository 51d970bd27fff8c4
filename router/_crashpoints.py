"""Test-only fault hook: die by SIGKILL at a named point of the flush/poll/ingest path.

`HYBRID_ROUTER_CRASH_AT=<point>[:<n>]` kills the process the n-th time (default: the first)
`crash_point(<point>)` is reached. Unset (always, outside the crash tests), a call costs one
dict lookup. The crash test (tests/test_crash.py) uses it to hit precise steps deterministically.
"""

from __future__ import annotations

import os
import signal

ENV = "HYBRID_ROUTER_CRASH_AT"


def _parse(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    name, _, count = spec.partition(":")
    return name, int(count) if count else 1


_target = _parse(os.environ.get(ENV))
_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    """SIGKILL this process if `name` is the configured crash point and its hit count is reached."""
    if _target is None or _target[0] != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= _target[1]:
        os.kill(os.getpid(), signal.SIGKILL)
