"""Process-wide settings of the router's own programs (the CLI, the daemon, the emulator)."""

from __future__ import annotations

import gc


def freeze_imports() -> None:
    """Move every object alive now (the imported modules, the SDKs' hundreds of pydantic
    types among them) out of the garbage collector's reach.

    They live as long as the process, yet every full collection walks them, and so does the
    last one at exit: about two seconds of a bare `hybrid-router emulate`'s exit after
    Ctrl-C on a 2-core machine, ten times that under load. Called once, first thing in
    `main()`; objects made afterwards are collected as usual.
    """
    gc.freeze()
