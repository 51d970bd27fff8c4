"""`hybrid-router webhooks list | replay ID | test URL`, and the webhook lines of `validate`."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import datetime

import httpx2
from pydantic import ValidationError

from ..config import RouterConfig, WebhookSettings
from ..errors import ConfigError, RouterError
from ..store import OutboxEvent, StoreEngine, events
from .delivery import DELIVERED, FAILED, PENDING, Attempt, Dispatcher, body_of, message_id, send_signed
from .routing import routes


def describe_endpoints(config: RouterConfig) -> list[str]:
    """The `[[webhooks]]` as `validate` shows them: never the secret, only where it comes from."""
    if not config.webhooks:
        return ["webhooks: none"]
    lines = ["webhooks:"]
    for hook in config.webhooks:
        filters = "".join(
            f"; {name} {', '.join(globs)}"
            for name, globs in (("tags", hook.tags), ("keys", hook.keys))
            if globs
        )
        wanted = [e for e in events.EVENT_TYPES if hook.wants(e)]
        lines.append(
            f"  {hook.url}: {', '.join(wanted)}{filters}; signed with ${hook.secret_env};"
            f" timeout {hook.timeout:g}s; retried up to {hook.give_up_after / 3600:g}h"
        )
    return lines


def _when(at: float | None) -> str:
    return "-" if at is None else datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


async def list_deliveries(store: StoreEngine, *, limit: int) -> str:
    """Recent deliveries, newest first, and where each endpoint stands."""
    rows = await store.list_deliveries(limit=limit)
    if not rows:
        return "no webhook deliveries yet"
    lines = [f"{'event':>6}  {'type':<18} {'state':<9} {'tries':>5}  {'last':<24} {'updated':<19}  endpoint"]
    for d in rows:
        last = d.last_error or (f"HTTP {d.last_status}" if d.last_status is not None else "-")
        lines.append(
            f"{d.event.id:>6}  {d.event.type:<18} {d.state:<9} {d.attempts:>5}  {last[:24]:<24}"
            f" {_when(d.updated_at):<19}  {d.endpoint}"
        )
    for f in await store.endpoint_figures():
        mark = "FAILING" if f.retrying else "ok"
        lines.append(
            f"endpoint {f.endpoint}: {mark}; {f.delivered} delivered, {f.pending} pending"
            f" ({f.retrying} retrying), {f.failed} failed"
        )
    return "\n".join(lines)


def _event_id(text: str) -> int:
    """An event's number, from itself or from its webhook-id (evt_<n>_<ms>)."""
    digits = text.removeprefix("evt_").split("_", 1)[0]
    if not digits.isdigit():
        raise RouterError(
            f"webhooks replay: expected an event number or a webhook-id like evt_12_..., got {text!r}"
        )
    return int(digits)


async def replay(store: StoreEngine, config: RouterConfig, text: str) -> tuple[int, list[str]]:
    """Send one stored event again, now, to each configured endpoint that takes it (same
    webhook-id), and record the outcome. Returns (exit code, lines to print)."""
    event_id = _event_id(text)
    event = await store.outbox_event(event_id)
    if event is None:
        raise RouterError(f"webhooks replay: no event {event_id} in {config.store.location}")
    if not config.webhooks:
        raise RouterError("webhooks replay: no [[webhooks]] in the config")
    targets = [url for _, url in routes(config.webhooks, [event])]
    if not targets:
        raise RouterError(f"webhooks replay: no endpoint in the config takes {event.type} event {event_id}")
    await store.route_events([], [(event_id, url) for url in targets], now=time.time())
    by_url = {d.endpoint: d for d in await store.list_deliveries(limit=1000, event_id=event_id)}
    hooks = {h.url: h for h in reversed(config.webhooks)}
    dispatcher = Dispatcher(store, config.webhooks)
    out: list[str] = []
    code = 0
    try:
        for url in targets:
            attempt = await dispatcher.send(hooks[url], message_id(event), body_of(event))
            delivery = by_url.get(url)
            if delivery is not None:
                # A replay that fails leaves a delivery that was still pending to its retries.
                state = DELIVERED if attempt.ok else (PENDING if delivery.state == PENDING else FAILED)
                await store.record_delivery(
                    delivery.id,
                    state=state,
                    next_at=delivery.next_at if state == PENDING else None,
                    status=attempt.status,
                    error=attempt.error,
                    now=time.time(),
                )
            out.append(f"{message_id(event)} -> {url}: {_outcome(attempt)}")
            code = code or (0 if attempt.ok else 1)
    finally:
        await dispatcher.close()
    return code, out


def _outcome(attempt: Attempt) -> str:
    if attempt.ok:
        return f"delivered (HTTP {attempt.status})"
    return f"not delivered: {attempt.error}"


def ping(url: str, secret_env: str | None, config: RouterConfig) -> WebhookSettings:
    """The endpoint to ping: the configured one at `url`, or `url` signed with `secret_env`."""
    for hook in config.webhooks:
        if hook.url == url and secret_env is None:
            return hook
    if secret_env is None:
        raise RouterError(
            f"webhooks test: {url} is not a [[webhooks]] url in the config;"
            " give --secret-env VAR to sign with"
        )
    try:
        return WebhookSettings.model_validate({"url": url, "secret_env": secret_env})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"]) or "url"
        message = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"webhooks test: {where}: {message}") from None


async def test_endpoint(hook: WebhookSettings) -> tuple[int, str]:
    """Send a signed `webhook.ping` to `hook`; (exit code, line to print)."""
    now = time.time()
    event = OutboxEvent(0, events.PING, now, None, events.to_json({"message": "hybrid-router webhook test"}))
    msg_id = f"ping_{uuid.uuid4().hex}"
    async with httpx2.AsyncClient(trust_env=False) as client:
        attempt = await send_signed(client, hook, msg_id, body_of(event))
    return (0 if attempt.ok else 1), f"{msg_id} -> {hook.url}: {_outcome(attempt)}"


__all__: Sequence[str] = ("describe_endpoints", "list_deliveries", "ping", "replay", "test_endpoint")
