"""The aiohttp application: API routes, admin routes, auth, versions, faults and the journal."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pydantic
from aiohttp import web

from router.emulator.bodies import parse_batch_body, parse_json, read_body
from router.emulator.errors import ApiError, error_response, page_limit
from router.emulator.ids import new_id
from router.emulator.journal import JournalEntry
from router.emulator.keys import BATCH_SENT, BODY_SIZE, DROPPED, ENDPOINT, REQUEST_ID, STATUS
from router.emulator.models import CATALOGUE
from router.emulator.openai import routes as openai_routes
from router.emulator.replies import message_body, plan_reply, profile_input, sse_events
from router.emulator.validation import validate_count_tokens, validate_create
from router.logs import get_logger

if TYPE_CHECKING:
    from router.emulator.emulator import Emulator

__all__ = ["API_VERSIONS", "build_app"]

API_VERSIONS = ("2023-06-01", "2026-10-21")
ADMIN_PREFIX = "/_emulator/"
MAX_MESSAGE_BYTES = 32_000_000
# Parsing a big batch body takes a while; off the event loop it does not stall other clients.
THREAD_PARSE_BYTES = 1_000_000
RESULTS_CHUNK_BYTES = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_log = get_logger(__name__)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data), content_type="application/json")


def _drop(request: web.Request) -> web.Response:
    """Close the connection without an answer (the response returned is never sent)."""
    request[DROPPED] = True
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=499)


class _App:
    """Route handlers bound to one emulator's state."""

    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator

    # -- plumbing ---------------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = new_id("req_emu_")
        request[REQUEST_ID] = request_id
        received_at = self.emu.clock.now()
        status = 500
        try:
            try:
                response = await handler(request)
            except ApiError as exc:
                response = error_response(exc, request_id)
            except web.HTTPException as exc:
                kind = "not_found_error" if exc.status == 404 else "invalid_request_error"
                message = f"{exc.reason}: {request.method} {request.path}"
                response = error_response(ApiError(kind, message, status=exc.status), request_id)
            except (asyncio.CancelledError, ConnectionError):
                raise
            except Exception as exc:
                _log.exception("emulator_handler_failed", path=request.path, request_id=request_id)
                response = error_response(
                    ApiError("api_error", f"Internal emulator error: {exc!r}"), request_id
                )
            status = response.status
            return response
        finally:
            if not request.path.startswith(ADMIN_PREFIX):
                self.emu.journal.append(
                    JournalEntry(
                        method=request.method,
                        path=request.path,
                        headers={k.lower(): v for k, v in request.headers.items()},
                        body_size=request.get(BODY_SIZE, request.content_length or 0),
                        status=0 if request.get(DROPPED) else request.get(STATUS, status),
                        at=received_at,
                        query=request.query_string,
                        endpoint=request.get(ENDPOINT),
                        **_sent(request),
                    )
                )

    @staticmethod
    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        # Every response, streamed ones included, carries the request id.
        request_id = request.get(REQUEST_ID)
        if "request-id" not in response.headers and request_id is not None:
            response.headers["request-id"] = request_id

    def api(self, endpoint: str, handler: Handler) -> Handler:
        """Wrap an API route: auth, version, injected faults, then the lazy batch clock check."""

        async def wrapped(request: web.Request) -> web.StreamResponse:
            request[ENDPOINT] = endpoint
            self._authenticate(request)
            self._check_version(request)
            delay, fault = self.emu._injector.decide(self.emu.faults, endpoint)
            if delay > 0:
                await asyncio.sleep(delay)
            if fault is not None:
                if fault.drop and fault.after:
                    self.emu._store.refresh()
                    await handler(request)
                    return _drop(request)
                if fault.drop:
                    return _drop(request)
                assert fault.error is not None
                raise fault.error
            self.emu._store.refresh()
            return await handler(request)

        return wrapped

    def _authenticate(self, request: web.Request) -> None:
        key = request.headers.get("x-api-key", "").strip()
        if not key:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() == "bearer":
                key = token.strip()
        if not key:
            raise ApiError(
                "authentication_error", "x-api-key header is required (or Authorization: Bearer <key>)"
            )
        if self.emu.api_key is not None and key != self.emu.api_key:
            raise ApiError("authentication_error", "invalid x-api-key")

    @staticmethod
    def _check_version(request: web.Request) -> None:
        version = request.headers.get("anthropic-version")
        if version is None:
            raise ApiError.invalid("anthropic-version: header is required")
        if version not in API_VERSIONS:
            raise ApiError.invalid(
                f"anthropic-version: {version!r} is not a valid version; "
                f"expected one of {', '.join(API_VERSIONS)}"
            )

    async def _json_body(self, request: web.Request, limit: int = MAX_MESSAGE_BYTES) -> Any:
        data, size = await read_body(request, limit)
        if data is None:
            raise ApiError(
                "request_too_large", f"Request body is {size:,} bytes; the limit is {limit:,}", status=413
            )
        return parse_json(data)

    def _base_url(self, request: web.Request) -> str:
        # Links point where the client reached us (same as emu.url unless bound to a wildcard address).
        return f"{request.scheme}://{request.host}" if request.host else self.emu.url

    # -- messages ---------------------------------------------------------------------------

    async def create_message(self, request: web.Request) -> web.StreamResponse:
        params = validate_create(await self._json_body(request))
        plan = plan_reply(params)
        if plan.error_type is not None:
            raise ApiError(plan.error_type, f"Emulated {plan.error_type} (requested by [emulator:error=...])")
        usage = self.emu.cache.use(plan.input, self.emu.clock.now())
        message = message_body(plan, new_id("msg_emu_"), usage, service_tier="standard")
        if not params.get("stream"):
            return _json(message)
        response = web.StreamResponse(
            status=200,
            headers={"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"},
        )
        request[STATUS] = 200
        await response.prepare(request)
        for event in sse_events(message):
            await response.write(event)
        await response.write_eof()
        return response

    async def count_tokens(self, request: web.Request) -> web.StreamResponse:
        params = validate_count_tokens(await self._json_body(request))
        return _json({"input_tokens": profile_input(params).tokens})

    # -- models -----------------------------------------------------------------------------

    async def list_models(self, request: web.Request) -> web.StreamResponse:
        # The SDK sends lists as `lifecycle[]=a&lifecycle[]=b`.
        lifecycles = request.query.getall("lifecycle[]", []) + request.query.getall("lifecycle", [])
        return _json(CATALOGUE.page(request.query, lifecycles))

    async def retrieve_model(self, request: web.Request) -> web.StreamResponse:
        return _json(CATALOGUE.retrieve(request.match_info["model_id"]))

    # -- batches ----------------------------------------------------------------------------

    async def create_batch(self, request: web.Request) -> web.StreamResponse:
        limit = self.emu.max_batch_bytes
        data, size = await read_body(request, limit)
        if data is None:
            raise ApiError(
                "request_too_large",
                f"Message batch request body is {size:,} bytes; the limit is {limit:,} bytes",
                status=413,
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ApiError.invalid(f"The request body is not valid UTF-8: {exc}") from exc
        del data
        max_requests = self.emu.max_batch_requests
        if size >= THREAD_PARSE_BYTES:
            requests = await asyncio.to_thread(parse_batch_body, text, max_requests=max_requests)
        else:
            requests = parse_batch_body(text, max_requests=max_requests)
        del text
        batch = self.emu._store.create(requests)
        if self.emu.journal_batches:
            sent = tuple((cid, plan.input.marks) for cid, plan in requests)
            request[BATCH_SENT] = (batch.id, sent)
        return _json(batch.to_api(self._base_url(request)))

    async def retrieve_batch(self, request: web.Request) -> web.StreamResponse:
        batch = self.emu._store.get(request.match_info["batch_id"])
        return _json(batch.to_api(self._base_url(request)))

    async def list_batches(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        limit = page_limit(query)
        after_id, before_id = query.get("after_id"), query.get("before_id")
        if after_id and before_id:
            raise ApiError.invalid("after_id: cannot be combined with before_id")
        page, has_more = self.emu._store.page(
            limit=limit, after_id=after_id or None, before_id=before_id or None
        )
        base = self._base_url(request)
        return _json(
            {
                "data": [batch.to_api(base) for batch in page],
                "has_more": has_more,
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
            }
        )

    async def cancel_batch(self, request: web.Request) -> web.StreamResponse:
        batch = self.emu._store.cancel(request.match_info["batch_id"])
        return _json(batch.to_api(self._base_url(request)))

    async def delete_batch(self, request: web.Request) -> web.StreamResponse:
        batch_id = request.match_info["batch_id"]
        self.emu._store.delete(batch_id)
        return _json({"id": batch_id, "type": "message_batch_deleted"})

    async def batch_results(self, request: web.Request) -> web.StreamResponse:
        batch_id = request.match_info["batch_id"]
        batch = self.emu._store.get(batch_id)
        if not batch.ended:
            raise ApiError.invalid(
                f"Message batch '{batch_id}' is {batch.processing_status}; "
                "its results are available once it has ended"
            )
        if batch.archived_at is not None:
            raise ApiError.not_found(f"The results of message batch '{batch_id}' are no longer available")
        rates = self.emu.faults.rates_for("batches.results")
        cut_after, cut_bytes = rates.results_cut_after, rates.results_cut_bytes
        response = web.StreamResponse(status=200, headers={"content-type": "application/binary"})
        response.enable_chunked_encoding()
        request[STATUS] = 200
        await response.prepare(request)
        chunk = bytearray()
        written = 0
        for sent, line in enumerate(batch.result_lines()):
            if cut_bytes is not None and written + len(chunk) + len(line) > cut_bytes:
                chunk += line[: cut_bytes - written - len(chunk)]
                cut_after = sent
            if cut_after is not None and sent >= cut_after:
                if chunk:
                    await response.write(bytes(chunk))
                # close() (not abort()) sends what is buffered first; without the closing chunk
                # the client sees a broken stream, not a short file.
                if request.transport is not None:
                    request.transport.close()
                return response
            chunk += line
            if len(chunk) >= RESULTS_CHUNK_BYTES:
                await response.write(bytes(chunk))
                written += len(chunk)
                chunk.clear()
        if chunk:
            await response.write(bytes(chunk))
        await response.write_eof()
        return response

    # -- admin ------------------------------------------------------------------------------

    async def admin_health(self, request: web.Request) -> web.StreamResponse:
        return _json({"ok": True})

    async def admin_advance(self, request: web.Request) -> web.StreamResponse:
        body = await self._json_body(request) if request.can_read_body else {}
        seconds = body.get("seconds") if isinstance(body, dict) else None
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise ApiError.invalid("seconds: Input should be a non-negative number")
        if not self.emu.clock.manual:
            raise ApiError.invalid("the emulator runs on a real-time clock, which cannot be advanced")
        now = self.emu.clock.advance(float(seconds))
        self.emu._store.refresh()
        return _json({"now": now})

    async def admin_end_batches(self, request: web.Request) -> web.StreamResponse:
        return _json({"ended": self.emu.end_batches()})

    async def admin_journal(self, request: web.Request) -> web.StreamResponse:
        return _json([entry.to_json() for entry in self.emu.journal])

    async def admin_clear_journal(self, request: web.Request) -> web.StreamResponse:
        cleared = len(self.emu.journal)
        self.emu.journal.clear()
        return _json({"cleared": cleared})

    async def admin_batches(self, request: web.Request) -> web.StreamResponse:
        base = self._base_url(request)
        return _json([batch.to_api(base) for batch in self.emu.batches.values()])

    async def admin_get_config(self, request: web.Request) -> web.StreamResponse:
        return _json(self.emu.config.model_dump(mode="json"))

    async def admin_set_config(self, request: web.Request) -> web.StreamResponse:
        body = await self._json_body(request)
        if not isinstance(body, dict):
            raise ApiError.invalid("body: Input should be a valid dictionary")
        try:
            self.emu.config.update(body)
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
            )
            raise ApiError.invalid(problems) from None
        return _json(self.emu.config.model_dump(mode="json"))


def build_app(emulator: Emulator) -> web.Application:
    """The aiohttp application serving `emulator`."""
    handlers = _App(emulator)
    # Bodies are read by our own size-checking reader; this only lifts aiohttp's own cap.
    app = web.Application(
        middlewares=[handlers.middleware], client_max_size=emulator.max_batch_bytes + (1 << 20)
    )
    app.on_response_prepare.append(handlers.on_prepare)
    api = handlers.api
    routes = app.router
    routes.add_post("/v1/messages", api("messages", handlers.create_message))
    routes.add_post("/v1/messages/count_tokens", api("count_tokens", handlers.count_tokens))
    routes.add_post("/v1/messages/batches", api("batches.create", handlers.create_batch))
    routes.add_get("/v1/messages/batches", api("batches.list", handlers.list_batches), allow_head=False)
    routes.add_get(
        "/v1/messages/batches/{batch_id}", api("batches.retrieve", handlers.retrieve_batch), allow_head=False
    )
    routes.add_post("/v1/messages/batches/{batch_id}/cancel", api("batches.cancel", handlers.cancel_batch))
    routes.add_delete("/v1/messages/batches/{batch_id}", api("batches.delete", handlers.delete_batch))
    routes.add_get(
        "/v1/messages/batches/{batch_id}/results",
        api("batches.results", handlers.batch_results),
        allow_head=False,
    )
    routes.add_get("/v1/models", api("models.list", handlers.list_models), allow_head=False)
    routes.add_get("/v1/models/{model_id}", api("models.retrieve", handlers.retrieve_model), allow_head=False)
    routes.add_get("/_emulator/health", handlers.admin_health, allow_head=False)
    routes.add_post("/_emulator/clock/advance", handlers.admin_advance)
    routes.add_post("/_emulator/batches/end", handlers.admin_end_batches)
    routes.add_get("/_emulator/batches", handlers.admin_batches, allow_head=False)
    routes.add_get("/_emulator/journal", handlers.admin_journal, allow_head=False)
    routes.add_delete("/_emulator/journal", handlers.admin_clear_journal)
    routes.add_get("/_emulator/config", handlers.admin_get_config, allow_head=False)
    routes.add_post("/_emulator/config", handlers.admin_set_config)
    openai_routes.add_routes(app, emulator)
    return app


def _sent(request: web.Request) -> dict[str, Any]:
    """The journal fields of an accepted batches.create recorded with `journal_batches`."""
    sent = request.get(BATCH_SENT)
    return {} if sent is None else {"batch_id": sent[0], "batch_requests": sent[1]}
