"""The emulator's prompt cache: which prefixes are live, on the emulator clock, for both lanes.

One `PromptCache` serves the real-time lane and every batch of an emulator. For a request
with breakpoints (`router.emulator.replies.InputProfile`), the longest prefix still live is
read (``cache_read_input_tokens``): a breakpoint's own, or one ending up to 19 blocks before
it that another request wrote. The prefix tokens beyond it up to the last breakpoint are
written (``cache_creation_input_tokens``, split by the TTL of the breakpoint
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

from router.providers.anthropic.cache_rules import TTL_SECONDS

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


@dataclass(frozen=True, slots=True)
class _Hit:
    """What a request reads: up to breakpoint `index` (-1: before the first), `tokens` of it,
    from the entry `key` (None: nothing), refreshed with `ttl` when the request completes."""

    index: int
    tokens: int
    key: bytes | None
    ttl: str


_MISS = _Hit(-1, 0, None, "5m")


class PromptCache:
    """Cached prefixes and when each expires, on the emulator clock."""

    def __init__(self) -> None:
        self._expires: dict[bytes, float] = {}

    def __len__(self) -> int:
        return len(self._expires)

    def _find(self, profile: InputProfile, now: float) -> _Hit:
        """The longest live prefix: each breakpoint's own, then the ones its lookback reaches."""
        expires = self._expires
        points = profile.breakpoints
        for i in range(len(points) - 1, -1, -1):
            point = points[i]
            if expires.get(point.key, 0.0) > now:
                return _Hit(i, point.tokens, point.key, point.ttl)
            for key, tokens in reversed(point.lookback):
                if expires.get(key, 0.0) > now:
                    # Read up to a block before this breakpoint: it is written from there on.
                    return _Hit(i - 1, tokens, key, point.ttl)
        return _MISS

    @staticmethod
    def _usage(profile: InputProfile, hit: _Hit) -> CacheUsage:
        if not profile.breakpoints:
            return _NONE
        write = {"5m": 0, "1h": 0}
        previous = hit.tokens
        for point in profile.breakpoints[hit.index + 1 :]:
            write[point.ttl] += max(0, point.tokens - previous)
            previous = max(previous, point.tokens)
        return CacheUsage(read=hit.tokens, write_5m=write["5m"], write_1h=write["1h"])

    def _live(self, key: bytes, until: float) -> None:
        if self._expires.get(key, 0.0) < until:
            self._expires[key] = until

    def _complete(self, profile: InputProfile, hit: _Hit, now: float) -> None:
        # Writes happen at breakpoints only; a read refreshes the entry it read, as a write starts one.
        for point in profile.breakpoints:
            self._live(point.key, now + TTL_SECONDS[point.ttl])
        if hit.key is not None:
            self._live(hit.key, now + TTL_SECONDS[hit.ttl])
        if len(self._expires) > _SWEEP_AT:
            self._expires = {k: v for k, v in self._expires.items() if v > now}

    def lookup(self, profile: InputProfile, now: float) -> CacheUsage:
        """What a request at `now` would read and write, without changing the cache."""
        return self._usage(profile, self._find(profile, now))

    def use(self, profile: InputProfile, now: float) -> CacheUsage:
        """One request that runs and completes at `now`: read the longest live prefix, write the rest."""
        hit = self._find(profile, now)
        self._complete(profile, hit, now)
        return self._usage(profile, hit)

    def use_wave(self, profiles: Sequence[InputProfile], now: float) -> list[CacheUsage]:
        """Requests that run in parallel and complete together at `now`: each sees the cache as it
        was before the wave, so none reads another's write; the next wave reads them all."""
        hits = [self._find(profile, now) for profile in profiles]
        for profile, hit in zip(profiles, hits, strict=True):
            self._complete(profile, hit, now)
        return [self._usage(profile, hit) for profile, hit in zip(profiles, hits, strict=True)]

    def clear(self) -> None:
        """Forget every cached prefix."""
        self._expires.clear()
