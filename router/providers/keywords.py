"""The keywords each provider SDK's `create` takes, and the TypeError for any other.

A keyword the SDK does not take is a mistake in the calling code, so the drop-ins raise the
TypeError the SDK itself raises, word for word (its method's qualified name, as Python
words it). `messages.create` adds a hint to a keyword that looks like a typo of one of its
own, but none to a keyword of the `openai` SDK, which reads exactly as `anthropic` words
it; `chat.completions.create` adds none at all, so every keyword an Anthropic caller
carries over (`system`, `top_k`, the legacy `max_tokens_to_sample`) reads exactly as
`openai` words it.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from anthropic.resources.messages.messages import AsyncMessages

__all__ = [
    "ANTHROPIC_CREATE",
    "SdkMethod",
    "check_sdk_keywords",
    "openai_create",
]


class SdkMethod:
    """One SDK method's name as Python reports it and the keywords it takes."""

    def __init__(self, method: Callable[..., Any]) -> None:
        self.qualname: str = method.__qualname__
        self.keywords: frozenset[str] = frozenset(
            name for name in inspect.signature(method).parameters if name != "self"
        )


ANTHROPIC_CREATE = SdkMethod(AsyncMessages.create)  # "AsyncMessages.create"


@functools.cache
def openai_create() -> SdkMethod:
    """`chat.completions.create` of the `openai` SDK ("AsyncCompletions.create"); imported on
    first use, so that a Router that only talks to Anthropic never loads the SDK."""
    from openai.resources.chat.completions import AsyncCompletions

    return SdkMethod(AsyncCompletions.create)


def check_sdk_keywords(
    kwargs: Mapping[str, Any],
    *,
    method: str,
    known: Iterable[str],
    foreign: Callable[[], frozenset[str]] = frozenset,
    hints: bool = True,
) -> None:
    """Raise ``TypeError("<method>() got an unexpected keyword argument '<name>'")`` for the
    first keyword not in `known`; with `hints`, a typo of a known one (not one of the
    `foreign()` SDK's keywords, computed only then) gets ``; did you mean '<known>'?`` after it."""
    allowed = frozenset(known)
    for name in kwargs:
        if name in allowed:
            continue
        message = f"{method}() got an unexpected keyword argument {name!r}"
        if hints and name not in foreign():
            close = difflib.get_close_matches(name, sorted(allowed), n=1)
            if close:
                message += f"; did you mean {close[0]!r}?"
        raise TypeError(message)
