"""Files: what was uploaded (`purpose="batch"` input files) and what batches wrote (their output)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router.emulator.clock import Clock
from router.emulator.ids import new_id
from router.emulator.openai.errors import OpenAIError

__all__ = [
    "BATCH_FILE_LIFETIME_SECONDS",
    "FILE_PURPOSES",
    "UPLOAD_PURPOSES",
    "FileStore",
    "StoredFile",
    "check_expires_after",
    "int_param",
]

FILE_PURPOSES = (
    "assistants",
    "assistants_output",
    "batch",
    "batch_output",
    "fine-tune",
    "fine-tune-results",
    "vision",
    "user_data",
)
# The other purposes name files the API writes itself.
UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data")
FILE_LIST_MAX = 10_000
# Batch input and output files expire 30 days after creation unless told otherwise.
BATCH_FILE_LIFETIME_SECONDS = 30 * 24 * 3600.0
_EXPIRING_PURPOSES = frozenset({"batch", "batch_output"})


class StoredFile:
    """One file as the emulator holds it; read them through `emu.openai.files`."""

    def __init__(
        self,
        *,
        file_id: str,
        seq: int,
        filename: str,
        purpose: str,
        data: bytes,
        created_at: float,
        expires_at: float | None,
    ) -> None:
        self.id = file_id
        self.seq = seq
        self.filename = filename
        self.purpose = purpose
        self.data = data
        self.created_at = created_at
        self.expires_at = expires_at
        """When the file is deleted by itself (None: never)."""

    def to_api(self) -> dict[str, Any]:
        """The `FileObject` the API returns."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": int(self.created_at),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None if self.expires_at is None else int(self.expires_at),
            "status_details": None,
        }

    def __repr__(self) -> str:
        return f"StoredFile(id={self.id!r}, purpose={self.purpose!r}, bytes={len(self.data)})"


class FileStore:
    """Every file of one emulator."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._seq = 0
        self._files: dict[str, StoredFile] = {}

    @property
    def files(self) -> Mapping[str, StoredFile]:
        """Files by id, oldest first (deleted and expired ones are gone)."""
        self._expire()
        return self._files

    def add(
        self, filename: str, purpose: str, data: bytes, *, expires_after: float | None = None
    ) -> StoredFile:
        """Store a file (an upload, or a batch's output) that expires `expires_after` seconds from now.

        With no `expires_after`, batch files expire after 30 days and other files never.
        """
        self._seq += 1
        now = self._clock.now()
        if expires_after is None and purpose in _EXPIRING_PURPOSES:
            expires_after = BATCH_FILE_LIFETIME_SECONDS
        stored = StoredFile(
            file_id=new_id("file-emu"),
            seq=self._seq,
            filename=filename,
            purpose=purpose,
            data=data,
            created_at=now,
            expires_at=None if expires_after is None else now + expires_after,
        )
        self._files[stored.id] = stored
        return stored

    def get(self, file_id: str) -> StoredFile:
        """The file, or OpenAI's 404."""
        self._expire()
        stored = self._files.get(file_id)
        if stored is None:
            raise OpenAIError.not_found(f"No such File object: {file_id}", param="id")
        return stored

    def delete(self, file_id: str) -> None:
        self.get(file_id)
        del self._files[file_id]

    def page(self, query: Mapping[str, str]) -> dict[str, Any]:
        """The body of `GET /v1/files` (`purpose`, `limit`, `order`, `after`)."""
        limit = int_param(query, "limit", 1, FILE_LIST_MAX, FILE_LIST_MAX)
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise OpenAIError.invalid(
                f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'.",
                param="order",
                code="invalid_value",
            )
        listed = sorted(self.files.values(), key=lambda f: f.seq, reverse=order == "desc")
        purpose = query.get("purpose")
        if purpose:
            listed = [f for f in listed if f.purpose == purpose]
        after = query.get("after")
        if after:
            position = next((i for i, f in enumerate(listed) if f.id == after), None)
            if position is None:
                raise OpenAIError.invalid(f"Invalid 'after': no file with id '{after}'.", param="after")
            listed = listed[position + 1 :]
        page = listed[:limit]
        return {
            "object": "list",
            "data": [f.to_api() for f in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(listed) > limit,
        }

    def _expire(self) -> None:
        now = self._clock.now()
        for file_id in [
            f.id for f in self._files.values() if f.expires_at is not None and f.expires_at <= now
        ]:
            del self._files[file_id]


def check_expires_after(value: object, param: str) -> float | None:
    """Seconds of an `expires_after` / `output_expires_after` object (anchor `created_at`)."""
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("anchor") != "created_at":
        raise OpenAIError.invalid(
            f'Invalid \'{param}\': expected {{"anchor": "created_at", "seconds": N}}.', param=param
        )
    seconds = value.get("seconds")
    if isinstance(seconds, str) and seconds.isdigit():  # a multipart form sends it as text
        seconds = int(seconds)
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 3600 <= seconds <= 2_592_000:
        raise OpenAIError.invalid(
            f"Invalid '{param}.seconds': expected an integer from 3600 to 2592000, got {seconds!r}.",
            param=f"{param}.seconds",
        )
    return float(seconds)


def int_param(query: Mapping[str, str], name: str, low: int, high: int, default: int) -> int:
    """A list endpoint's integer query parameter, refused as OpenAI refuses it."""
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise OpenAIError.invalid(
            f"Invalid type for '{name}': expected an integer, but got '{raw}' instead.",
            param=name,
            code="invalid_type",
        ) from None
    if not low <= value <= high:
        raise OpenAIError.invalid(
            f"Invalid '{name}': expected a value between {low} and {high}, but got {value} instead.",
            param=name,
            code="invalid_value",
        )
    return value
