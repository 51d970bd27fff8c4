"""A FastAPI webhook receiver: verifies each delivery, handles each event once, and fetches a
job's results as soon as hybrid-router says the job's tag has drained.

    pip install hybrid-router fastapi uvicorn
    export HYBRID_ROUTER_CONFIG=router.toml WEBHOOK_SECRET=whsec_...  ANTHROPIC_API_KEY=...
    uvicorn examples.webhook_receiver:app --port 8000

with, in router.toml (the secret itself only in the environment):

    [[webhooks]]
    url = "https://receiver.example.com/webhooks"   # http://127.0.0.1:8000/webhooks on one host
    events = ["tag.drained", "batch.ended"]
    secret_env = "WEBHOOK_SECRET"

- `POST /jobs {"tag": ..., "items": [{"key": ..., "text": ...}]}` stores each item as a
  deferred request under the tag (at the batch price) and remembers its key.
- `POST /webhooks` is the endpoint hybrid-router delivers to. A delivery whose signature does
  not verify (`router.webhooks.verify`, Standard Webhooks) gets 401. Delivery is at least
  once, so the same event can come twice (a lost answer, a restart): each `webhook-id` is
  handled once, remembered in a small SQLite file (`RECEIVER_DB`, default receiver.db) that
  survives restarts. On `tag.drained` the job's results are fetched with `results.wait_many`
  and written to `RESULTS_DIR/<tag>.jsonl` (`hybrid-router results --out FILE --keys ...`
  does the same from a shell).
- `GET /seen` lists what was received, for a look (or a test).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from anthropic.types import TextBlock
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

from router import Router
from router.webhooks import WebhookVerificationError, verify

MODEL = "claude-haiku-4-5"
JOB_CLASS = "daily"


class Item(BaseModel):
    key: str = Field(min_length=1, max_length=512)
    text: str = Field(min_length=1)


class Job(BaseModel):
    tag: str = Field(min_length=1, max_length=128)
    items: list[Item] = Field(min_length=1)


def _db() -> sqlite3.Connection:
    conn = sqlite3.connect(os.environ.get("RECEIVER_DB", "receiver.db"), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY, type TEXT, tag TEXT, times INTEGER)")
    conn.execute("CREATE TABLE IF NOT EXISTS job_keys (tag TEXT, key TEXT, PRIMARY KEY (tag, key))")
    return conn


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.db = _db()
    async with Router.from_config(os.environ.get("HYBRID_ROUTER_CONFIG", "router.toml")) as client:
        app.state.router = client
        yield
    app.state.db.close()


app = FastAPI(title="hybrid-router webhook receiver", lifespan=lifespan)


@app.post("/jobs", status_code=202)
async def submit_job(job: Job, request: Request) -> dict[str, Any]:
    """Store a job's items as deferred requests under its tag; the tag.drained event says when
    all of them are done."""
    router: Router = request.app.state.router
    db: sqlite3.Connection = request.app.state.db
    db.executemany("INSERT OR IGNORE INTO job_keys VALUES (?, ?)", [(job.tag, i.key) for i in job.items])
    # submit() returns once the request is stored; concurrent ones share a commit.
    await asyncio.gather(
        *(
            router.messages.submit(
                model=MODEL,
                max_tokens=64,
                messages=[{"role": "user", "content": item.text}],
                latency=JOB_CLASS,
                tag=job.tag,
                key=item.key,
            )
            for item in job.items
        )
    )
    return {"tag": job.tag, "stored": len(job.items)}


@app.post("/webhooks")
async def webhook(request: Request) -> dict[str, Any]:
    body = await request.body()  # the exact bytes: the signature covers them
    try:
        event = verify(dict(request.headers), body, os.environ["WEBHOOK_SECRET"])
    except WebhookVerificationError:
        raise HTTPException(status_code=401, detail="bad signature") from None
    db: sqlite3.Connection = request.app.state.db
    msg_id = request.headers["webhook-id"]
    data = event.get("data", {})
    done = db.execute("SELECT times FROM seen WHERE id = ?", (msg_id,)).fetchone()
    if done is not None:  # handled already: answer 200 so that it is not sent again
        db.execute("UPDATE seen SET times = times + 1 WHERE id = ?", (msg_id,))
        return {"duplicate": True}
    if event["type"] == "tag.drained":
        await _fetch_results(request.app.state.router, db, str(data["tag"]))
    # Recorded once handled: a crash before this line means the event is handled again on
    # the next delivery, which the handlers above allow (they only write files whole).
    db.execute("INSERT INTO seen VALUES (?, ?, ?, 1)", (msg_id, event["type"], data.get("tag")))
    return {"duplicate": False}


async def _fetch_results(router: Router, db: sqlite3.Connection, tag: str) -> None:
    keys = [k for (k,) in db.execute("SELECT key FROM job_keys WHERE tag = ? ORDER BY key", (tag,))]
    if not keys:
        return  # a tag this receiver did not submit
    outcomes = await router.results.wait_many(keys)
    lines = []
    for key, outcome in zip(keys, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            lines.append({"key": key, "error": str(outcome)})
        else:
            text = "".join(block.text for block in outcome.content if isinstance(block, TextBlock))
            lines.append({"key": key, "text": text})
    await asyncio.to_thread(
        _write_jsonl, Path(os.environ.get("RESULTS_DIR", "results")) / f"{tag}.jsonl", lines
    )


def _write_jsonl(path: Path, lines: list[dict[str, str]]) -> None:
    """Write the whole file or nothing: a half-written file never stands under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".jsonl.part")
    partial.write_text("".join(json.dumps(line) + "\n" for line in lines))
    partial.replace(path)


@app.get("/seen")
async def seen(request: Request) -> dict[str, Any]:
    db: sqlite3.Connection = request.app.state.db
    rows = db.execute("SELECT id, type, tag, times FROM seen ORDER BY id").fetchall()
    return {"events": [{"id": i, "type": t, "tag": g, "times": n} for i, t, g, n in rows]}
