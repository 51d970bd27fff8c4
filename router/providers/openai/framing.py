"""The bytes of an OpenAI batch input file, and the multipart upload that carries it.

The input file is JSONL: one request a line,
``{"custom_id":"r<id>","method":"POST","url":"/v1/chat/completions","body":<params>}``,
every line ended by ``\\n`` (the Files API and the emulator take a final newline; blank
lines are skipped by both). Params are the stored JSON bytes, sent as they are, so a
claim knows the file's length from its params sizes and custom_id lengths
(`JSONL_FORMAT.body_bytes`).

The upload is a ``multipart/form-data`` body whose framing is known before the first
byte: the file part is streamed between a fixed head and tail, so the request has an
exact Content-Length and the file is never held in memory.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from router.providers.base import BatchFormat

__all__ = [
    "CHAT_COMPLETIONS_URL",
    "JSONL_FORMAT",
    "BodyLengthError",
    "MultipartUpload",
    "frame_entry",
    "jsonl_body",
]

CHAT_COMPLETIONS_URL = "/v1/chat/completions"
_ENTRY_HEAD = b'{"custom_id":"'
_ENTRY_MIDDLE = b'","method":"POST","url":"' + CHAT_COMPLETIONS_URL.encode() + b'","body":'
_ENTRY_TAIL = b"}"

JSONL_FORMAT = BatchFormat(
    body_head=b"",
    body_tail=b"\n",
    separator=b"\n",
    entry_overhead=len(_ENTRY_HEAD) + len(_ENTRY_MIDDLE) + len(_ENTRY_TAIL),
    entry_head=_ENTRY_HEAD + b"%s" + _ENTRY_MIDDLE,
    entry_tail=_ENTRY_TAIL,
)


def frame_entry(custom_id: str, params: bytes) -> bytes:
    """One line of the input file, without its newline.

    `custom_id` is written as it is (the router's ``r<digits>`` needs no JSON escape),
    so it adds exactly its characters to the length."""
    return b"".join((_ENTRY_HEAD, custom_id.encode(), _ENTRY_MIDDLE, params, _ENTRY_TAIL))


async def jsonl_body(entries: AsyncIterator[Iterable[tuple[str, bytes]]]) -> AsyncIterator[bytes]:
    """The input file from blocks of (custom_id, params), one chunk a block, framed by
    `JSONL_FORMAT` (head, separators, tail)."""
    yield JSONL_FORMAT.body_head
    first = True
    async for block in entries:
        parts: list[bytes] = []
        for custom_id, params in block:
            if not first:
                parts.append(JSONL_FORMAT.separator)
            first = False
            parts.append(frame_entry(custom_id, params))
        yield b"".join(parts)
    yield JSONL_FORMAT.body_tail


class BodyLengthError(RuntimeError):
    """The streamed input file was not the length announced (the store changed under the flush)."""


@dataclass(frozen=True)
class MultipartUpload:
    """A ``files.create(purpose="batch")`` request body around a streamed file of `length` bytes."""

    filename: str
    length: int
    boundary: str

    @classmethod
    def new(cls, filename: str, length: int) -> MultipartUpload:
        # A random boundary: the file's bytes cannot contain it unless they guess 128 bits.
        return cls(filename=filename, length=length, boundary=f"hybrid-router-{secrets.token_hex(16)}")

    @property
    def head(self) -> bytes:
        return (
            f"--{self.boundary}\r\n"
            'Content-Disposition: form-data; name="purpose"\r\n\r\n'
            "batch\r\n"
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{self.filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()

    @property
    def tail(self) -> bytes:
        return f"\r\n--{self.boundary}--\r\n".encode()

    @property
    def content_length(self) -> int:
        """The exact length of the whole request body."""
        return len(self.head) + self.length + len(self.tail)

    @property
    def content_type(self) -> str:
        """The header as the SDK's own `files.create` sends it (httpx's multipart encoder:
        ``multipart/form-data; boundary=...``), the one spelling known to reach the API."""
        return f"multipart/form-data; boundary={self.boundary}"

    async def stream(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The request body: head, the file as `body` yields it, tail. Raises
        `BodyLengthError` as soon as the file is longer than announced, or at its end
        when shorter, so a wrong length never reaches the API as a whole request."""
        yield self.head
        sent = 0
        async for chunk in body:
            sent += len(chunk)
            if sent > self.length:
                raise BodyLengthError(f"batch input file is over {self.length} bytes, the length announced")
            if chunk:
                yield chunk
        if sent != self.length:
            raise BodyLengthError(f"batch input file was {sent} bytes, announced {self.length}")
        yield self.tail
