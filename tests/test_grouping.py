"""The flush planner's decisions, group by group (router/grouping.py); the journal-based tests
of what is sent are in test_cache_batching.py."""

from __future__ import annotations

from router.config import LatencyClass
from router.grouping import Calibration, FlushPlan, plan_flush
from router.pricing import PriceTable
from router.store import NO_PREFIX, PendingGroup

NOW = 1_800_000_000.0
HOUR = 3600.0
MODEL = "claude-sonnet-4-5"  # minimum 1,024 tokens


def group(
    key: str, *, requests: int = 30, tokens: int = 3000, age: float = 0.0, deadline: float = 86400.0
) -> PendingGroup:
    return PendingGroup("evals", MODEL, key, requests, requests * 1000, NOW - age, NOW + deadline, tokens)


def plan(
    *groups: PendingGroup, status: dict[str, tuple[float | None, bool]] | None = None, **cls: object
) -> FlushPlan:
    classes = {
        "evals": LatencyClass.model_validate({"name": "evals", "route": "batch", "deadline": 86400.0, **cls})
    }
    return plan_flush(
        groups,
        classes,
        latencies=["evals"],
        status=status or {},
        now=NOW,
        turnaround=lambda model: HOUR,
        margin=300.0,
        prices=PriceTable.bundled(),
        calibration=Calibration(),
    )


def test_cold_groups_are_primed_together_and_the_rest_held() -> None:
    p = plan(group("a"), group("b"), group("small", requests=5))
    primers, grouped, plain = p.jobs
    assert primers.primers and primers.once and primers.select.groups == ("a", "b")
    assert primers.select.per_group == 1 and primers.select.ttl_1h
    assert grouped.select.groups == ("small",) and grouped.select.ttl_1h  # below cache_prime_min: now
    assert plain.select.groups == (NO_PREFIX,) and not plain.select.ttl_1h  # no prefix: as it is
    assert p.primed == ["a", "b"] and p.held


def test_warm_and_in_flight_groups() -> None:
    warm = {"a": (NOW - 600.0, False)}
    assert plan(group("a"), status=warm).primed == []
    stale = {"a": (NOW - 2 * HOUR, False)}  # past the 1 h TTL: cold again
    assert plan(group("a"), status=stale).primed == ["a"]
    flying = {"a": (None, True)}  # its primer is out: wait for it
    assert plan(group("a"), status=flying).awaiting_primer == ["a"]
    # With the 5-minute TTL ("keep"), ten minutes ago is cold.
    assert plan(group("a"), status=warm, cache_ttl="keep").primed == ["a"]


def test_deadlines_bound_priming_and_waiting() -> None:
    # Two turnarounds (2 h) and the margin do not fit in 2 h: sent unprimed.
    assert plan(group("a", deadline=2 * HOUR)).primed == []
    assert plan(group("a", deadline=2 * HOUR + 600)).primed == ["a"]
    # An in-flight primer is not waited for when one more turnaround would not fit.
    tight = plan(group("a", deadline=HOUR + 600), status={"a": (None, True)})
    assert tight.awaiting_primer == [] and tight.jobs[0].select.groups == ("a",)
    # A young group waits only while the wait and its batches fit.
    assert plan(group("a", age=60.0), cache_group_wait=300.0, cache_priming="off").waiting == ["a"]
    assert plan(group("a", age=400.0), cache_group_wait=300.0, cache_priming="off").waiting == []
    late = plan(group("a", age=60.0, deadline=HOUR + 400), cache_group_wait=300.0, cache_priming="off")
    assert late.waiting == []


def test_a_prefix_below_the_minimum_is_sent_as_is_and_calibration_counts() -> None:
    p = plan(group("a", tokens=900))
    assert p.too_short == ["a"] and p.primed == []
    assert [j.select.ttl_1h for j in p.jobs] == [False]  # one job, no rewrite
    # Returned usage said 1.2 tokens for every estimated one: 900 estimated is 1,080, cacheable.
    calibrated = plan_flush(
        [group("a", tokens=900)],
        {"evals": LatencyClass(name="evals", route="batch", deadline=86400.0)},
        latencies=["evals"],
        status={},
        now=NOW,
        turnaround=lambda model: HOUR,
        margin=300.0,
        prices=PriceTable.bundled(),
        calibration=Calibration.from_sums({MODEL: (1200, 1000)}),
    )
    assert calibrated.too_short == [] and calibrated.primed == ["a"]


def test_a_minimum_set_under_pricing_wins() -> None:
    from router.config import ModelPrice

    prices = PriceTable.bundled().with_overrides(
        {MODEL: ModelPrice(input=3, output=15, min_cacheable_tokens=4000)}
    )
    assert prices.min_cacheable(MODEL + "-20250929") == 4000
    assert (
        PriceTable.bundled().with_overrides({MODEL: ModelPrice(input=3, output=15)}).min_cacheable(MODEL)
        == 1024
    )
