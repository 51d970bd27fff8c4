"""Config loading: defaults, presets, overrides, and one precise message per malformed file."""

from __future__ import annotations

import re
from pathlib import Path

import pydantic
import pytest
from pydantic import BaseModel

from router.config import (
    AnthropicSettings,
    BatchSettings,
    DaemonSettings,
    LatencyClass,
    ModelPrice,
    RouterConfig,
    RouterSettings,
    Rule,
    StoreSettings,
    load_config,
)
from router.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted((ROOT / "policies").glob("*.toml"))
DURATION = 'expected a duration like "250ms", "30s", "5m", "1h30m", "24h", "7d"'


def write(tmp_path: Path, text: str, name: str = "router.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    # One clean message: no chained pydantic/tomllib traceback.
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
    return info.value


# --------------------------------------------------------------------------- defaults


def test_default_config_has_the_four_standard_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    config = RouterConfig.default()
    assert list(config.classes) == ["realtime", "hourly", "daily", "weekly"]
    assert config.classes["realtime"].route == "realtime"
    assert config.classes["hourly"].deadline == 3600.0 and config.classes["hourly"].every == 60.0
    assert config.classes["daily"].deadline == 86400.0 and config.classes["daily"].every == 900.0
    assert config.classes["weekly"].deadline == 7 * 86400.0 and config.classes["weekly"].every == 3600.0
    assert config.router == RouterSettings(flusher="inline", default_class="realtime", watch_interval=0.25)
    assert config.anthropic == AnthropicSettings(
        base_url=None, realtime_concurrency=16, timeout=600.0, max_retries=2
    )
    assert config.store == StoreSettings(
        path=Path("hybrid-router.db"), durability="full", retention=30 * 86400.0
    )
    assert config.batch == BatchSettings(
        max_requests=100_000,
        max_bytes=256_000_000,
        poll_interval=30.0,
        poll_max_interval=600.0,
        turnaround_prior=3600.0,
        turnaround_percentile=0.95,
        deadline_margin=300.0,
        flush_interval=300.0,
    )
    assert config.rules == ()
    assert config.pricing == {}
    assert config.source is None


def test_default_takes_store_path_and_env_base_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9999")
    config = RouterConfig.default(store_path=tmp_path / "r.db")
    assert config.store.path == tmp_path / "r.db"
    assert config.anthropic.base_url == "http://127.0.0.1:9999"


def test_config_is_frozen() -> None:
    config = RouterConfig.default()
    with pytest.raises(pydantic.ValidationError):
        config.router = RouterSettings()
    with pytest.raises(pydantic.ValidationError):
        config.classes["daily"].deadline = 1.0


def test_overrides_return_new_configs(tmp_path: Path) -> None:
    config = RouterConfig.default()
    moved = config.with_store(tmp_path / "x.db")
    assert moved.store.path == tmp_path / "x.db"
    assert config.store.path == Path("hybrid-router.db")
    pointed = config.with_base_url("http://127.0.0.1:8765")
    assert pointed.anthropic.base_url == "http://127.0.0.1:8765"
    assert pointed.anthropic.realtime_concurrency == config.anthropic.realtime_concurrency
    both = config.with_overrides(
        store_path=tmp_path / "y.db", base_url="http://localhost:1", flusher="daemon"
    )
    assert both.store.path == tmp_path / "y.db"
    assert both.anthropic.base_url == "http://localhost:1"
    assert both.router.flusher == "daemon"
    assert both.classes == config.classes
    with pytest.raises(pydantic.ValidationError):
        config.with_base_url("not a url")


# --------------------------------------------------------------------------- loading


def test_full_file_loads_into_the_documented_attributes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    path = write(
        tmp_path,
        """
[anthropic]
base_url = "http://127.0.0.1:8765"
realtime_concurrency = 4
timeout = "90s"
max_retries = 0

[store]
path = "data/router.db"
durability = "normal"
retention = "7d"

[batch]
max_requests = 5000
max_bytes = "32 MB"
poll_interval = "10s"
poll_max_interval = "2m"
turnaround_prior = "30m"
turnaround_percentile = 0.9
deadline_margin = "0s"
flush_interval = "1m"

[router]
flusher = "daemon"
default_class = "daily"
watch_interval = "100ms"

[classes.interactive]
route = "realtime"
on_rate_limit = "defer"
defer_class = "daily"

[classes.daily]
route = "batch"
deadline = "24h"
every = "15m"
cron = "0 2 * * *"
timezone = "Europe/Paris"
max_pending = 10000
max_pending_bytes = "50MB"
max_wait = "10m"
on_deadline_risk = "fail"
max_attempts = 5

[[rules]]
tag = "nightly-*"
model = "claude-haiku-*"
class = "daily"

[pricing."claude-sonnet-4-5"]
input = 2
output = 10.5
cache_read = 0.2
""",
    )
    config = load_config(path)
    assert config.source == path
    assert config.anthropic == AnthropicSettings(
        base_url="http://127.0.0.1:8765", realtime_concurrency=4, timeout=90.0, max_retries=0
    )
    assert config.store.path == (tmp_path / "data" / "router.db").absolute()
    assert config.store.durability == "normal"
    assert config.store.retention == 7 * 86400.0
    assert config.batch.max_requests == 5000
    assert config.batch.max_bytes == 32_000_000
    assert (config.batch.poll_interval, config.batch.poll_max_interval) == (10.0, 120.0)
    assert (config.batch.turnaround_prior, config.batch.turnaround_percentile) == (1800.0, 0.9)
    assert (config.batch.deadline_margin, config.batch.flush_interval) == (0.0, 60.0)
    assert config.router == RouterSettings(flusher="daemon", default_class="daily", watch_interval=0.1)
    assert list(config.classes) == ["realtime", "interactive", "daily"]
    assert config.classes["interactive"] == LatencyClass(
        name="interactive", route="realtime", on_rate_limit="defer", defer_class="daily"
    )
    daily = config.classes["daily"]
    assert daily == LatencyClass(
        name="daily",
        route="batch",
        deadline=86400.0,
        every=900.0,
        cron="0 2 * * *",
        timezone="Europe/Paris",
        max_pending=10000,
        max_pending_bytes=50_000_000,
        max_wait=600.0,
        on_deadline_risk="fail",
        max_attempts=5,
    )
    assert daily.is_batch and daily.has_trigger
    assert config.rules == (Rule(tag="nightly-*", model="claude-haiku-*", class_="daily"),)
    assert config.rules[0].class_ == "daily"
    price = config.pricing["claude-sonnet-4-5"]
    assert price == ModelPrice(input=2.0, output=10.5, cache_read=0.2)
    assert price.effective_cache_write_5m == 2.5
    assert price.effective_cache_write_1h == 4.0
    assert price.effective_cache_read == 0.2


def test_empty_file_is_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    config = load_config(write(tmp_path, "# nothing\n"))
    assert config.classes == RouterConfig.default().classes
    # The default database lives next to the file too.
    assert config.store.path == (tmp_path / "hybrid-router.db").absolute()


def test_absolute_store_path_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "r.db"
    config = load_config(write(tmp_path, f'[store]\npath = "{target.as_posix()}"\n'))
    assert config.store.path == target


def test_base_url_from_env_unless_the_file_sets_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:1111")
    assert load_config(write(tmp_path, "")).anthropic.base_url == "http://127.0.0.1:1111"
    pinned = write(tmp_path, '[anthropic]\nbase_url = "http://127.0.0.1:2222"\n', "pinned.toml")
    assert load_config(pinned).anthropic.base_url == "http://127.0.0.1:2222"
    monkeypatch.delenv("ANTHROPIC_BASE_URL")
    assert load_config(write(tmp_path, "", "plain.toml")).anthropic.base_url is None


def test_bad_base_url_from_env_says_where_it_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "localhost")
    message = str(load_error(write(tmp_path, "")))
    assert "anthropic.base_url: (taken from the ANTHROPIC_BASE_URL environment variable)" in message


def test_defined_classes_replace_the_defaults_and_realtime_is_added(tmp_path: Path) -> None:
    text = '[classes.slow]\nroute = "batch"\ndeadline = "2d"\nmax_wait = "1h"\n'
    config = load_config(write(tmp_path, text))
    assert list(config.classes) == ["realtime", "slow"]
    assert config.classes["realtime"] == LatencyClass(name="realtime", route="realtime")
    assert config.classes["slow"].every is None  # it has a trigger of its own


def test_batch_class_without_trigger_flushes_every_flush_interval(tmp_path: Path) -> None:
    text = '[batch]\nflush_interval = "2m"\n[classes.slow]\nroute = "batch"\ndeadline = "2d"\n'
    config = load_config(write(tmp_path, text))
    assert config.classes["slow"].every == 120.0
    bare = RouterConfig.from_toml_text('[classes.x]\nroute = "batch"\ndeadline = "1h"\n')
    assert bare.classes["x"].every == 300.0


def test_from_toml_text_without_source_names_a_placeholder() -> None:
    with pytest.raises(ConfigError, match=r"^<config>: router\.flusher: expected one of"):
        RouterConfig.from_toml_text('[router]\nflusher = "cron"\n')


def test_python_construction_fills_class_names_and_validates_references() -> None:
    config = RouterConfig(classes={"bulk": {"route": "batch", "deadline": "3h", "every": "5m"}})  # type: ignore[dict-item]
    assert config.classes["bulk"].name == "bulk"
    assert "realtime" in config.classes
    with pytest.raises(pydantic.ValidationError, match="unknown class"):
        RouterConfig(rules=(Rule(tag="x", class_="nope"),))


# --------------------------------------------------------------------------- presets


@pytest.mark.parametrize("path", [*PRESETS, ROOT / "config.example.toml"], ids=lambda p: p.name)
def test_every_preset_loads(path: Path) -> None:
    config = load_config(path)
    assert {"realtime", "hourly", "daily", "weekly"} <= set(config.classes)
    assert config.router.default_class in config.classes


def test_presets_are_all_there() -> None:
    names = [p.name for p in PRESETS]
    assert names == ["cost-saver.toml", "default.toml", "latency-first.toml", "realtime-only.toml"]


def test_default_preset_matches_the_built_in_defaults() -> None:
    preset = load_config(ROOT / "policies" / "default.toml")
    builtin = RouterConfig.default()
    assert preset.classes == builtin.classes
    assert preset.rules == builtin.rules
    assert preset.batch == builtin.batch
    assert preset.router == builtin.router


def test_realtime_only_preset_never_batches() -> None:
    config = load_config(ROOT / "policies" / "realtime-only.toml")
    assert all(c.route == "realtime" for c in config.classes.values())
    assert all(c.on_rate_limit == "fail" for c in config.classes.values())


def test_latency_first_preset_batches_only_weekly() -> None:
    config = load_config(ROOT / "policies" / "latency-first.toml")
    assert [name for name, c in config.classes.items() if c.is_batch] == ["weekly"]


def test_cost_saver_preset_flushes_nightly_by_cron() -> None:
    config = load_config(ROOT / "policies" / "cost-saver.toml")
    assert config.classes["daily"].cron == "0 2 * * *"
    assert config.classes["weekly"].cron == "0 2 * * *"
    assert config.classes["realtime"].on_rate_limit == "defer"
    assert config.rules


def test_example_documents_every_key() -> None:
    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    sections: dict[str, type[BaseModel]] = {
        "anthropic": AnthropicSettings,
        "store": StoreSettings,
        "batch": BatchSettings,
        "router": RouterSettings,
        "daemon": DaemonSettings,
        "classes": LatencyClass,
        "rules": Rule,
        "pricing": ModelPrice,
    }
    for section, model in sections.items():
        assert re.search(rf"^\[+{section}[\].]", text, re.MULTILINE), section
        for name, info in model.model_fields.items():
            key = info.validation_alias if isinstance(info.validation_alias, str) else name
            if key == "name":
                continue  # a class's name is its table key
            assert re.search(rf"^#?\s*{key}\s*=", text, re.MULTILINE), f"{section}.{key} is not documented"


# --------------------------------------------------------------------------- malformed files

MALFORMED = [
    pytest.param(
        '[classes.daily]\nroute = "batch"\ndeadline = "2 days"\n',
        "classes.daily.deadline",
        DURATION,
        id="bad-duration",
    ),
    pytest.param(
        '[classes.daily]\nroute = "batch"\ndeadline = "30s"\n',
        "classes.daily.deadline",
        'at least "1m"',
        id="deadline-too-short",
    ),
    pytest.param(
        '[classes.daily]\nroute = "batch"\nevery = "5m"\n',
        "classes.daily.deadline",
        "a batch class requires a deadline",
        id="batch-class-without-deadline",
    ),
    pytest.param(
        '[store]\ndurabilty = "full"\n',
        "store.durabilty",
        'unknown key (did you mean "durability"?);'
        " expected one of: durability, path, pool_size, retention, retry_for, url",
        id="typo-suggests-closest-key",
    ),
    pytest.param(
        '[classes.daily]\nroute = "batch"\ndeadline = "24h"\nevry = "5m"\n',
        "classes.daily.evry",
        'did you mean "every"?',
        id="typo-in-class",
    ),
    pytest.param(
        '[anthropic]\napi_key = "sk-ant-secret-value"\n',
        "anthropic.api_key",
        "ANTHROPIC_API_KEY",
        id="api-key-in-file",
    ),
    pytest.param(
        '[anthropic]\nauth_token = "tok"\n',
        "anthropic.auth_token",
        "ANTHROPIC_API_KEY",
        id="auth-token-in-file",
    ),
    pytest.param(
        '[router]\ndefault_class = "dayly"\n',
        "router.default_class",
        'unknown class "dayly"; expected one of: daily, hourly, realtime, weekly (did you mean "daily"?)',
        id="unknown-default-class",
    ),
    pytest.param(
        '[[rules]]\ntag = "a-*"\nclass = "daily"\n[[rules]]\ntag = "b-*"\nclass = "daily"\n'
        '[[rules]]\ntag = "c-*"\nclass = "nightly"\n',
        "rules[2].class",
        "expected one of: daily, hourly, realtime, weekly",
        id="rule-names-unknown-class",
    ),
    pytest.param(
        '[[rules]]\nclass = "daily"\n',
        "rules[0].tag",
        'required key is missing; expected a tag glob like "nightly-*"',
        id="rule-without-tag",
    ),
    pytest.param(
        '[batch]\nmax_bytes = "300MB"\n',
        "batch.max_bytes",
        'expected a size like "2KB", "256MB", "256MiB" (a bare integer is bytes), from 1B to 256MB',
        id="max-bytes-over-api-limit",
    ),
    pytest.param(
        "[batch]\nmax_requests = 0\n",
        "batch.max_requests",
        "expected an integer from 1 to 100000, got 0",
        id="max-requests-zero",
    ),
    pytest.param(
        '[batch]\nmax_requests = "100"\n',
        "batch.max_requests",
        "expected an integer from 1 to 100000, got '100'",
        id="max-requests-string",
    ),
    pytest.param(
        "[batch]\nturnaround_percentile = 1.5\n",
        "batch.turnaround_percentile",
        "expected a number greater than 0 and at most 1, like 0.95",
        id="percentile-out-of-range",
    ),
    pytest.param(
        '[batch]\npoll_interval = "5m"\npoll_max_interval = "1m"\n',
        "batch.poll_max_interval",
        'expected a duration of at least poll_interval ("5m")',
        id="poll-max-below-poll",
    ),
    pytest.param(
        "[anthropic]\ntimeout = true\n",
        "anthropic.timeout",
        DURATION,
        id="bool-is-not-a-duration",
    ),
    pytest.param(
        '[anthropic]\nbase_url = "127.0.0.1:8765"\n',
        "anthropic.base_url",
        'expected an http(s) URL like "http://127.0.0.1:8765"',
        id="base-url-without-scheme",
    ),
    pytest.param(
        '[store]\ndurability = "paranoid"\n',
        "store.durability",
        'expected one of "full" or "normal", got \'paranoid\'',
        id="bad-durability",
    ),
    pytest.param(
        '[router]\nflusher = "cron"\n',
        "router.flusher",
        'expected one of "inline" or "daemon"',
        id="bad-flusher",
    ),
    pytest.param(
        '[classes.daily]\nroute = "batch"\ndeadline = "24h"\ncron = "0 25 * * *"\n',
        "classes.daily.cron",
        'expected a 5-field cron expression like "0 2 * * *"',
        id="bad-cron-value",
    ),
    pytest.param(
        '[classes.daily]\nroute = "batch"\ndeadline = "24h"\ncron = "0 2 * *"\n',
        "classes.daily.cron",
        "Wrong number of fields",
        id="bad-cron-fields",
    ),
    pytest.param(
        '[classes.daily]\nroute = "batch"\ndeadline = "24h"\ncron = "0 2 * * *"\ntimezone = "Mars/Olympus"\n',
        "classes.daily.timezone",
        'expected an IANA time zone like "UTC" or "Europe/Paris"',
        id="bad-timezone",
    ),
    pytest.param(
        '[classes.fast]\nroute = "realtime"\ndeadline = "1h"\nevery = "5m"\n',
        "classes.fast",
        'a realtime class cannot set batch-only keys (deadline, every); expected route = "batch"',
        id="realtime-class-with-batch-keys",
    ),
    pytest.param(
        '[classes.daily]\ndeadline = "24h"\n',
        "classes.daily.route",
        'required key is missing; expected "realtime" or "batch"',
        id="class-without-route",
    ),
    pytest.param(
        '[classes.daily]\nroute = "later"\ndeadline = "24h"\n',
        "classes.daily.route",
        'expected one of "realtime" or "batch"',
        id="bad-route",
    ),
    pytest.param(
        '[classes.realtime]\nroute = "batch"\ndeadline = "1h"\n',
        "classes.realtime.route",
        'expected "realtime"',
        id="realtime-class-must-route-realtime",
    ),
    pytest.param(
        '[classes.realtime]\nroute = "realtime"\non_rate_limit = "defer"\n',
        "classes.realtime.defer_class",
        "expected the name of a batch class",
        id="defer-without-defer-class",
    ),
    pytest.param(
        '[classes.realtime]\nroute = "realtime"\non_rate_limit = "defer"\ndefer_class = "fast"\n'
        '[classes.fast]\nroute = "realtime"\n',
        "classes.realtime.defer_class",
        '"fast" routes realtime; expected the name of a batch class',
        id="defer-to-realtime-class",
    ),
    pytest.param(
        '[classes.daily]\nroute = "batch"\ndeadline = "24h"\non_rate_limit = "defer"\n',
        "classes.daily",
        "a batch class cannot set realtime-only keys (on_rate_limit)",
        id="batch-class-with-realtime-keys",
    ),
    pytest.param(
        '[pricing."claude-x"]\ninput = 3.0\n',
        "pricing.claude-x.output",
        "required key is missing; expected a price in USD per million tokens",
        id="price-without-output",
    ),
    pytest.param(
        '[pricing."claude-x"]\ninput = -1\noutput = 2\n',
        "pricing.claude-x.input",
        "expected a price in USD per million tokens, a number like 3.0, got -1",
        id="negative-price",
    ),
    pytest.param(
        "classes = 5\n",
        "classes",
        "expected a table of classes, like [classes.daily]",
        id="classes-not-a-table",
    ),
    pytest.param(
        '[rules]\ntag = "x"\nclass = "daily"\n',
        "rules",
        "expected an array of tables, written [[rules]]",
        id="rules-not-an-array",
    ),
    pytest.param(
        '[classes.daily]\nroute = "batch"\ndeadline = "24h"\nmax_pending_bytes = "lots"\n',
        "classes.daily.max_pending_bytes",
        'expected a size like "2KB", "256MB"',
        id="bad-size",
    ),
    pytest.param(
        '[store]\npath = ""\n',
        "store.path",
        'expected a file path like "hybrid-router.db"',
        id="empty-store-path",
    ),
    pytest.param(
        "[routing]\ndefault_class = 'daily'\n",
        "routing",
        'unknown key (did you mean "router"?); expected one of: anthropic, batch, classes',
        id="unknown-section",
    ),
    pytest.param(
        '[classes."bad name"]\nroute = "realtime"\n',
        'classes."bad name"',
        "expected a class name of letters, digits, '_' or '-'",
        id="bad-class-name",
    ),
]


@pytest.mark.parametrize(("text", "key_path", "expected"), MALFORMED)
def test_malformed_file_names_file_key_and_form(
    tmp_path: Path, text: str, key_path: str, expected: str
) -> None:
    path = write(tmp_path, text)
    error = load_error(path)
    message = str(error)
    assert message.startswith(f"{path}: ")
    assert f"{key_path}: " in message
    assert expected in message


def test_toml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[router]\nflusher = "inline"\ndefault_class = \n')
    message = str(load_error(path))
    assert message.startswith(f"{path}: invalid TOML: ")
    assert "line 3" in message


def test_duplicate_key_is_a_toml_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[router]\nflusher = "inline"\nflusher = "daemon"\n')
    assert "line 3" in str(load_error(path))


def test_secret_values_are_never_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, 'api_key = "sk-ant-do-not-print"\n[anthropic]\nkey = "sk-ant-do-not-print"\n')
    message = str(load_error(path))
    assert "sk-ant-do-not-print" not in message
    assert "(top level)" not in message
    assert message.count("ANTHROPIC_API_KEY") == 2


def test_all_problems_in_one_message_one_line_each(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[store]\ndurabilty = "full"\n[batch]\nmax_bytes = "1TB"\n'
        '[classes.daily]\nroute = "batch"\ndeadline = "soon"\n',
    )
    lines = str(load_error(path)).splitlines()
    assert lines[0] == f"{path}: 3 problems:"
    assert sorted(line.split(":")[0].strip() for line in lines[1:]) == [
        "batch.max_bytes",
        "classes.daily.deadline",
        "store.durabilty",
    ]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    assert str(load_error(path)) == f"{path}: config file not found"


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    assert "expected a TOML file" in str(load_error(tmp_path))


def test_config_error_is_a_router_error(tmp_path: Path) -> None:
    from router.errors import RouterError

    with pytest.raises(RouterError):
        load_config(write(tmp_path, "[router\n"))
