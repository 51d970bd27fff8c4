"""Exceptions raised by hybrid-router itself, and `causes`: the chain an exception came from."""

from __future__ import annotations

from collections.abc import Iterator

__all__ = [
    "BatchResultMissingError",
    "ConfigError",
    "DeadlineError",
    "InvalidRequestError",
    "RequestCanceledError",
    "RequestExpiredError",
    "RouterError",
    "StoreError",
    "StoreFullError",
]


class RouterError(Exception):
    """Base class of every error hybrid-router raises itself."""


class ConfigError(RouterError):
    """A configuration file is missing, malformed, or holds a value of the wrong form."""


class StoreError(RouterError):
    """The database cannot be opened, read or written; the message names the file (or the host
    and port) and the cause, never a password."""


class StoreFullError(StoreError):
    """The disk holding the database is full: the requests of the failed write were not stored.

    Requests acknowledged before it are stored; once space is free, the store works again.
    """


class InvalidRequestError(RouterError, ValueError):
    """The parameters of a request are wrong; raised at call time, before anything is stored."""


class RequestCanceledError(RouterError):
    """The batch holding this request was canceled before the request was processed."""


class RequestExpiredError(RouterError):
    """The batch holding this request expired (24 h) before the request was processed."""


class DeadlineError(RouterError):
    """A batch could not meet the request's deadline and its class says `on_deadline_risk = "fail"`."""


class BatchResultMissingError(RouterError):
    """A batch ended but its results could no longer be downloaded (e.g. past the 29-day limit)."""


def causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it was raised from (an SDK wraps what its transport raised)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
