"""Turning a stored final result into what the caller gets: the provider's reply object, or
the exception the same failure would have raised on the real-time endpoint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

import pydantic_core

from .errors import (
    BatchResultMissingError,
    DeadlineError,
    RequestCanceledError,
    RequestExpiredError,
    RouterError,
)
from .store import RequestRow, states

_T_co = TypeVar("_T_co", covariant=True)
_T = TypeVar("_T")

Outcome = Any  # the provider's reply object, or an exception instance


class _Outcomes(Protocol[_T_co]):
    """What outcome_of needs of a provider (router/providers/base.py: `Provider.outcome`)."""

    def outcome(self, result: Mapping[str, Any]) -> _T_co: ...


class ProviderOutcomes:
    """Decodes a result with the provider it came from. A provider whose canonical lines are
    not its own wire form keeps its payload under its name in the result (the OpenAI codec:
    ``result.openai``, router/providers/openai/codec.py); a result with no such key is the
    default provider's, whose lines are canonical as they are (Anthropic)."""

    def __init__(self, providers: Mapping[str, _Outcomes[Any]], default: str = "anthropic") -> None:
        self._providers = dict(providers)
        self._default = default
        self._named = tuple(name for name in self._providers if name != default)

    def provider_of(self, result: Mapping[str, Any]) -> str:
        """The name of the provider whose result this is."""
        for name in self._named:
            if name in result:
                return name
        return self._default

    def outcome(self, result: Mapping[str, Any]) -> Any:
        name = self.provider_of(result)
        provider = self._providers.get(name)
        if provider is None:
            raise RouterError(
                f"this result is from the {name} provider, which this Router does not have"
                f" configured (see [providers.{name}])"
            )
        return provider.outcome(result)


def outcome_of(row: RequestRow, provider: _Outcomes[_T]) -> _T | BaseException:
    """The reply of a succeeded row, else the exception to raise. The row must be final.

    `succeeded` and `errored` results are the provider's to decode; the kinds the router
    writes itself (canceled, expired, deadline, missing) are decoded here."""
    if row.state not in states.FINAL_STATES or row.result is None:
        raise RouterError(f"request {row.key!r} has no result yet (state {row.state})")
    line: dict[str, Any] = pydantic_core.from_json(row.result)
    result = line.get("result") or {}
    kind = result.get("type")
    if kind == "succeeded" or kind == "errored":
        return provider.outcome(result)
    if kind == "canceled":
        return RequestCanceledError(
            f"request {row.key!r} was canceled in its batch before it was processed"
            f" (after {row.attempts} attempt(s))"
        )
    if kind == "expired":
        return RequestExpiredError(
            f"request {row.key!r} expired: its batch ended (24 h limit) before it was processed"
            f" (after {row.attempts} attempt(s))"
        )
    if kind == "deadline":
        return DeadlineError(str(result.get("reason") or f"request {row.key!r} cannot meet its deadline"))
    if kind == "missing":
        return BatchResultMissingError(str(result.get("reason") or f"request {row.key!r} has no result"))
    return RouterError(f"request {row.key!r} ended with an unknown result type {kind!r}")


def unwrap(outcome: _T | BaseException) -> _T:
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
