"""The emulator's prompt cache: which prefixes are live, on the emulator clock, for both lanes.

One `PromptCache` serves the real-time lane and every batch of an emulator. For a request
with breakpoints (`router.emulator.replies.InputProfile`), the longest breakpoint prefix
still live is read (``cache_read_input_tokens``), the prefix tokens beyond it up to the last
breakpoint are written (``cache_creation_input_tokens``, split by the TTL of the breakpoint
that covers them into ``ephemeral_5m_input_tokens`` / ``ephemeral_1h_input_tokens``), and
``input_tokens`` is the rest, so the three add up to the ``count_tokens`` figure.

A write becomes readable only when the request that made it completes: `use` is one
request that completes at once (the real-time lane), `use_wave` is a set of requests that
run in parallel and complete together (a wave of a batch), none of which reads another's
write. An entry lives 5 minutes or 1 hour from the last request that wrote or read it.
See ``CACHING.md`` for the whole model and its sources.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from router.cache_rules import TTL_SECONDS

if TYPE_CHECKING:
    from router.emulator.replies import InputProfile

__all__ = ["CacheUsage", "PromptCache"]

# Expired entries are swept once the table is this big, so a long run does not grow without end.
_SWEEP_AT = 100_000


@dataclass(frozen=True, slots=True)
class CacheUsage:
    """Cache tokens of one request: read, and written per TTL."""

    read: int = 0
    write_5m: int = 0
    write_1h: int = 0

    @property
    def write(self) -> int:
        return self.write_5m + self.write_1h


_NONE = CacheUsage()


class PromptCache:
    """Cached prefixes and when each expires, on the emulator clock."""

    def __init__(self) -> None:
        self._expires: dict[bytes, float] = {}

    def __len__(self) -> int:
        return len(self._expires)

    def lookup(self, profile: InputProfile, now: float) -> CacheUsage:
        """What a request at `now` reads and writes, without changing the cache."""
        points = profile.breakpoints
        if not points:
            return _NONE
        hit = -1
        for i in range(len(points) - 1, -1, -1):
            if self._expires.get(points[i].key, 0.0) > now:
                hit = i
                break
        read = points[hit].tokens if hit >= 0 else 0
        write = {"5m": 0, "1h": 0}
        previous = read
        for point in points[hit + 1 :]:
            write[point.ttl] += max(0, point.tokens - previous)
            previous = max(previous, point.tokens)
        return CacheUsage(read=read, write_5m=write["5m"], write_1h=write["1h"])

    def complete(self, profile: InputProfile, now: float) -> None:
        """A request that completes at `now`: its prefixes are live for their TTL from now on.

        A read refreshes the TTL of what it read, as a write starts one.
        """
        for point in profile.breakpoints:
            expires = now + TTL_SECONDS[point.ttl]
            if self._expires.get(point.key, 0.0) < expires:
                self._expires[point.key] = expires
        if len(self._expires) > _SWEEP_AT:
            self._expires = {k: v for k, v in self._expires.items() if v > now}

    def use(self, profile: InputProfile, now: float) -> CacheUsage:
        """One request that runs and completes at `now`: read the longest live prefix, write the rest."""
        usage = self.lookup(profile, now)
        self.complete(profile, now)
        return usage

    def use_wave(self, profiles: Sequence[InputProfile], now: float) -> list[CacheUsage]:
        """Requests that run in parallel and complete together at `now`: each sees the cache as it
        was before the wave, so none reads another's write; the next wave reads them all."""
        usages = [self.lookup(profile, now) for profile in profiles]
        for profile in profiles:
            self.complete(profile, now)
        return usages

    def clear(self) -> None:
        """Forget every cached prefix."""
        self._expires.clear()
