"""The OpenAI result-line codec: output and error file lines to canonical lines, per second.

Sides, alternating within each round, on the same 50,000 lines (90 % output-file lines of a
~1 KB ChatCompletion as the emulator writes them, 10 % error-file lines):
  - ours: `router.providers.openai.codec.canonical_line` (pydantic_core parse and dump),
  - stdlib: the same mapping with `json.loads` / `json.dumps` (what the codec would cost
    without pydantic_core).

    .venv/bin/python bench/bench_openai_codec.py [--repeats 5] [--lines 50000]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from _common import banner, median, ratio, row

from router.providers.openai.codec import canonical_line, canonical_result


def lines(count: int) -> list[bytes]:
    out: list[bytes] = []
    for i in range(count):
        if i % 10 == 9:
            response = {
                "status_code": 429,
                "request_id": f"req_{i}",
                "body": {
                    "error": {"message": "Rate limited", "type": "requests", "code": "rate_limit_exceeded"}
                },
            }
        else:
            response = {
                "status_code": 200,
                "request_id": f"req_{i}",
                "body": {
                    "id": f"chatcmpl-{i}",
                    "object": "chat.completion",
                    "created": 1_700_000_000,
                    "model": "gpt-5.4-mini",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "Reply to: " + "word " * 120},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": 1200,
                        "completion_tokens": 121,
                        "total_tokens": 1321,
                        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
                    },
                    "service_tier": "default",
                    "system_fingerprint": "fp_emulator",
                },
            }
        out.append(
            json.dumps(
                {"id": f"batch_req_{i}", "custom_id": f"r{i}", "response": response, "error": None}
            ).encode()
        )
    return out


def stdlib_line(raw: bytes) -> bytes:
    line = json.loads(raw)
    return json.dumps(
        {"custom_id": line["custom_id"], "result": canonical_result(line)}, separators=(",", ":")
    ).encode()


def rate(convert: Callable[[bytes], bytes], data: list[bytes]) -> float:
    start = time.perf_counter()
    for raw in data:
        convert(raw)
    return len(data) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lines", type=int, default=50_000)
    args = parser.parse_args()
    banner(f"OpenAI result lines to canonical lines: {args.lines:,} lines")
    data = lines(args.lines)
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(args.repeats):
        ours.append(rate(canonical_line, data))
        theirs.append(rate(stdlib_line, data))
    row("ours (pydantic_core)", ours, "lines/s")
    row("stdlib json", theirs, "lines/s")
    print(f"  ours / stdlib = {ratio(median(ours), median(theirs))}")


if __name__ == "__main__":
    main()
