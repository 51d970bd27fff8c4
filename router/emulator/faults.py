"""Fault injection: errors, slow answers and dropped connections, at seeded rates or on demand.

Rates are per endpoint. The top-level fields of `FaultConfig` apply to every
endpoint; an entry in `FaultConfig.endpoints` (keyed by an endpoint name, or
``"*"``) replaces them for that endpoint. Endpoint names: ``messages``,
``count_tokens``, ``batches.create``, ``batches.retrieve``, ``batches.list``,
``batches.cancel``, ``batches.delete``, ``batches.results``, ``models.list``,
``models.retrieve``, and the OpenAI side's ``openai.chat.completions``,
``openai.files.{create,list,retrieve,content,delete}`` and
``openai.batches.{create,list,retrieve,cancel}``.

One uniform draw per request, from ``random.Random(seed)``, picks at most one of
`drop`, `rate_limit`, `overloaded`, `server_error` (in that order of the unit
interval), so a run with the same seed and the same traffic injects the same
faults. `fail_next` queues forced faults that win over the rates.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

from router.emulator.errors import ERROR_TYPE_BY_STATUS, ApiError
from router.emulator.openai.config import OPENAI_ENDPOINTS

__all__ = ["ENDPOINTS", "Fault", "FaultConfig", "FaultInjector", "FaultRates", "ForcedFault"]

ENDPOINTS = (
    "messages",
    "count_tokens",
    "batches.create",
    "batches.retrieve",
    "batches.list",
    "batches.cancel",
    "batches.delete",
    "batches.results",
    "models.list",
    "models.retrieve",
    *OPENAI_ENDPOINTS,
)


def _check_endpoint(name: str) -> str:
    if name != "*" and name not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {name!r}; expected '*' or one of {', '.join(ENDPOINTS)}")
    return name


class FaultRates(BaseModel):
    """Fault rates (0..1) and shapes for one endpoint."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    rate_limit: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of requests answered 429 `rate_limit_error`."""
    server_error: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of requests answered 500 `api_error`."""
    overloaded: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of requests answered 529 `overloaded_error`."""
    drop: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of requests whose connection is closed without an answer."""
    drop_after: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of requests handled (a batch is created, ...) whose answer is then lost: the
    connection is closed instead of answering."""
    slow_seconds: float = Field(default=0.0, ge=0.0)
    """Delay before answering."""
    slow_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    """Share of requests delayed by `slow_seconds`."""
    retry_after: float = Field(default=0.0, ge=0.0)
    """Value of the `retry-after` header (seconds) sent with injected 429s."""
    results_cut_after: int | None = Field(default=None, ge=0)
    """Cut the results stream (close the connection) after this many lines."""
    results_cut_bytes: int | None = Field(default=None, ge=0)
    """Cut the results stream after this many bytes, wherever that falls (mid-line too)."""


class ForcedFault(BaseModel):
    """A fault forced on the next `count` requests of `endpoint`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    endpoint: str
    status: int = Field(default=500, ge=400, le=599)
    count: int = Field(default=1, ge=0)
    error_type: str | None = None
    """Error type of the body; by default the one the API sends with `status`."""
    retry_after: float | None = Field(default=None, ge=0.0)
    """Adds a `retry-after` header (seconds); 429s default to the endpoint's `retry_after`."""
    drop: bool = False
    """Close the connection instead of answering (`status` is then ignored)."""
    after: bool = False
    """With `drop`: handle the request first, then close the connection (the answer is lost)."""

    @field_validator("endpoint")
    @classmethod
    def _known_endpoint(cls, value: str) -> str:
        return _check_endpoint(value)


class FaultConfig(FaultRates):
    """Fault settings of an emulator (`emu.faults`); mutable at runtime."""

    endpoints: dict[str, FaultRates] = Field(default_factory=dict)
    forced: list[ForcedFault] = Field(default_factory=list)

    @field_validator("endpoints")
    @classmethod
    def _known_endpoints(cls, value: dict[str, FaultRates]) -> dict[str, FaultRates]:
        for name in value:
            _check_endpoint(name)
        return value

    def rates_for(self, endpoint: str) -> FaultRates:
        """The rates in force for `endpoint`."""
        return self.endpoints.get(endpoint) or self.endpoints.get("*") or self

    def set(self, endpoint: str, **rates: float | int | None) -> FaultRates:
        """Set rates for one endpoint (or ``"*"``), e.g. ``faults.set("messages", rate_limit=0.5)``."""
        _check_endpoint(endpoint)
        current = self.endpoints.get(endpoint)
        base = current.model_dump() if current is not None else {}
        self.endpoints[endpoint] = FaultRates.model_validate({**base, **rates})
        return self.endpoints[endpoint]

    def fail_next(
        self,
        endpoint: str,
        *,
        status: int = 500,
        count: int = 1,
        error_type: str | None = None,
        retry_after: float | None = None,
        drop: bool = False,
        after: bool = False,
    ) -> None:
        """Make the next `count` requests of `endpoint` (or ``"*"``) fail with `status`, or drop them.

        With `drop` and `after`, each request is handled and only its answer is lost.
        """
        self.forced.append(
            ForcedFault(
                endpoint=endpoint,
                status=status,
                count=count,
                error_type=error_type,
                retry_after=retry_after,
                drop=drop,
                after=after,
            )
        )

    def clear(self) -> None:
        """Back to no faults at all."""
        for name in FaultRates.model_fields:
            setattr(self, name, FaultRates.model_fields[name].default)
        self.endpoints.clear()
        self.forced.clear()

    def take_forced(self, endpoint: str) -> ForcedFault | None:
        """Consume one queued forced fault for `endpoint`, if any."""
        for i, forced in enumerate(self.forced):
            if forced.endpoint in (endpoint, "*") and forced.count > 0:
                forced.count -= 1
                if forced.count == 0:
                    del self.forced[i]
                return forced
        return None


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do instead of answering: raise `error`, or drop the connection."""

    error: ApiError | None = None
    drop: bool = False
    after: bool = False  # with drop: handle the request, then drop the connection


class FaultInjector:
    """Decides, per request, whether and how long to delay and which fault to inject."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(f"{seed}:faults")

    def decide(self, config: FaultConfig, endpoint: str) -> tuple[float, Fault | None]:
        """(seconds to wait first, fault or None) for one request of `endpoint`."""
        rates = config.rates_for(endpoint)
        delay = 0.0
        if rates.slow_seconds > 0 and (rates.slow_rate >= 1.0 or self._random.random() < rates.slow_rate):
            delay = rates.slow_seconds
        forced = config.take_forced(endpoint)
        if forced is not None:
            return delay, self._forced(forced, rates)
        total = rates.drop + rates.drop_after + rates.rate_limit + rates.overloaded + rates.server_error
        if total <= 0:
            return delay, None
        draw = self._random.random()
        if draw < rates.drop:
            return delay, Fault(drop=True)
        draw -= rates.drop
        if draw < rates.drop_after:
            return delay, Fault(drop=True, after=True)
        draw -= rates.drop_after
        if draw < rates.rate_limit:
            return delay, Fault(error=self._error(429, None, rates.retry_after))
        draw -= rates.rate_limit
        if draw < rates.overloaded:
            return delay, Fault(error=self._error(529, None, None))
        draw -= rates.overloaded
        if draw < rates.server_error:
            return delay, Fault(error=self._error(500, None, None))
        return delay, None

    def _forced(self, forced: ForcedFault, rates: FaultRates) -> Fault:
        if forced.drop:
            return Fault(drop=True, after=forced.after)
        retry_after = forced.retry_after
        if retry_after is None and forced.status == 429:
            retry_after = rates.retry_after
        return Fault(error=self._error(forced.status, forced.error_type, retry_after))

    @staticmethod
    def _error(status: int, error_type: str | None, retry_after: float | None) -> ApiError:
        kind = error_type or ERROR_TYPE_BY_STATUS.get(status, "api_error")
        headers = {} if retry_after is None else {"retry-after": f"{retry_after:g}"}
        return ApiError(kind, f"Emulated {kind} (fault injection)", status=status, headers=headers)
