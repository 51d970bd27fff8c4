"""The OpenAI routes: `/v1/chat/completions`, `/v1/files`, `/v1/batches`, `/_emulator/openai/batches`.

They share the Anthropic routes' middleware (request id, journal) and answer in
OpenAI's forms: `Authorization: Bearer` only, `x-request-id`, OpenAI's error body.
Injected faults come from the same `FaultConfig`, under ``openai.*`` endpoint names.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web

from router.emulator.bodies import parse_json, read_body
from router.emulator.errors import STATUS_BY_ERROR_TYPE, ApiError
from router.emulator.ids import new_id
from router.emulator.keys import BODY_SIZE, DROPPED, ENDPOINT, REQUEST_ID, STATUS
from router.emulator.openai.chat import chat_completion, chunk_events, plan_chat, validate_chat
from router.emulator.openai.errors import OpenAIError, error_response, from_api_error, openai_status
from router.emulator.openai.files import UPLOAD_PURPOSES, check_expires_after

if TYPE_CHECKING:
    from router.emulator.emulator import Emulator

__all__ = ["add_routes"]

MAX_CHAT_BYTES = 32_000_000
MAX_UPLOAD_BYTES = 512 * 1024 * 1024
CONTENT_CHUNK_BYTES = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, request: web.Request, status: int = 200) -> web.Response:
    headers = {"x-request-id": request[REQUEST_ID]}
    return web.Response(
        status=status, text=json.dumps(data), content_type="application/json", headers=headers
    )


class _OpenAIApp:
    """OpenAI route handlers bound to one emulator."""

    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator

    # -- plumbing ---------------------------------------------------------------------------

    def api(self, endpoint: str, handler: Handler) -> Handler:
        """Wrap a route: auth, injected faults, the lazy batch clock check, OpenAI's error body."""

        async def wrapped(request: web.Request) -> web.StreamResponse:
            request[ENDPOINT] = endpoint
            try:
                self._authenticate(request)
                delay, fault = self.emu._injector.decide(self.emu.faults, endpoint)
                if delay > 0:
                    await asyncio.sleep(delay)
                if fault is not None:
                    if fault.drop:
                        if fault.after:
                            self.emu.openai.batch_store.refresh()
                            await handler(request)
                        return self._drop(request)
                    assert fault.error is not None
                    raise fault.error
                self.emu.openai.batch_store.refresh()
                return await handler(request)
            except OpenAIError as exc:
                return error_response(exc, request[REQUEST_ID])
            except ApiError as exc:
                return error_response(from_api_error(exc), request[REQUEST_ID])

        return wrapped

    @staticmethod
    def _drop(request: web.Request) -> web.Response:
        """Close the connection without an answer (the response returned is never sent)."""
        request[DROPPED] = True
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=499)

    def _authenticate(self, request: web.Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else ""
        if not key:
            raise OpenAIError(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        if self.emu.api_key is not None and key != self.emu.api_key:
            shown = key[:3] + "*" * max(0, len(key) - 7) + key[-4:] if len(key) > 7 else "*" * len(key)
            raise OpenAIError(401, f"Incorrect API key provided: {shown}.", code="invalid_api_key")

    @staticmethod
    async def _json_body(request: web.Request, limit: int = MAX_CHAT_BYTES) -> Any:
        data, size = await read_body(request, limit)
        if data is None:
            raise OpenAIError(413, f"Request body is {size:,} bytes; the limit is {limit:,}.")
        return parse_json(data)

    # -- chat completions -------------------------------------------------------------------

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        params = validate_chat(await self._json_body(request))
        plan = plan_chat(params)
        if plan.error_type is not None:
            status = openai_status(STATUS_BY_ERROR_TYPE.get(plan.error_type, 500))
            raise OpenAIError(status, f"Emulated {plan.error_type} (requested by [emulator:error=...])")
        now = self.emu.clock.now()
        cached = self.emu.openai.cache.use(plan.prompt, now)
        completion = chat_completion(plan, new_id("chatcmpl-emu"), now, cached)
        if not params.get("stream"):
            return _json(completion, request)
        include_usage = bool((params.get("stream_options") or {}).get("include_usage"))
        response = web.StreamResponse(
            status=200,
            headers={
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
                "x-request-id": request[REQUEST_ID],
            },
        )
        request[STATUS] = 200
        await response.prepare(request)
        for event in chunk_events(completion, include_usage=include_usage):
            await response.write(event)
        await response.write_eof()
        return response

    # -- files ------------------------------------------------------------------------------

    async def create_file(self, request: web.Request) -> web.StreamResponse:
        _check_upload_type(request.headers.get("Content-Type", ""))
        reader = await request.multipart()
        purpose: str | None = None
        expires_after: dict[str, str] = {}
        filename: str | None = None
        data = bytearray()
        size = 0
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "purpose":
                purpose = (await part.text()).strip()
            elif part.name in ("expires_after[anchor]", "expires_after[seconds]"):
                expires_after[part.name[len("expires_after[") : -1]] = (await part.text()).strip()
            elif part.name == "file":
                filename = part.filename or "file"
                while chunk := await part.read_chunk(CONTENT_CHUNK_BYTES):
                    size += len(chunk)
                    if size <= MAX_UPLOAD_BYTES:
                        data += chunk
            else:
                await part.release()
        request[BODY_SIZE] = request.content_length or size
        if filename is None:
            raise OpenAIError.invalid(
                "Missing required parameter: 'file'.", param="file", code="missing_required_parameter"
            )
        if purpose is None:
            raise OpenAIError.invalid(
                "Missing required parameter: 'purpose'.", param="purpose", code="missing_required_parameter"
            )
        if purpose not in UPLOAD_PURPOSES:
            raise OpenAIError.invalid(
                f"Invalid value: '{purpose}'. Supported values are: "
                + ", ".join(f"'{p}'" for p in UPLOAD_PURPOSES)
                + ".",
                param="purpose",
                code="invalid_value",
            )
        if size > MAX_UPLOAD_BYTES:
            raise OpenAIError(
                413, f"File is {size:,} bytes; the limit is {MAX_UPLOAD_BYTES:,} bytes.", param="file"
            )
        if purpose == "batch" and not filename.endswith(".jsonl"):
            raise OpenAIError.invalid("Invalid file format for Batch API. Must be .jsonl", param="file")
        seconds = check_expires_after(expires_after or None, "expires_after")
        stored = self.emu.openai.file_store.add(filename, purpose, bytes(data), expires_after=seconds)
        return _json(stored.to_api(), request)

    async def list_files(self, request: web.Request) -> web.StreamResponse:
        return _json(self.emu.openai.file_store.page(request.query), request)

    async def retrieve_file(self, request: web.Request) -> web.StreamResponse:
        return _json(self.emu.openai.file_store.get(request.match_info["file_id"]).to_api(), request)

    async def delete_file(self, request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["file_id"]
        self.emu.openai.file_store.delete(file_id)
        return _json({"id": file_id, "object": "file", "deleted": True}, request)

    async def file_content(self, request: web.Request) -> web.StreamResponse:
        """The file's bytes; `results_cut_after` / `results_cut_bytes` faults cut the stream short."""
        data = self.emu.openai.file_store.get(request.match_info["file_id"]).data
        rates = self.emu.faults.rates_for("openai.files.content")
        cut = _cut_point(data, rates.results_cut_after, rates.results_cut_bytes)
        response = web.StreamResponse(
            status=200,
            headers={"content-type": "application/octet-stream", "x-request-id": request[REQUEST_ID]},
        )
        response.enable_chunked_encoding()
        request[STATUS] = 200
        await response.prepare(request)
        end = len(data) if cut is None else cut
        for start in range(0, end, CONTENT_CHUNK_BYTES):
            await response.write(data[start : min(end, start + CONTENT_CHUNK_BYTES)])
        if cut is not None:
            # close() (not abort()) sends what is buffered first; without the closing chunk
            # the client sees a broken stream, not a short file.
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response

    # -- batches ----------------------------------------------------------------------------

    async def create_batch(self, request: web.Request) -> web.StreamResponse:
        batch = self.emu.openai.batch_store.create(await self._json_body(request))
        return _json(batch.to_api(), request)

    async def list_batches(self, request: web.Request) -> web.StreamResponse:
        return _json(self.emu.openai.batch_store.page(request.query), request)

    async def retrieve_batch(self, request: web.Request) -> web.StreamResponse:
        return _json(self.emu.openai.batch_store.get(request.match_info["batch_id"]).to_api(), request)

    async def cancel_batch(self, request: web.Request) -> web.StreamResponse:
        return _json(self.emu.openai.batch_store.cancel(request.match_info["batch_id"]).to_api(), request)

    # -- admin ------------------------------------------------------------------------------

    async def admin_batches(self, request: web.Request) -> web.StreamResponse:
        return web.json_response([batch.to_api() for batch in self.emu.openai.batches.values()])


# The media type of an upload exactly as the SDK's `files.create` writes it (httpx's
# multipart encoder: "multipart/form-data; boundary=<hex>"), the one form known to be taken
# by api.openai.com. Media types are case-insensitive in RFC 9110 (8.3.1), and aiohttp's
# `content_type` folds case, but nothing shows the real server does: a client that relies on
# another spelling ("Multipart/form-data") must fail here, not first in production.
_UPLOAD_MEDIA_TYPE = "multipart/form-data"


def _check_upload_type(header: str) -> None:
    """Refuse, as OpenAI does (415), an upload that is not multipart/form-data with a boundary."""
    media_type, _, parameters = header.partition(";")
    boundary = any(
        name.strip().lower() == "boundary" and value.strip()
        for name, _, value in (part.partition("=") for part in parameters.split(";"))
    )
    if media_type.strip() != _UPLOAD_MEDIA_TYPE or not boundary:
        raise OpenAIError(
            415,
            f"Invalid Content-Type header ({header or 'none'}), expected multipart/form-data. "
            "(HINT: If you're using curl, you can pass -H 'Content-Type: multipart/form-data')",
        )


def _cut_point(data: bytes, after_lines: int | None, after_bytes: int | None) -> int | None:
    """Where a cut content stream stops (None: it is sent whole)."""
    cut: int | None = None
    if after_lines is not None:
        position = 0
        for _ in range(after_lines):
            newline = data.find(b"\n", position)
            if newline < 0:
                break
            position = newline + 1
        else:
            cut = position
    if after_bytes is not None:
        cut = after_bytes if cut is None else min(cut, after_bytes)
    return cut if cut is not None and cut < len(data) else None


def add_routes(app: web.Application, emulator: Emulator) -> None:
    """Register the OpenAI routes of `emulator` on `app`."""
    handlers = _OpenAIApp(emulator)
    api = handlers.api
    routes = app.router
    routes.add_post("/v1/chat/completions", api("openai.chat.completions", handlers.chat_completions))
    routes.add_post("/v1/files", api("openai.files.create", handlers.create_file))
    routes.add_get("/v1/files", api("openai.files.list", handlers.list_files), allow_head=False)
    routes.add_get(
        "/v1/files/{file_id}", api("openai.files.retrieve", handlers.retrieve_file), allow_head=False
    )
    routes.add_delete("/v1/files/{file_id}", api("openai.files.delete", handlers.delete_file))
    routes.add_get(
        "/v1/files/{file_id}/content", api("openai.files.content", handlers.file_content), allow_head=False
    )
    routes.add_post("/v1/batches", api("openai.batches.create", handlers.create_batch))
    routes.add_get("/v1/batches", api("openai.batches.list", handlers.list_batches), allow_head=False)
    routes.add_get(
        "/v1/batches/{batch_id}", api("openai.batches.retrieve", handlers.retrieve_batch), allow_head=False
    )
    routes.add_post("/v1/batches/{batch_id}/cancel", api("openai.batches.cancel", handlers.cancel_batch))
    routes.add_get("/_emulator/openai/batches", handlers.admin_batches, allow_head=False)
