"""Clocks the emulator reads time from: the real one, or a manual one tests move by hand."""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "EmulatorClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """What the emulator needs from a clock: unix seconds, and whether they can be moved."""

    @property
    def manual(self) -> bool:
        """True when `advance` works (the time only moves when told to)."""
        ...

    def now(self) -> float:
        """The current time in unix seconds."""
        ...

    def advance(self, seconds: float) -> float:
        """Move the time forward by `seconds`; returns the new time."""
        ...


class SystemClock:
    """Real time (`time.time()`); it cannot be advanced."""

    @property
    def manual(self) -> bool:
        return False

    def now(self) -> float:
        return time.time()

    def advance(self, seconds: float) -> float:
        raise RuntimeError("the emulator runs on a real-time clock; use EmulatorClock to move time by hand")


class EmulatorClock:
    """A manual clock: the time stands still until `advance` is called.

    Batches are checked against it lazily, so after `advance` any batch whose
    turnaround has passed shows as ended on the next request (or `emu.batches`).
    """

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else float(start)

    @property
    def manual(self) -> bool:
        return True

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError(f"cannot move the clock backwards (seconds={seconds})")
        self._now += seconds
        return self._now

    def __repr__(self) -> str:
        return f"EmulatorClock(now={self._now!r})"
