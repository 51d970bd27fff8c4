"""Runtime settings of an emulator: batch turnaround and parallelism, per-request outcomes, faults."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from router.emulator.faults import FaultConfig
from router.emulator.openai.config import OpenAIConfig
from router.emulator.replies import DIRECTIVE_ERROR_TYPES

__all__ = ["DEFAULT_BATCH_PARALLELISM", "EmulatorConfig", "OutcomeConfig"]

# Users report cold batches of 28 to 138 requests that read no cache at all: every request
# ran before any other's write was readable. 150 is the narrowest round width that covers
# every such report; a wider one would invent misses nobody reported (see CACHING.md).
DEFAULT_BATCH_PARALLELISM = 150


class OutcomeConfig(BaseModel):
    """How batch requests turn out, beyond the magic directives (`emu.outcomes`); mutable at runtime.

    Rates are drawn per request when its batch ends, from a generator seeded with the
    emulator seed and the batch's sequence number.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    errored: dict[str, float] = Field(default_factory=dict)
    """Error type -> share of requests that come back `errored` with it."""
    expired: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of requests that come back `expired`."""
    late_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of batches that take `late_seconds` longer than `batch_seconds`."""
    late_seconds: float = Field(default=0.0, ge=0.0)
    partial_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of batches that run out of time: only `partial_done` of their requests are
    processed, the rest come back `expired`."""
    partial_done: float = Field(default=0.5, ge=0.0, le=1.0)
    """Share of the requests of a partial batch that are processed (in request order)."""

    @field_validator("errored")
    @classmethod
    def _known_error_types(cls, value: dict[str, float]) -> dict[str, float]:
        for kind, rate in value.items():
            if kind not in DIRECTIVE_ERROR_TYPES:
                raise ValueError(
                    f"unknown error type {kind!r}; expected one of {sorted(DIRECTIVE_ERROR_TYPES)}"
                )
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"rate of {kind!r} must be between 0 and 1, got {rate}")
        if sum(value.values()) > 1.0:
            raise ValueError("the errored rates add up to more than 1")
        return value


class EmulatorConfig(BaseModel):
    """Everything `POST /_emulator/config` can change; `emu.config` is the live one."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    batch_seconds: float = Field(default=3600.0, ge=0.0)
    """Turnaround of batches created from now on."""
    batch_parallelism: int = Field(default=DEFAULT_BATCH_PARALLELISM, ge=1)
    """Width of the waves the requests of batches created from now on are processed in:
    requests of one wave run in parallel and read none of each other's cache writes, the
    next wave reads them. 1 processes a batch's requests one after another."""
    faults: FaultConfig = Field(default_factory=FaultConfig)
    outcomes: OutcomeConfig = Field(default_factory=OutcomeConfig)
    openai: OpenAIConfig = Field(default_factory=OpenAIConfig)
    """Statuses and limits of OpenAI batches."""

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a partial update in place: only the fields present in `changes` move.

        `faults`, `outcomes` and `openai` are updated field by field too, so references
        held to `emu.faults` / `emu.outcomes` stay live. Raises `pydantic.ValidationError`.
        """
        # Validate the whole update first so a bad field changes nothing.
        checked = EmulatorConfig.model_validate({**self._as_input(), **changes})
        for name in changes:
            if name in ("batch_seconds", "batch_parallelism"):
                setattr(self, name, getattr(checked, name))
            elif name in ("faults", "outcomes", "openai"):
                target: BaseModel = getattr(self, name)
                source: BaseModel = getattr(checked, name)
                for field in source.model_fields_set:
                    setattr(target, field, getattr(source, field))

    def _as_input(self) -> dict[str, Any]:
        return {"batch_seconds": self.batch_seconds, "batch_parallelism": self.batch_parallelism}
