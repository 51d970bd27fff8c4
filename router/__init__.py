"""hybrid-router: route Anthropic API calls between real time and the Message Batches API.

async with Router.from_config("router.toml") as client:
    msg = await client.messages.create(model=..., max_tokens=..., messages=[...], latency="daily")
"""

from __future__ import annotations

from .client import Router, UnknownKeyError
from .config import LatencyClass, RouterConfig, load_config
from .errors import (
    BatchResultMissingError,
    ConfigError,
    DeadlineError,
    InvalidRequestError,
    RequestCanceledError,
    RequestExpiredError,
    RouterError,
    StoreError,
    StoreFullError,
)
from .providers.anthropic.dropin import Messages, Results
from .store import Ticket

__version__ = "0.1.0"

__all__ = [
    "BatchResultMissingError",
    "ConfigError",
    "DeadlineError",
    "InvalidRequestError",
    "LatencyClass",
    "Messages",
    "RequestCanceledError",
    "RequestExpiredError",
    "Results",
    "Router",
    "RouterConfig",
    "RouterError",
    "StoreError",
    "StoreFullError",
    "Ticket",
    "UnknownKeyError",
    "__version__",
    "load_config",
]
