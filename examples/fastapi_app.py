"""A FastAPI service on one Router: real-time answers, a nightly job deferred to batches, results by key.

    pip install hybrid-router fastapi uvicorn
    export ANTHROPIC_API_KEY=sk-ant-...  HYBRID_ROUTER_CONFIG=router.toml
    uvicorn examples.fastapi_app:app

- `POST /ask {"question": ...}` answers in real time (the user is waiting).
- `POST /nightly {"items": [{"key": ..., "text": ...}]}` stores each item as a deferred
  request at the batch price and answers 202 with the keys at once; the same key twice is
  stored once.
- `GET /results/{key}` answers 202 with the state while the request waits, 200 with the
  reply text once its batch has ended, 200 with the error if it failed, 404 for an unknown key.

The Router is opened once, in the app's lifespan, and shared by every request. With
`[router] flusher = "inline"` (the default) this process also flushes and polls; with
`flusher = "daemon"` it only stores and reads, and `hybrid-router daemon` does the rest,
which suits several workers on one database. Results are read from the store, so any
worker, or a restart, finds them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
from anthropic.types import Message
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from router import Router, RouterError, UnknownKeyError

MODEL = "claude-haiku-4-5"
NIGHTLY_CLASS = "daily"  # a batch class of the config: half price, an answer within its deadline


class Question(BaseModel):
    question: str = Field(min_length=1)


class Item(BaseModel):
    key: str = Field(min_length=1, max_length=512)
    text: str = Field(min_length=1)


class NightlyJob(BaseModel):
    items: list[Item] = Field(min_length=1)


def _router(request: Request) -> Router:
    client: Router = request.app.state.router
    return client


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # One Router for the whole process: its store connection, scheduler and SDK client are shared.
    async with Router.from_config(os.environ.get("HYBRID_ROUTER_CONFIG", "router.toml")) as client:
        app.state.router = client
        yield


app = FastAPI(title="hybrid-router example", lifespan=lifespan)


@app.post("/ask")
async def ask(body: Question, request: Request) -> dict[str, Any]:
    """A user is waiting: real time, exactly as the SDK would answer."""
    try:
        message = await _router(request).messages.create(
            model=MODEL,
            max_tokens=256,
            messages=[{"role": "user", "content": body.question}],
            latency="realtime",
        )
    except anthropic.APIStatusError as exc:
        raise HTTPException(status_code=502, detail={"type": exc.type, "message": exc.message}) from None
    return {"answer": _text(message), "model": message.model, "usage": message.usage.model_dump()}


@app.post("/nightly", status_code=202)
async def nightly(body: NightlyJob, request: Request) -> dict[str, Any]:
    """The nightly job: store every item durably for a batch and hand back the keys."""
    client = _router(request)
    tickets = [
        await client.messages.submit(
            model=MODEL,
            max_tokens=64,
            messages=[{"role": "user", "content": f"Label this support ticket: {item.text}"}],
            latency=NIGHTLY_CLASS,
            tag="nightly-label",
            key=item.key,
        )
        for item in body.items
    ]
    return {"keys": [t.key for t in tickets], "stored": sum(t.created for t in tickets)}


@app.get("/results/{key}", response_model=None)
async def result(key: str, request: Request) -> dict[str, Any] | JSONResponse:
    """The outcome of a nightly item: 202 while it waits, then its reply or its error."""
    client = _router(request)
    try:
        message = await client.results.get(key)  # None while in flight; raises the request's error
        if message is None:
            row = await client.results.status(key)
            return JSONResponse({"key": key, "state": row.state}, status_code=202)
    except UnknownKeyError:
        raise HTTPException(status_code=404, detail=f"no request with key {key!r}") from None
    except anthropic.APIStatusError as exc:  # the API's error, as real time would have raised it
        return _failed(key, exc.type or "api_error", exc.message)
    except RouterError as exc:  # expired or canceled in its batch, or its deadline could not be met
        return _failed(key, type(exc).__name__, str(exc))
    return {"key": key, "state": "succeeded", "text": _text(message)}


def _failed(key: str, kind: str, message: str) -> dict[str, Any]:
    return {"key": key, "state": "failed", "error": {"type": kind, "message": message}}


def _text(message: Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")
