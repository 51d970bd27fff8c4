"""OpenAI's error body, ``{"error": {"message", "type", "param", "code"}}``, and its statuses."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from router.emulator.errors import ApiError

__all__ = ["OpenAIError", "error_object", "error_response", "from_api_error", "openai_status"]

# Anthropic's 529 has no OpenAI counterpart; OpenAI says "overloaded" with a 503.
_STATUS_FROM_ANTHROPIC = {529: 503}


class OpenAIError(Exception):
    """An error the OpenAI routes answer with (the SDK picks its exception class by `status`)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or _type_for(status)
        self.param = param
        self.code = code if code is not None or status != 429 else "rate_limit_exceeded"
        self.headers: dict[str, str] = dict(headers or {})

    @classmethod
    def invalid(cls, message: str, *, param: str | None = None, code: str | None = None) -> OpenAIError:
        """A 400 `invalid_request_error`."""
        return cls(400, message, param=param, code=code)

    @classmethod
    def not_found(cls, message: str, *, param: str | None = None) -> OpenAIError:
        """A 404, which OpenAI also types `invalid_request_error`."""
        return cls(404, message, param=param)


def _type_for(status: int) -> str:
    if status == 429:
        return "requests"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def openai_status(status: int) -> int:
    """The status OpenAI answers with where Anthropic's API answers `status`."""
    return _STATUS_FROM_ANTHROPIC.get(status, status)


def from_api_error(error: ApiError) -> OpenAIError:
    """The OpenAI form of an error raised by the shared parts (fault injection, directives)."""
    status = openai_status(error.status)
    code = "invalid_api_key" if status == 401 else None
    return OpenAIError(status, error.message, code=code, headers=error.headers)


def error_object(error: OpenAIError) -> dict[str, Any]:
    """The body OpenAI sends with an error status."""
    return {
        "error": {
            "message": error.message,
            "type": error.error_type,
            "param": error.param,
            "code": error.code,
        }
    }


def error_response(error: OpenAIError, request_id: str) -> web.Response:
    """Render `error` as OpenAI's JSON response, with its `x-request-id`."""
    headers = {**error.headers, "x-request-id": request_id}
    return web.Response(
        status=error.status,
        text=json.dumps(error_object(error)),
        content_type="application/json",
        headers=headers,
    )
