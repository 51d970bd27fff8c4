"""Durations and sizes: parsing, formatting, and the round trip between them."""

from __future__ import annotations

import pytest

from router.units import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("24h", 86400.0),
        ("7d", 604800.0),
        ("1d2h3m4s5ms", 93784.005),
        ("1.5h", 5400.0),
        ("0s", 0.0),
        ("  10m  ", 600.0),
        ("30", 30.0),
        ("0.5", 0.5),
        (45, 45.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


BAD_DURATIONS: list[object] = ["", "abc", "-5m", "5M", "5 minutes", "30m1h", "1h1h", "1x", "m", "5mm", "1.h"]


@pytest.mark.parametrize("text", [*BAD_DURATIONS, "1e3s", -1, float("nan"), True])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match=r'expected a duration like "250ms", "30s", "5m"'):
        parse_duration(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.25, "250ms"),
        (30, "30s"),
        (300, "5m"),
        (5400, "1h30m"),
        (86400, "1d"),
        (90061.5, "1d1h1m1s500ms"),
        (604800, "7d"),
        (1.2345, "1.2345s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


def test_format_duration_rejects_negative() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        format_duration(-1)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("256MB", 256_000_000),
        ("256MiB", 256 * 2**20),
        ("2KB", 2000),
        ("2KiB", 2048),
        ("32 MB", 32_000_000),
        ("1GB", 10**9),
        ("1.5KB", 1500),
        ("100B", 100),
        ("100", 100),
        ("256mb", 256_000_000),
        (4096, 4096),
        (0, 0),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MB", "-1MB", "12XB", "1.5B", "1.2.3MB", -5, True, 2.5])
def test_parse_size_rejects(text: object) -> None:
    with pytest.raises(ValueError, match=r'expected a size like "2KB", "256MB"'):
        parse_size(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0B"),
        (100, "100B"),
        (2000, "2KB"),
        (1024, "1KiB"),
        (256_000_000, "256MB"),
        (256 * 2**20, "256MiB"),
        (1234, "1234B"),
        (10**9, "1GB"),
    ],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text
    assert parse_size(text) == size
