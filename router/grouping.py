"""Cache-aware flushing: which pending requests go into which batches, and when.

Requests in one batch run in parallel and do not read each other's cache writes, so a
flush does three things with the requests that share a cacheable prefix (a "group",
router/prefix.py):

- keeps each group together, in as few batches as the limits allow, sent back to back;
- primes a cold group of `cache_prime_min` requests or more: one of its requests goes
  first, with the primers of every other cold group of the flush, in one small batch; the
  rest of the group follows once a request of it has ended (the group is then warm);
- lets a young group wait `cache_group_wait` for more members.

A group is warm when a request with its prefix succeeded within the TTL its class sends
(1 h with `cache_ttl = "1h"`; 5 min with "keep", the API's default and the shorter one).
Waiting and priming are skipped whenever they would put the group's earliest deadline at
risk: priming costs one more batch turnaround (the estimate of router/deadlines.py), so a
group is primed only when two turnarounds and the deadline margin fit before it. The
deadline escalation's own one-turnaround estimate stays right: no request is held past a
point where one batch could no longer meet its deadline.

A group whose prefix is below the model's minimum cacheable length (the calibrated
estimate against router/pricing.py's table) is sent as it is, with no TTL rewrite: the API
would not cache it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .config import LatencyClass
from .pricing import PriceTable
from .store import NO_PREFIX, ClaimSelector, PendingGroup

TTL_SECONDS = {"1h": 3600.0, "keep": 300.0}


@dataclass(frozen=True, slots=True)
class ClaimJob:
    """Claims to make for one flush step: from `latencies`, what `select` picks; `once`: one
    batch only (primers: a second claim would take each group's next request)."""

    latencies: tuple[str, ...]
    select: ClaimSelector
    once: bool = False
    primers: bool = False


@dataclass
class FlushPlan:
    """The claims of one flush, in order, and what it held back."""

    jobs: list[ClaimJob] = field(default_factory=list)
    primed: list[str] = field(default_factory=list)  # prefix keys whose primer this flush sends
    waiting: list[str] = field(default_factory=list)  # young groups given more time
    awaiting_primer: list[str] = field(default_factory=list)  # cold groups whose primer is in flight
    too_short: list[str] = field(default_factory=list)  # below the model's minimum: sent as is

    @property
    def held(self) -> bool:
        """Whether requests stay pending for a later flush (after a primer, or to gather)."""
        return bool(self.primed or self.waiting or self.awaiting_primer)


@dataclass(frozen=True, slots=True)
class Calibration:
    """Per model, how many tokens the API counts for one estimated prefix token."""

    factors: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_sums(cls, sums: Mapping[str, tuple[int, int]]) -> Calibration:
        """From `StoreEngine.cache_calibration`: (tokens returned, tokens estimated) per model."""
        return cls({m: returned / estimated for m, (returned, estimated) in sums.items() if estimated > 0})

    def tokens(self, model: str, estimate: int) -> int:
        return round(estimate * self.factors.get(model, 1.0))


def plan_flush(
    groups: Sequence[PendingGroup],
    classes: Mapping[str, LatencyClass],
    *,
    latencies: Sequence[str],
    status: Mapping[str, tuple[float | None, bool]],
    now: float,
    turnaround: Callable[[str], float],
    margin: float,
    prices: PriceTable,
    calibration: Calibration,
) -> FlushPlan:
    """The claims of a flush of the classes `latencies`, whose pending prefix groups are
    `groups` (oldest first); their requests that mark no prefix go as they are."""
    plan = FlushPlan()
    modes: dict[str, list[str]] = {"1h": [], "keep": []}  # classes by the TTL they send
    ready: dict[str, list[str]] = {"1h": [], "keep": []}
    primers: dict[str, list[str]] = {"1h": [], "keep": []}
    as_is: dict[str, list[str]] = {"1h": [NO_PREFIX], "keep": [NO_PREFIX]}
    for name in latencies:
        modes[classes[name].cache_ttl].append(name)
    for g in groups:
        cls = classes[g.latency]
        mode = cls.cache_ttl
        key = g.prefix_key
        minimum = prices.min_cacheable(g.model)
        if minimum is not None and calibration.tokens(g.model, g.prefix_tokens or 0) < minimum:
            plan.too_short.append(key)
            _add(as_is[mode], key)
            continue
        decision = _decide(g, cls, status.get(key), now=now, turnaround=turnaround(g.model), margin=margin)
        if decision == "send":
            _add(ready[mode], key)
        elif decision == "prime":
            _add(primers[mode], key)
            plan.primed.append(key)
        elif decision == "wait":
            plan.waiting.append(key)
        else:
            plan.awaiting_primer.append(key)
    for mode in ("1h", "keep"):
        if primers[mode]:
            select = ClaimSelector(tuple(primers[mode]), per_group=1, ttl_1h=mode == "1h")
            plan.jobs.append(ClaimJob(tuple(modes[mode]), select, once=True, primers=True))
    for mode in ("1h", "keep"):
        if not modes[mode]:
            continue
        if mode == "keep":  # nothing rewritten: the groups and the rest share batches
            keys = (*ready[mode], *as_is[mode])
            plan.jobs.append(ClaimJob(tuple(modes[mode]), ClaimSelector(keys)))
            continue
        if ready[mode]:
            plan.jobs.append(ClaimJob(tuple(modes[mode]), ClaimSelector(tuple(ready[mode]), ttl_1h=True)))
        plan.jobs.append(ClaimJob(tuple(modes[mode]), ClaimSelector(tuple(as_is[mode]))))
    return plan


def _add(keys: list[str], key: str) -> None:
    if key not in keys:  # one prefix in two classes of the same mode is one group
        keys.append(key)


def _decide(
    g: PendingGroup,
    cls: LatencyClass,
    status: tuple[float | None, bool] | None,
    *,
    now: float,
    turnaround: float,
    margin: float,
) -> str:
    """ "send", "prime" (send one first), "wait" (young) or "await" (its primer is in flight)."""
    succeeded_at, in_flight = status if status is not None else (None, False)
    warm = succeeded_at is not None and succeeded_at >= now - TTL_SECONDS[cls.cache_ttl]

    def fits(wait: float, rounds: int) -> bool:
        return g.deadline_at is None or now + wait + rounds * turnaround + margin < g.deadline_at

    priming = cls.cache_priming == "batch" and not warm
    if cls.cache_group_wait is not None and now - g.oldest_at < cls.cache_group_wait:
        rounds = 2 if priming and not in_flight else 1
        if fits(cls.cache_group_wait - (now - g.oldest_at), rounds):
            return "wait"
    if not priming:
        return "send"
    if in_flight:
        # A primer (or a batch of the group) is running: what ends it warms the group. Wait
        # while a full turnaround for it and then one for the rest still fit.
        return "await" if fits(turnaround, 1) else "send"
    if g.requests >= cls.cache_prime_min and fits(0.0, 2):
        return "prime"
    return "send"
