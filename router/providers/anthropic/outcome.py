"""A stored Message payload back to the SDK's `Message`, fast."""

from __future__ import annotations

import functools
import typing
from typing import Any

import pydantic
from anthropic.types import ContentBlock, Message


def message_from(data: Any) -> Message:
    """`Message.model_validate(data)`, in about half the time.

    The SDK's content block union is not a discriminated one to pydantic, which tries each of
    its dozen members on every block (about half of a Message's validation). The blocks are
    validated here by their `type` first; the Message validator then takes each block
    instance as it is. Anything the fast path refuses (a block type this SDK does not know,
    a malformed message) goes the SDK's own way, with its own result or error.
    tests/test_outcomes.py holds the two equal, block classes and set fields included.
    """
    blocks = _content_blocks()
    content = data.get("content") if isinstance(data, dict) else None
    if blocks is not None and isinstance(content, list):
        try:
            return Message.model_validate({**data, "content": blocks.validate_python(content)})
        except pydantic.ValidationError:
            pass  # the SDK's way below raises the SDK's own error, naming the input as given
    return Message.model_validate(data)


@functools.cache
def _content_blocks() -> pydantic.TypeAdapter[list[Any]] | None:
    """The SDK's content block types as a union discriminated by `type` (None if this SDK
    spells ContentBlock in a way we do not know: the fast path is then off)."""
    union = typing.get_args(ContentBlock)[0] if typing.get_origin(ContentBlock) is typing.Annotated else None
    members = typing.get_args(union)
    if not members or not all(isinstance(m, type) and issubclass(m, pydantic.BaseModel) for m in members):
        return None
    discriminated: Any = typing.Annotated[typing.Union[members], pydantic.Field(discriminator="type")]  # noqa: UP007
    try:
        return pydantic.TypeAdapter(list[discriminated])
    except pydantic.PydanticUserError:  # a member without a literal `type`
        return None
