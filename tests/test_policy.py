"""Policy.resolve: explicit latency, then the first matching rule, then the default class."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.config import RouterConfig, load_config
from router.errors import InvalidRequestError
from router.policy import Policy, format_effective_policy
from router.units import format_duration

ROOT = Path(__file__).resolve().parent.parent

RULES = """
[router]
default_class = "hourly"

[classes.hourly]
route = "batch"
deadline = "1h"
every = "1m"

[classes.daily]
route = "batch"
deadline = "24h"
every = "15m"

[classes.weekly]
route = "batch"
deadline = "7d"
cron = "0 3 * * 1"
timezone = "Europe/Paris"
max_pending = 5000
max_pending_bytes = "10MB"
max_wait = "6h"

[[rules]]
tag = "nightly-*"
model = "claude-haiku-*"
class = "daily"

[[rules]]
tag = "nightly-*"
class = "weekly"

[[rules]]
tag = "chat"
class = "realtime"
"""


@pytest.fixture
def policy() -> Policy:
    return Policy(RouterConfig.from_toml_text(RULES, "rules.toml"))


def test_explicit_latency_names_the_class(policy: Policy) -> None:
    assert policy.resolve("daily", None, None).name == "daily"
    assert policy.resolve("realtime", None, None).route == "realtime"


def test_explicit_latency_wins_over_rules(policy: Policy) -> None:
    assert policy.resolve("hourly", "nightly-x", "claude-haiku-4-5").name == "hourly"


def test_unknown_latency_lists_the_known_classes(policy: Policy) -> None:
    with pytest.raises(InvalidRequestError) as info:
        policy.resolve("dayly", None, None)
    message = str(info.value)
    assert 'unknown latency class "dayly"' in message
    assert 'did you mean "daily"?' in message
    assert '"daily", "hourly", "realtime", "weekly"' in message
    # Bad input at call time is also a plain ValueError for callers that catch that.
    assert isinstance(info.value, ValueError)


def test_non_string_latency_is_rejected(policy: Policy) -> None:
    with pytest.raises(InvalidRequestError, match="expected the name of a latency class"):
        policy.resolve(5, None, None)  # type: ignore[arg-type]


def test_first_matching_rule_wins(policy: Policy) -> None:
    assert policy.resolve(None, "nightly-classify", "claude-haiku-4-5").name == "daily"
    assert policy.resolve(None, "nightly-classify", "claude-sonnet-4-5").name == "weekly"
    assert policy.resolve(None, "chat", "claude-haiku-4-5").name == "realtime"


def test_model_glob_needs_a_model(policy: Policy) -> None:
    # Rule 0 names a model, so a call with no model falls through to rule 1.
    assert policy.resolve(None, "nightly-classify", None).name == "weekly"


def test_no_rule_matches_uses_the_default_class(policy: Policy) -> None:
    assert policy.resolve(None, "interactive", "claude-haiku-4-5").name == "hourly"
    assert policy.resolve(None, None, "claude-haiku-4-5").name == "hourly"
    assert policy.resolve(None, None, None).name == "hourly"


def test_globs_are_case_sensitive_and_whole(policy: Policy) -> None:
    assert policy.resolve(None, "Nightly-x", "claude-haiku-4-5").name == "hourly"
    assert policy.resolve(None, "chatty", None).name == "hourly"
    assert policy.matching_rule("chat") is not None
    assert policy.matching_rule("chat", "anything") == policy.config.rules[2]


def test_default_policy_keeps_untagged_calls_real_time() -> None:
    policy = Policy(RouterConfig.default())
    assert policy.resolve(None, None, None).name == "realtime"
    assert policy.resolve(None, "nightly-x", None).name == "realtime"
    assert policy.class_names == ("daily", "hourly", "realtime", "weekly")


def test_realtime_only_kill_switch_keeps_class_names_working() -> None:
    policy = Policy(load_config(ROOT / "policies" / "realtime-only.toml"))
    for name in ("realtime", "hourly", "daily", "weekly"):
        assert policy.resolve(name, None, None).route == "realtime"


def test_effective_policy_lists_every_class_and_rule(policy: Policy) -> None:
    config = policy.config
    text = format_effective_policy(config, "rules.toml")
    assert "rules.toml" in text
    for latency_class in config.classes.values():
        key = [latency_class.name, latency_class.route]
        row = next(line for line in text.splitlines() if line.split()[:2] == key)
        if latency_class.deadline is not None:
            assert format_duration(latency_class.deadline) in row
    for index, rule in enumerate(config.rules):
        row = next(line for line in text.splitlines() if line.strip().startswith(f"rules[{index}]"))
        globs = [rule.tag or "*", rule.model or "*", rule.provider or "*"]
        assert row.split() == [f"rules[{index}]", *globs, rule.class_]
    weekly = next(line for line in text.splitlines() if line.strip().startswith("weekly"))
    assert "cron '0 3 * * 1' Europe/Paris" in weekly
    assert "max_pending 5000" in weekly and "max_pending_bytes 10MB" in weekly and "max_wait 6h" in weekly
    for expected in ("max_requests", "100000", "256MB", "synchronous=FULL", "hybrid-router.db", "retention"):
        assert expected in text
    assert 'no match use "hourly"' in text


@pytest.mark.parametrize(
    "path",
    [*sorted((ROOT / "policies").glob("*.toml")), ROOT / "config.example.toml"],
    ids=lambda p: p.name,
)
def test_effective_policy_of_every_preset(path: Path) -> None:
    config = load_config(path)
    text = format_effective_policy(config, str(path))
    lines = text.splitlines()
    for name, latency_class in config.classes.items():
        assert any(line.split()[:2] == [name, latency_class.route] for line in lines if line.strip()), name
    for index in range(len(config.rules)):
        assert any(line.strip().startswith(f"rules[{index}]") for line in lines)
    if not config.rules:
        assert "(none)" in text


def test_effective_policy_shows_deferral_and_durability() -> None:
    config = load_config(ROOT / "policies" / "cost-saver.toml")
    text = format_effective_policy(config, "cost-saver.toml")
    assert "defer -> hourly" in text
    normal = RouterConfig.from_toml_text('[store]\ndurability = "normal"\n')
    assert "normal (synchronous=NORMAL)" in format_effective_policy(normal, "x")


def test_effective_policy_never_shows_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    assert "sk-ant-secret" not in format_effective_policy(RouterConfig.default(), "built-in defaults")
