"""Durations and sizes as people write them in config files ("5m", "24h", "256MB")."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

__all__ = [
    "DURATION_FORM",
    "SIZE_FORM",
    "format_duration",
    "format_size",
    "parse_duration",
    "parse_size",
]

DURATION_FORM = 'a duration like "250ms", "30s", "5m", "1h30m", "24h", "7d" (a bare number is seconds)'
SIZE_FORM = 'a size like "2KB", "256MB", "256MiB" (a bare integer is bytes)'

# Largest first: components of a compound duration must appear in this order, which
# catches typos such as "30m1h" instead of silently adding them up.
_DURATION_UNITS: tuple[tuple[str, Decimal], ...] = (
    ("d", Decimal(86400)),
    ("h", Decimal(3600)),
    ("m", Decimal(60)),
    ("s", Decimal(1)),
    ("ms", Decimal("0.001")),
)
_DURATION_FACTOR = dict(_DURATION_UNITS)
_DURATION_RANK = {unit: rank for rank, (unit, _) in enumerate(_DURATION_UNITS)}
_NUMBER = r"\d+(?:\.\d+)?"
_BARE_NUMBER = re.compile(rf"{_NUMBER}")
# "ms" before "m" so that "250ms" is not read as 250 minutes followed by garbage.
_COMPONENT = re.compile(rf"\s*({_NUMBER})\s*(ms|d|h|m|s)")

_SIZE = re.compile(rf"({_NUMBER})\s*([A-Za-z]*)")
_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
# Decimal before binary so that ties in length render as the decimal unit.
_SIZE_DISPLAY: tuple[tuple[str, int], ...] = (
    ("TB", 10**12),
    ("TiB", 2**40),
    ("GB", 10**9),
    ("GiB", 2**30),
    ("MB", 10**6),
    ("MiB", 2**20),
    ("KB", 10**3),
    ("KiB", 2**10),
    ("B", 1),
)


def _duration_error(text: object) -> ValueError:
    return ValueError(f"expected {DURATION_FORM}, got {text!r}")


def _size_error(text: object) -> ValueError:
    return ValueError(f"expected {SIZE_FORM}, got {text!r}")


def parse_duration(text: str | int | float) -> float:
    """Seconds in a duration such as "250ms", "30s", "1h30m", "7d"; bare numbers are seconds.

    Raises ValueError naming the expected form for negatives, NaN, and anything else.
    """
    # bool is an int subclass; `timeout = true` is a mistake, not one second.
    if isinstance(text, bool):
        raise _duration_error(text)
    if isinstance(text, int | float):
        value = float(text)
        if math.isnan(value) or math.isinf(value) or value < 0:
            raise _duration_error(text)
        return value
    if not isinstance(text, str):
        raise _duration_error(text)
    stripped = text.strip()
    if _BARE_NUMBER.fullmatch(stripped):
        return float(Decimal(stripped))
    total = Decimal(0)
    position = 0
    last_rank = -1
    for match in _COMPONENT.finditer(stripped):
        if match.start() != position:
            raise _duration_error(text)
        unit = match.group(2)
        rank = _DURATION_RANK[unit]
        if rank <= last_rank:
            raise _duration_error(text)
        last_rank = rank
        total += Decimal(match.group(1)) * _DURATION_FACTOR[unit]
        position = match.end()
    if position == 0 or position != len(stripped):
        raise _duration_error(text)
    return float(total)


def format_duration(seconds: float) -> str:
    """Compact form of a duration, e.g. 5400 -> "1h30m", 0.25 -> "250ms"; the inverse of parse_duration."""
    if isinstance(seconds, bool) or math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise ValueError(f"expected a non-negative number of seconds, got {seconds!r}")
    # str() of a float is its shortest round-tripping repr, so Decimal sees what the user wrote.
    value = Decimal(str(float(seconds)))
    if value == 0:
        return "0s"
    millis = value * 1000
    if millis != millis.to_integral_value():
        return f"{format(value.normalize(), 'f')}s"
    remaining = int(millis)
    parts: list[str] = []
    for unit, factor in _DURATION_UNITS:
        unit_ms = int(factor * 1000)
        count, remaining = divmod(remaining, unit_ms)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def parse_size(text: str | int) -> int:
    """Bytes in a size such as "256MB" (10**6), "256MiB" (2**20), "32 MB"; ints are bytes."""
    if isinstance(text, bool):
        raise _size_error(text)
    if isinstance(text, int):
        if text < 0:
            raise _size_error(text)
        return text
    if not isinstance(text, str):
        raise _size_error(text)
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise _size_error(text)
    factor = _SIZE_UNITS.get(match.group(2).lower())
    if factor is None:
        raise _size_error(text)
    try:
        value = Decimal(match.group(1)) * factor
    except InvalidOperation:  # pragma: no cover - the regex admits only plain decimals
        raise _size_error(text) from None
    # A fractional byte count ("1.5B") is always a typo.
    if value != value.to_integral_value():
        raise _size_error(text)
    return int(value)


def format_size(size: int) -> str:
    """Shortest exact form of a byte count, e.g. 256_000_000 -> "256MB", 2**20 -> "1MiB"."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"expected a non-negative integer number of bytes, got {size!r}")
    if size == 0:
        return "0B"
    candidates = [f"{size // factor}{unit}" for unit, factor in _SIZE_DISPLAY if size % factor == 0]
    return min(candidates, key=len)
