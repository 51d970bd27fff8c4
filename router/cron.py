"""Cron expressions as cron reads them, for APScheduler's CronTrigger.

APScheduler 3 numbers weekdays from 0 = Monday, while cron (and every crontab a user
copies in) numbers them from 0 = Sunday, with 7 as Sunday too. `CronTrigger.from_crontab`
passes the weekday field through as it is, so "0 2 * * 1" would fire on Tuesdays. The
weekday field is translated here into day names, which both agree on.
"""

from __future__ import annotations

from typing import Any

from apscheduler.triggers.cron import CronTrigger

_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_NUMBER_OF = {name: number for number, name in enumerate(_NAMES)}


def cron_trigger(expression: str, *, timezone: str) -> Any:
    """A CronTrigger for a 5-field cron expression (minute hour day month weekday).

    Raises ValueError naming the problem for anything cron would not accept.
    """
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"Wrong number of fields; got {len(fields)}, expected 5")
    minute, hour, day, month, weekday = fields
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=weekday_field(weekday),
        timezone=timezone,
    )


def weekday_field(field: str) -> str:
    """The cron weekday field (0-7, Sunday 0 or 7, names, ranges, lists, steps) as APScheduler's."""
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        days.update(_days_of(part, field))
    return ",".join(_NAMES[d] for d in sorted(days))


def _days_of(part: str, field: str) -> range | list[int]:
    base, slash, step_text = part.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) < 1:
            raise ValueError(f"weekday field {field!r}: bad step {step_text!r}")
        step = int(step_text)
    if base == "*":
        first, last = 0, 6
    elif "-" in base:
        low, _, high = base.partition("-")
        first, last = _day(low, field), _day(high, field)
        if last == 0 and high.strip() in ("7", "sun"):
            last = 7  # "5-7" and "fri-sun" run to the Sunday at the end of the week
        if first > last:
            raise ValueError(f"weekday field {field!r}: range {base!r} runs backwards")
    else:
        first = _day(base, field)
        last = first if not slash else 6
    return [d % 7 for d in range(first, last + 1, step)]


def _day(text: str, field: str) -> int:
    text = text.strip().lower()
    if text in _NUMBER_OF:
        return _NUMBER_OF[text]
    if text.isdigit() and 0 <= int(text) <= 7:
        return int(text) % 7
    raise ValueError(f"weekday field {field!r}: expected 0-7 (0 or 7 is Sunday) or a day name, got {text!r}")
