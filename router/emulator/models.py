"""The emulator's model catalogue, served at `GET /v1/models` and `GET /v1/models/{id}`.

The catalogue is the models the installed SDK names in `ModelParam`, in the SDK's order
(newest first, as the API lists them), so it follows the SDK without a list of its own.
An id with a snapshot date (`claude-haiku-4-5-20251001`) is a model and its undated
form (`claude-haiku-4-5`) an alias that retrieve() resolves to it, as the API does. The
release date is the snapshot date where the id has one, else the epoch (the API's own
convention for an unknown date); limits the SDK does not know are null.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, get_args

from anthropic.types.model_line import ModelLine
from anthropic.types.model_param import ModelParam

from router.emulator.errors import ApiError, page_limit

__all__ = ["CATALOGUE", "LIFECYCLES", "ModelCatalogue"]

LIFECYCLES = ("active", "deprecated", "retired")
# Listed when the request names no lifecycle, as the API does.
_DEFAULT_LIFECYCLES = frozenset({"active", "deprecated"})
_SNAPSHOT = re.compile(r"^(?P<base>.+)-(?P<date>\d{8})$")
_LINES = frozenset(get_args(ModelLine))


@dataclass(frozen=True)
class _Model:
    id: str
    display_name: str
    created_at: str
    line: str | None
    lifecycle: str = "active"

    def to_api(self) -> dict[str, Any]:
        return {
            "type": "model",
            "id": self.id,
            "display_name": self.display_name,
            "created_at": self.created_at,
            "lifecycle": self.lifecycle,
            "line": self.line,
            "deprecated_at": None,
            "retires_at": None,
            "max_input_tokens": None,
            "max_tokens": None,
        }


def _display_name(base: str) -> str:
    # "claude-opus-4-5" -> "Claude Opus 4.5"; "claude-mythos-preview" -> "Claude Mythos Preview".
    words = base.split("-")
    version = [w for w in words if w.isdigit()]
    names = [w.capitalize() for w in words if not w.isdigit()]
    return " ".join(names + ([".".join(version)] if version else []))


def _model(model_id: str) -> _Model:
    snapshot = _SNAPSHOT.match(model_id)
    base = snapshot["base"] if snapshot else model_id
    if snapshot:
        released = datetime.strptime(snapshot["date"], "%Y%m%d").replace(tzinfo=UTC)
    else:
        released = datetime.fromtimestamp(0, UTC)
    family = base.split("-")[1] if base.count("-") >= 1 else None
    return _Model(
        id=model_id,
        display_name=_display_name(base),
        created_at=released.isoformat().replace("+00:00", "Z"),
        line=family if family in _LINES else None,
    )


class ModelCatalogue:
    """Models and aliases, with the API's listing (newest first, cursors, lifecycle filter)."""

    def __init__(self, ids: Sequence[str]) -> None:
        dated = {m["base"]: model_id for model_id in ids if (m := _SNAPSHOT.match(model_id))}
        self._aliases: dict[str, str] = dict(dated)
        self._models: list[_Model] = [
            _model(model_id)
            for model_id in ids
            if model_id not in dated  # an alias is not listed
        ]
        self._by_id = {m.id: m for m in self._models}

    def retrieve(self, model_id: str) -> dict[str, Any]:
        model = self._by_id.get(self._aliases.get(model_id, model_id))
        if model is None:
            raise ApiError.not_found(f"model: {model_id}")
        return model.to_api()

    def page(self, query: Mapping[str, str], lifecycles: Sequence[str]) -> dict[str, Any]:
        """The body of `GET /v1/models` for a request's query (`lifecycle[]` values apart)."""
        limit = page_limit(query)
        unknown = [value for value in lifecycles if value not in LIFECYCLES]
        if unknown:
            raise ApiError.invalid(
                f"lifecycle: Input should be 'active', 'deprecated' or 'retired', got {unknown[0]!r}"
            )
        if len(lifecycles) > len(LIFECYCLES):
            raise ApiError.invalid(f"lifecycle: at most {len(LIFECYCLES)} values, got {len(lifecycles)}")
        wanted = frozenset(lifecycles) or _DEFAULT_LIFECYCLES
        listed = [m for m in self._models if m.lifecycle in wanted]
        after_id, before_id = query.get("after_id"), query.get("before_id")
        if after_id and before_id:
            raise ApiError.invalid("after_id: cannot be combined with before_id")
        if after_id:
            rest = listed[self._position(listed, "after_id", after_id) + 1 :]
            page, has_more = rest[:limit], len(rest) > limit
        elif before_id:
            rest = listed[: self._position(listed, "before_id", before_id)]
            page, has_more = rest[-limit:], len(rest) > limit
        else:
            page, has_more = listed[:limit], len(listed) > limit
        return {
            "data": [m.to_api() for m in page],
            "has_more": has_more,
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
        }

    @staticmethod
    def _position(listed: Sequence[_Model], name: str, model_id: str) -> int:
        for index, model in enumerate(listed):
            if model.id == model_id:
                return index
        raise ApiError.invalid(f"{name}: no model with id '{model_id}'")


def _sdk_model_ids() -> list[str]:
    # ModelParam is Union[Literal[...], str]: the literal's arguments are the names.
    names: list[str] = []
    for part in get_args(ModelParam):
        names.extend(arg for arg in get_args(part) if isinstance(arg, str))
    return names


CATALOGUE = ModelCatalogue(_sdk_model_ids())
