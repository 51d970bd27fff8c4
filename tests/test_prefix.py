"""The cacheable prefix of a request: identity, size estimate and the 1-hour rewrite."""

from __future__ import annotations

import json
from typing import Any

from router.prefix import estimate_tokens, identify, rewrite_ttl_1h, ttl_1h_delta
from router.providers.anthropic.params import serialize

RUBRIC = "Grade the answer from 1 to 5. " * 100
MARK = {"type": "ephemeral"}


def params(answer: str, *, model: str = "claude-sonnet-4-5", mark: Any = MARK, **extra: Any) -> bytes:
    system = [{"type": "text", "text": RUBRIC, **({"cache_control": mark} if mark else {})}]
    return serialize(
        {
            "model": model,
            "max_tokens": 16,
            "system": system,
            "messages": [{"role": "user", "content": answer}],
            **extra,
        }
    )


def test_no_mark_no_prefix() -> None:
    assert identify(params("a", mark=None)) is None


def test_requests_sharing_a_marked_system_share_a_key() -> None:
    a, b = identify(params("first answer")), identify(params("a different answer"))
    assert a is not None and b is not None
    assert a.key == b.key
    # The estimate counts the canonical system block: its text and its JSON around it.
    block = json.dumps({"text": RUBRIC, "type": "text"}, separators=(",", ":"))
    assert a.tokens == estimate_tokens(len(block))


def test_model_selectors_and_prefix_content_change_the_key() -> None:
    base = identify(params("x"))
    assert base is not None
    others = [
        identify(params("x", model="claude-opus-4-1")),
        identify(params("x", tool_choice={"type": "auto"}, tools=[{"name": "t", "input_schema": {}}])),
        identify(params("x"), betas=["some-beta-2026"]),
    ]
    assert all(o is not None and o.key != base.key for o in others)


def test_the_ttl_of_the_mark_is_not_part_of_the_identity() -> None:
    short, long = identify(params("x")), identify(params("x", mark={"type": "ephemeral", "ttl": "1h"}))
    assert short is not None and long is not None and short.key == long.key


def test_a_mark_in_the_messages_takes_the_messages_up_to_it() -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 16,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "doc " * 500, "cache_control": MARK}]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "question one"},
        ],
    }
    one = identify(serialize(body))
    body["messages"][2]["content"] = "question two"
    two = identify(serialize(body))
    assert one is not None and two is not None and one.key == two.key


def test_top_level_automatic_caching_takes_every_block() -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 16,
        "cache_control": MARK,
        "system": RUBRIC,
        "messages": [{"role": "user", "content": "answer one"}],
    }
    one = identify(serialize(body))
    body["messages"][0]["content"] = "answer two"
    two = identify(serialize(body))
    assert one is not None and two is not None and one.key != two.key  # the last block is in it


def test_the_1h_rewrite_changes_only_the_marks_and_its_length_is_known() -> None:
    for mark in (MARK, {"type": "ephemeral", "ttl": "5m"}, {"ttl": "5m", "type": "ephemeral"}):
        # A caller's text that looks like a mark is text, escaped in JSON: it stays as written.
        original = params('he wrote "cache_control":{"type":"ephemeral"}', mark=mark, cache_control=MARK)
        rewritten = rewrite_ttl_1h(original)
        assert len(rewritten) - len(original) == ttl_1h_delta(original)
        body, before = json.loads(rewritten), json.loads(original)
        assert body["system"][0]["cache_control"]["ttl"] == "1h"
        assert body["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
        assert body["messages"] == before["messages"]
        before["system"][0]["cache_control"]["ttl"] = "1h"
        before["cache_control"]["ttl"] = "1h"
        assert body == before


def test_nothing_to_rewrite() -> None:
    plain = params("x", mark=None)
    assert rewrite_ttl_1h(plain) is plain and ttl_1h_delta(plain) == 0
    already = params("x", mark={"type": "ephemeral", "ttl": "1h"})
    assert rewrite_ttl_1h(already) == already and ttl_1h_delta(already) == 0
