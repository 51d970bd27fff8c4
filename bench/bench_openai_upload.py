"""Upload of a 100,000 x 2 KB OpenAI batch input file (~200 MB): the provider's streamed
multipart upload against the SDK's `files.create` of the whole file in memory.

Sides, each in its own spawned subprocess (so one side's peak RSS cannot hide the other's),
against the emulator in a subprocess (its memory and parsing are not the client's):
  - ours: `OpenAIProvider.create_batch` (the JSONL framed block by block from params generated
    per block, as the store yields them; multipart head and tail computed up front; exact
    Content-Length), then `batches.create`;
  - competitor: the same JSONL built as one `bytes`, `client.files.create(file=(name, data),
    purpose="batch")`, then `batches.create`.

Peak RSS growth: a thread samples VmRSS every 2 ms; growth = peak - RSS just before the call.
The params of both sides are generated inside the measured call, block by block for ours and
all at once for the competitor, so the growth is what each approach holds. The file holds
more than the 50,000 requests one OpenAI batch allows (the emulator's validation, run later,
fails it): the figure is the upload's, as the issue asks.

    .venv/bin/python bench/bench_openai_upload.py [--repeats 3] [--requests 100000] [--size 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from _common import MiB, RssSampler, banner, emulator_process, median, ratio, row, run_child

MODEL = "gpt-5.4-mini"
BLOCK = 500  # requests per block, as the store's iter_claimed yields them


def params(i: int, size: int) -> bytes:
    """Chat params of about `size` bytes of JSON (distinct per i)."""
    head = f"Request {i}: classify the following text. "
    base = {"model": MODEL, "messages": [{"role": "user", "content": head}]}
    pad = max(0, size - len(json.dumps(base, separators=(",", ":"))))
    base["messages"][0]["content"] = head + ("lorem ipsum dolor sit amet " * (pad // 27 + 1))[:pad]
    return json.dumps(base, separators=(",", ":")).encode()


def body_length(requests: int, size: int) -> int:
    from router.providers.openai import JSONL_FORMAT

    params_bytes = 0
    custom_ids = 0
    for i in range(requests):
        params_bytes += len(params(i, size))
        custom_ids += len(f"r{i}")
    return JSONL_FORMAT.body_bytes(requests=requests, params_bytes=params_bytes, custom_id_bytes=custom_ids)


async def _blocks(requests: int, size: int) -> AsyncIterator[list[tuple[str, bytes]]]:
    for start in range(0, requests, BLOCK):
        yield [(f"r{i}", params(i, size)) for i in range(start, min(start + BLOCK, requests))]


async def _ours(url: str, requests: int, size: int) -> dict[str, Any]:
    import openai

    from router.providers.openai import OpenAIProvider, jsonl_body

    length = body_length(requests, size)
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0, timeout=600)
    provider = OpenAIProvider(client)
    try:
        with RssSampler() as rss:
            start = time.perf_counter()
            batch = await provider.create_batch(
                jsonl_body(_blocks(requests, size)), length=length, intent_id=1, model=MODEL
            )
            seconds = time.perf_counter() - start
        await _cleanup(client, batch.id)
    finally:
        await client.close()
    return {"seconds": seconds, "growth": rss.growth, "bytes": length}


async def _theirs(url: str, requests: int, size: int) -> dict[str, Any]:
    import openai

    from router.providers.openai import frame_entry

    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0, timeout=600)
    try:
        with RssSampler() as rss:
            start = time.perf_counter()
            data = b"".join(frame_entry(f"r{i}", params(i, size)) + b"\n" for i in range(requests))
            uploaded = await client.files.create(file=("input.jsonl", data), purpose="batch")
            batch = await client.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            seconds = time.perf_counter() - start
        length = len(data)
        del data
        await _cleanup(client, batch.id)
    finally:
        await client.close()
    return {"seconds": seconds, "growth": rss.growth, "bytes": length}


async def _cleanup(client: Any, batch_id: str) -> None:
    """Delete the input file, so the emulator does not hold every run's 200 MB."""
    batch = await client.batches.retrieve(batch_id)
    await client.files.delete(batch.input_file_id)


def ours(url: str, requests: int, size: int) -> dict[str, Any]:
    return asyncio.run(_ours(url, requests, size))


def theirs(url: str, requests: int, size: int) -> dict[str, Any]:
    return asyncio.run(_theirs(url, requests, size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=2000)
    args = parser.parse_args()
    banner(f"OpenAI batch input upload: {args.requests:,} requests x {args.size:,} B of params")
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "theirs": []}
    with emulator_process() as url:
        for _ in range(args.repeats):
            runs["ours"].append(run_child(ours, url, args.requests, args.size))
            runs["theirs"].append(run_child(theirs, url, args.requests, args.size))
    size = runs["ours"][0]["bytes"]
    assert all(r["bytes"] == size for side in runs.values() for r in side)
    print(f"  input file: {size:,} bytes ({size / MiB:,.1f} MiB)")
    for name, label in (("ours", "ours (streamed multipart)"), ("theirs", "SDK files.create(bytes)")):
        row(f"{label}: seconds", [r["seconds"] for r in runs[name]], "s", "{:,.2f}")
        row(f"{label}: peak RSS growth", [r["growth"] / MiB for r in runs[name]], "MiB", "{:,.1f}")
    ours_mib = median([r["growth"] / MiB for r in runs["ours"]])
    theirs_mib = median([r["growth"] / MiB for r in runs["theirs"]])
    ours_s = median([r["seconds"] for r in runs["ours"]])
    theirs_s = median([r["seconds"] for r in runs["theirs"]])
    memory, speed = ratio(theirs_mib, ours_mib), ratio(theirs_s, ours_s)
    print(f"  memory: SDK / ours = {memory}; time: SDK / ours = {speed}")


if __name__ == "__main__":
    main()
