"""Cron expressions fire when cron would fire them (weekday 0 and 7 are Sunday)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from router.config import RouterConfig
from router.cron import cron_trigger, weekday_field

UTC = ZoneInfo("UTC")
# Tuesday 2026-12-01, 12:00 UTC.
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def next_fire(expression: str) -> datetime:
    fire: datetime = cron_trigger(expression, timezone="UTC").get_next_fire_time(None, NOW)
    return fire


@pytest.mark.parametrize(
    ("expression", "weekday"),
    [
        ("0 2 * * 1", "Monday"),
        ("0 2 * * 0", "Sunday"),
        ("0 2 * * 7", "Sunday"),
        ("0 2 * * sun", "Sunday"),
        ("0 2 * * 6", "Saturday"),
        ("0 2 * * 3", "Wednesday"),
    ],
)
def test_a_weekday_number_means_what_it_means_to_cron(expression: str, weekday: str) -> None:
    assert next_fire(expression).strftime("%A") == weekday


def test_ranges_lists_and_steps_are_cron_days() -> None:
    assert weekday_field("1-5") == "mon,tue,wed,thu,fri"
    assert weekday_field("5-7") == "sun,fri,sat"
    assert weekday_field("fri-sun") == "sun,fri,sat"
    assert weekday_field("0,6") == "sun,sat"
    assert weekday_field("*/2") == "sun,tue,thu,sat"
    assert weekday_field("1-5/2") == "mon,wed,fri"
    assert weekday_field("*") == "*"
    # Monday to Friday at 09:00, from a Tuesday noon: Wednesday next.
    assert next_fire("0 9 * * 1-5") == datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("0 2 * *", "Wrong number of fields"),
        ("0 2 * * 8", "expected 0-7"),
        ("0 2 * * 5-1", "runs backwards"),
        ("0 2 * * */0", "bad step"),
        ("0 25 * * *", "higher than the maximum value"),
    ],
)
def test_a_bad_expression_names_its_problem(expression: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        cron_trigger(expression, timezone="UTC")


def test_the_config_accepts_seven_and_rejects_eight() -> None:
    text = '[classes.weekly]\nroute = "batch"\ndeadline = "7d"\ncron = "0 2 * * {}"\n'
    assert RouterConfig.from_toml_text(text.format(7), "t.toml").classes["weekly"].cron == "0 2 * * 7"
    with pytest.raises(Exception, match=r"classes\.weekly\.cron.*weekday 0 or 7 = Sunday"):
        RouterConfig.from_toml_text(text.format(8), "t.toml")
