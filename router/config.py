"""Router configuration: frozen pydantic models loaded from TOML.

Every problem in a file raises one `ConfigError` naming the file, the key path and the
expected form. Unknown keys are errors: a typo must never silently change routing.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from router import event_names
from router.errors import ConfigError
from router.units import DURATION_FORM, SIZE_FORM, format_duration, format_size, parse_duration, parse_size

__all__ = [
    "BATCH_MAX_BYTES",
    "BATCH_MAX_REQUESTS",
    "AnthropicSettings",
    "BatchSettings",
    "DaemonSettings",
    "LatencyClass",
    "ModelPrice",
    "OpenAISettings",
    "ProvidersSettings",
    "RouterConfig",
    "RouterSettings",
    "Rule",
    "StoreSettings",
    "WebhookSettings",
    "load_config",
]

# Hard limits of one Message Batch (Anthropic docs).
BATCH_MAX_REQUESTS = 100_000
BATCH_MAX_BYTES = 256_000_000

_DAY = 86_400.0
_MIN_DEADLINE = 60.0

# Names a key holding a secret might have; the key only ever comes from the environment
# so that config files can be committed and shown by `hybrid-router validate`.
_SECRET_KEYS = frozenset({"api_key", "api-key", "apikey", "key", "auth_token", "anthropic_api_key", "token"})
_SECRET_HINT = (
    "the API key is never read from the config file; remove this key and set the "
    "ANTHROPIC_API_KEY environment variable instead"
)
_CLASS_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


# --------------------------------------------------------------------------- problems


PathPart: TypeAlias = str | int
Problem: TypeAlias = tuple[tuple[PathPart, ...], str]


class _Problems(ValueError):
    """Several problems below the model being validated, each with its own relative key path.

    Raised from validators so that cross-field checks still report e.g.
    `classes.daily.deadline` rather than just `classes.daily`.
    """

    def __init__(self, items: Iterable[Problem]) -> None:
        self.items = list(items)
        super().__init__("; ".join(f"{_format_path(p)}: {m}" if p else m for p, m in self.items))


def _format_path(parts: Iterable[PathPart]) -> str:
    """TOML-style key path: `classes.daily.deadline`, `rules[2].class`, `pricing."a.b".input`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if _BARE_KEY.fullmatch(part) else '"' + part.replace('"', '\\"') + '"'
            out += f".{text}" if out else text
    return out


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------- field types


def _duration(minimum: float = 0.0, *, exclusive: bool = False) -> Callable[[Any], float | None]:
    def check(value: Any) -> float | None:
        if value is None:
            return None
        seconds = parse_duration(value)
        if seconds < minimum or (exclusive and seconds == minimum):
            bound = "longer than" if exclusive else "at least"
            raise ValueError(
                f"expected {DURATION_FORM}, {bound} {format_duration(minimum)}, got {_show(value)}"
            )
        return seconds

    return check


def _size(minimum: int, maximum: int) -> Callable[[Any], int | None]:
    def check(value: Any) -> int | None:
        if value is None:
            return None
        size = parse_size(value)
        if not minimum <= size <= maximum:
            raise ValueError(
                f"expected {SIZE_FORM}, from {format_size(minimum)} to {format_size(maximum)}, "
                f"got {_show(value)}"
            )
        return size

    return check


def _integer(minimum: int, maximum: int | None = None) -> Callable[[Any], int | None]:
    def check(value: Any) -> int | None:
        if value is None:
            return None
        # Strict: TOML distinguishes 5 from "5" and 5.0, and so do we.
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and value >= minimum and (maximum is None or value <= maximum):
            return int(value)
        expected = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
        raise ValueError(f"expected an integer {expected}, got {_show(value)}")

    return check


def _price(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    raise ValueError(f"expected a price in USD per million tokens, a number like 3.0, got {_show(value)}")


def _fraction(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 1:
        return float(value)
    raise ValueError(f"expected a number greater than 0 and at most 1, like 0.95, got {_show(value)}")


def _text(what: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, str) and value.strip():
            return value
        raise ValueError(f"expected {what}, got {_show(value)}")

    return check


Duration = Annotated[float, BeforeValidator(_duration())]
PositiveDuration = Annotated[float, BeforeValidator(_duration(0.0, exclusive=True))]
OptionalPositiveDuration = Annotated[float | None, BeforeValidator(_duration(0.0, exclusive=True))]
Price = Annotated[float, BeforeValidator(_price)]
OptionalPrice = Annotated[float | None, BeforeValidator(_price)]
ClassName = Annotated[str, BeforeValidator(_text('the name of a class, like "daily"'))]
OptionalClassName = Annotated[str | None, BeforeValidator(_text('the name of a class, like "daily"'))]


def _int_field(minimum: int, maximum: int | None = None) -> Any:
    return BeforeValidator(_integer(minimum, maximum))


_FROZEN = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- sections


def _http_url(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and re.fullmatch(r"https?://\S+", value.strip()):
        return value.strip()
    raise ValueError(f'expected an http(s) URL like "http://127.0.0.1:8765", got {_show(value)}')


class _ProviderSettings(BaseModel):
    """How to reach one provider's API: the keys its table takes, the same for every provider."""

    model_config = _FROZEN

    base_url: str | None = None
    realtime_concurrency: Annotated[int, _int_field(1, 10_000)] = 16
    timeout: PositiveDuration = 600.0
    max_retries: Annotated[int, _int_field(0, 100)] = 2

    @field_validator("base_url", mode="before")
    @classmethod
    def _check_base_url(cls, value: Any) -> Any:
        return _http_url(value)


class AnthropicSettings(_ProviderSettings):
    """How to reach the Anthropic API. The key comes only from ANTHROPIC_API_KEY."""


class OpenAISettings(_ProviderSettings):
    """How to reach the OpenAI API (`[providers.openai]`). The base URL is this table's
    `base_url`, else OPENAI_BASE_URL, else the SDK's default; the key comes only from
    OPENAI_API_KEY."""


class ProvidersSettings(BaseModel):
    """`[providers.*]`: the providers besides Anthropic (whose table is `[anthropic]`)."""

    model_config = _FROZEN

    openai: OpenAISettings | None = None


_STORE_URL_FORM = 'expected a URL like "postgresql://user@host:5432/db" or "sqlite:///path/to/file.db"'
POSTGRES_SCHEMES = ("postgresql", "postgres")


def store_url_problem(url: str) -> str | None:
    """What is wrong with a `[store] url`, or None. Never quotes the URL: it may hold a password."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _STORE_URL_FORM
    if scheme == "sqlite":
        return (
            None
            if rest.startswith("/") and rest.strip("/")
            else f"{_STORE_URL_FORM}: the sqlite URL names no file"
        )
    if scheme not in POSTGRES_SCHEMES:
        return f"{_STORE_URL_FORM}: unknown scheme {scheme[:20]!r}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return f"{_STORE_URL_FORM}: the port is not a number"
    if port == 0:
        return f"{_STORE_URL_FORM}: port 0"
    if not parts.path.strip("/") and not parts.query:
        return f"{_STORE_URL_FORM}: the URL names no database"
    return None


def store_url_host_port(url: str) -> str:
    """ "host:port" as a store URL spells them, for its errors ("" when it names no host): what
    follows the last "@" of the authority. A port is named only when it is a number, since a
    URL that lacks its "@" would put the password there."""
    rest = url.partition("://")[2] if "://" in url else url
    authority = rest.rpartition("@")[2].partition("/")[0].partition("?")[0]
    if authority.startswith("["):  # an IPv6 literal: [::1]:5432
        inside, _, port = authority[1:].partition("]")
        host, port = f"[{inside}]" if inside else "", port.removeprefix(":")
    else:
        host, _, port = authority.partition(":")
    if not host:
        return ""
    return f"{host}:{port if port.isdigit() else '?'}"


def redacted_store_url(url: str) -> str:
    """The URL with any password taken out, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}@{host}" if user else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


class StoreSettings(BaseModel):
    """Where and how durably requests are stored: an SQLite file (`path`, the default) or a
    PostgreSQL database (`url = "postgresql://user@host:5432/db"`).

    A PostgreSQL password comes from the URL, PGPASSWORD or a .pgpass file, as with libpq;
    it appears in no message (`location` leaves it out).
    """

    model_config = _FROZEN

    path: Path = Path("hybrid-router.db")
    # postgresql://... selects PostgreSQL; sqlite:///file.db is the same as `path`. Left out of
    # the repr: it may hold a password.
    url: str | None = Field(default=None, repr=False)
    # "full" = synchronous=FULL: a caller told "stored" must survive power loss.
    durability: Literal["full", "normal"] = "full"
    retention: PositiveDuration = 30 * _DAY
    # PostgreSQL connections per process (the enqueue group commit needs only one).
    pool_size: Annotated[int, _int_field(1, 1000)] = 10
    # PostgreSQL: how long an operation is tried again through a dropped connection or a
    # restart before it fails with StoreError (a standby daemon then keeps waiting).
    retry_for: PositiveDuration = 60.0

    @field_validator("path", mode="before")
    @classmethod
    def _check_path(cls, value: Any) -> Any:
        if isinstance(value, Path) or (isinstance(value, str) and value.strip()):
            return value
        raise ValueError(f'expected a file path like "hybrid-router.db", got {_show(value)}')

    @field_validator("url", mode="before")
    @classmethod
    def _check_url(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise ValueError(_STORE_URL_FORM)
        problem = store_url_problem(value.strip())
        if problem is not None:
            where = store_url_host_port(value.strip())
            raise ValueError(f"{problem} (for {where})" if where else problem)
        return value.strip()

    @model_validator(mode="after")
    def _sqlite_url(self) -> StoreSettings:
        if self.url is not None and self.url.startswith("sqlite://"):
            # sqlite:///relative.db and sqlite:////absolute.db, as SQLAlchemy spells them.
            object.__setattr__(self, "path", Path(self.url[len("sqlite:///") :]).expanduser())
            object.__setattr__(self, "url", None)
        return self

    @property
    def engine(self) -> Literal["sqlite", "postgresql"]:
        return "postgresql" if self.url is not None else "sqlite"

    @property
    def location(self) -> str:
        """Where the store is, for messages: the file, or the URL without its password."""
        return redacted_store_url(self.url) if self.url is not None else str(self.path)


class BatchSettings(BaseModel):
    """Limits and timing of Message Batches."""

    model_config = _FROZEN

    max_requests: Annotated[int, _int_field(1, BATCH_MAX_REQUESTS)] = BATCH_MAX_REQUESTS
    max_bytes: Annotated[int, BeforeValidator(_size(1, BATCH_MAX_BYTES))] = BATCH_MAX_BYTES
    poll_interval: PositiveDuration = 30.0
    poll_max_interval: PositiveDuration = 600.0
    turnaround_prior: PositiveDuration = 3600.0
    turnaround_percentile: Annotated[float, BeforeValidator(_fraction)] = 0.95
    deadline_margin: Duration = 300.0
    # Interval trigger given to batch classes that declare no trigger at all.
    flush_interval: PositiveDuration = 300.0
    # How long a batch whose create answer was lost may still be being created by another
    # process; past it the router lists batches to adopt it or resubmits. Keep it above
    # [anthropic] timeout when several inline flushers share a database.
    reconcile_grace: PositiveDuration = 900.0

    @model_validator(mode="after")
    def _check_poll(self) -> BatchSettings:
        if self.poll_max_interval < self.poll_interval:
            raise _Problems(
                [
                    (
                        ("poll_max_interval",),
                        "expected a duration of at least poll_interval "
                        f'("{format_duration(self.poll_interval)}"), '
                        f'got "{format_duration(self.poll_max_interval)}"',
                    )
                ]
            )
        return self


class RouterSettings(BaseModel):
    """Process-level routing settings."""

    model_config = _FROZEN

    flusher: Literal["inline", "daemon"] = "inline"
    default_class: ClassName = "realtime"
    watch_interval: PositiveDuration = 0.25
    # The daemon's lease on the database: a crashed daemon's lease lapses after this long
    # (sooner on the same host, where a dead holder is recognised at once).
    lease_ttl: PositiveDuration = 15.0
    # How often the scheduler delivers the webhook outbox ([[webhooks]]).
    webhook_interval: PositiveDuration = 1.0


LISTEN_FORM = 'an address like "127.0.0.1:9464" (host:port; IPv6 in brackets, "[::1]:9464")'


def parse_listen_address(text: object) -> tuple[str, int]:
    """`host:port` as (host, port); port 0 means any free port. ValueError names the form."""
    if isinstance(text, str):
        host, sep, port = text.strip().rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            host = ""  # an IPv6 address must be bracketed, or its last group reads as the port
        if sep and host and port.isdigit() and int(port) <= 65535:
            return host, int(port)
    raise ValueError(f"expected {LISTEN_FORM}, got {_show(text)}")


def is_loopback(host: str) -> bool:
    """True for "localhost" and loopback IP addresses (127.0.0.0/8, ::1); other names are not
    resolved, so they count as reachable from other hosts."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class DaemonSettings(BaseModel):
    """The daemon's own settings: where it serves /metrics, /healthz and /readyz."""

    model_config = _FROZEN

    metrics: str | None = None  # "host:port"; none by default
    # The endpoints show the store's figures: a non-loopback address must be asked for.
    metrics_public: StrictBool = False

    @field_validator("metrics", mode="before")
    @classmethod
    def _check_metrics(cls, value: Any) -> Any:
        if value is None:
            return None
        parse_listen_address(value)
        return str(value).strip()

    @model_validator(mode="after")
    def _check_public(self) -> DaemonSettings:
        if self.metrics is not None and not self.metrics_public:
            host, _ = parse_listen_address(self.metrics)
            if not is_loopback(host):
                raise _Problems(
                    [
                        (
                            ("metrics",),
                            f"{self.metrics} is not a loopback address, so other hosts could read the"
                            " metrics; expected an address like 127.0.0.1:9464, or metrics_public = true",
                        )
                    ]
                )
        return self


_WEBHOOK_URL_FORM = 'an https URL like "https://example.com/hooks/hybrid-router"'
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def event_glob_matches(glob: str, event: str) -> bool:
    """True when an `events` glob takes `event`. Per-request events are opt-in: only a glob
    that spells out their "request." prefix takes them ("request.*"), never a bare "*"."""
    import fnmatch

    if event in event_names.PER_REQUEST and not glob.startswith("request."):
        return False
    return fnmatch.fnmatchcase(event, glob)


class WebhookSettings(BaseModel):
    """One `[[webhooks]]` endpoint: where events go, which ones, and the environment variable
    holding its signing secret (the secret itself is never in the file)."""

    model_config = _FROZEN

    url: str
    events: tuple[str, ...] = ("*",)
    tags: tuple[str, ...] = ()  # globs: events about a tag go only for matching tags
    keys: tuple[str, ...] = ()  # globs: which keyed requests get request.completed/failed
    secret_env: str
    timeout: PositiveDuration = 10.0
    allow_http: StrictBool = False
    # Retries: exponential backoff with jitter from retry_initial, each wait at most
    # retry_max, until give_up_after from the first attempt.
    retry_initial: PositiveDuration = 5.0
    retry_max: PositiveDuration = 3600.0
    give_up_after: PositiveDuration = _DAY

    @field_validator("url", mode="before")
    @classmethod
    def _check_url(cls, value: Any) -> Any:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"expected {_WEBHOOK_URL_FORM}, got {_show(value)}")
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected {_WEBHOOK_URL_FORM} (http or https), got {_show(value)}")
        return value.strip()

    @field_validator("events", mode="before")
    @classmethod
    def _check_events(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple) or not value or not all(isinstance(v, str) for v in value):
            raise ValueError(
                f'expected a list of event names or globs, like ["tag.drained"], got {_show(value)}'
            )
        for glob in value:
            if not any(event_glob_matches(glob, name) for name in event_names.EVENT_TYPES):
                known = ", ".join(event_names.EVENT_TYPES)
                close = difflib.get_close_matches(glob, event_names.EVENT_TYPES, n=1)
                hint = f' (did you mean "{close[0]}"?)' if close else ""
                raise ValueError(f'unknown event "{glob}"{hint}; expected one of: {known}, or a glob of them')
        return tuple(value)

    @field_validator("tags", "keys", mode="before")
    @classmethod
    def _check_globs(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f'expected a list of globs, like ["nightly-*"], got {_show(value)}')
        return tuple(value)

    @field_validator("secret_env", mode="before")
    @classmethod
    def _check_secret_env(cls, value: Any) -> Any:
        if not isinstance(value, str) or not _ENV_NAME.fullmatch(value):
            raise ValueError(
                f'expected the name of an environment variable, like "HOOK_SECRET", got {_show(value)}'
            )
        if not os.environ.get(value):
            raise ValueError(
                f"the environment variable {value} is not set (it holds this endpoint's signing secret,"
                ' a "whsec_..." string)'
            )
        return value

    @model_validator(mode="after")
    def _check_scheme(self) -> WebhookSettings:
        parts = urlsplit(self.url)
        if parts.scheme == "http" and not self.allow_http and not is_loopback(parts.hostname or ""):
            raise _Problems(
                [
                    (
                        ("url",),
                        f"{self.url} is plain http to another host; expected an https URL,"
                        " or allow_http = true",
                    )
                ]
            )
        return self

    def secret(self) -> str:
        """The signing secret, read from the environment now (never stored)."""
        value = os.environ.get(self.secret_env)
        if not value:
            raise ConfigError(f"webhook {self.url}: the environment variable {self.secret_env} is not set")
        return value

    def wants(self, event: str) -> bool:
        return any(event_glob_matches(glob, event) for glob in self.events)


_BATCH_ONLY = (
    "deadline",
    "every",
    "cron",
    "timezone",
    "max_pending",
    "max_pending_bytes",
    "max_wait",
    "on_deadline_risk",
    "max_attempts",
    "cache_ttl",
    "cache_group_wait",
    "cache_priming",
    "cache_prime_min",
)
_TRIGGERS = ("every", "cron", "max_pending", "max_pending_bytes", "max_wait")


class LatencyClass(BaseModel):
    """A named latency class: where its calls go and, for batch classes, when they flush."""

    model_config = _FROZEN

    name: str
    route: Literal["realtime", "batch"]
    deadline: OptionalPositiveDuration = None
    every: OptionalPositiveDuration = None
    cron: str | None = None
    timezone: str = "UTC"
    max_pending: Annotated[int | None, _int_field(1)] = None
    max_pending_bytes: Annotated[int | None, BeforeValidator(_size(1, 10**15))] = None
    max_wait: OptionalPositiveDuration = None
    on_deadline_risk: Literal["escalate", "fail"] = "escalate"
    max_attempts: Annotated[int, _int_field(1, 100)] = 3
    on_rate_limit: Literal["fail", "defer"] = "fail"
    defer_class: OptionalClassName = None
    # Prompt caching of deferred requests that mark a prefix (router/grouping.py): "1h" sends
    # their cache marks with the 1-hour TTL (the stored request is left as it was), "keep"
    # as the caller wrote them. A young prefix group may wait `cache_group_wait` for more
    # members; a cold group of `cache_prime_min` requests or more first sends one (priming)
    # when `cache_priming = "batch"`. Neither ever delays a request past its deadline.
    cache_ttl: Literal["1h", "keep"] = "1h"
    cache_group_wait: OptionalPositiveDuration = None
    cache_priming: Literal["batch", "off"] = "batch"
    cache_prime_min: Annotated[int, _int_field(2, 100_000)] = 20

    @property
    def is_batch(self) -> bool:
        """True when calls of this class go through Message Batches."""
        return self.route == "batch"

    @field_validator("timezone", mode="before")
    @classmethod
    def _check_timezone(cls, value: Any) -> Any:
        try:
            if isinstance(value, str) and value:
                zoneinfo.ZoneInfo(value)
                return value
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
        raise ValueError(f'expected an IANA time zone like "UTC" or "Europe/Paris", got {_show(value)}')

    @field_validator("cron", mode="before")
    @classmethod
    def _check_cron_type(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip()):
            return value
        raise ValueError(f'expected a 5-field cron expression like "0 2 * * *", got {_show(value)}')

    @model_validator(mode="after")
    def _check_class(self) -> LatencyClass:
        problems: list[Problem] = []
        if self.route == "realtime":
            batch_keys = [k for k in _BATCH_ONLY if k in self.model_fields_set]
            if batch_keys:
                problems.append(
                    (
                        (),
                        f"a realtime class cannot set batch-only keys ({', '.join(batch_keys)}); "
                        'expected route = "batch" or those keys removed',
                    )
                )
            if self.on_rate_limit == "defer" and self.defer_class is None:
                problems.append(
                    (
                        ("defer_class",),
                        'on_rate_limit = "defer" needs defer_class: expected the name of a batch class',
                    )
                )
            if self.defer_class is not None and self.on_rate_limit != "defer":
                problems.append(
                    (
                        ("defer_class",),
                        'only used with on_rate_limit = "defer"; expected it removed or that setting',
                    )
                )
        else:
            if self.deadline is None:
                problems.append(
                    (
                        ("deadline",),
                        f'a batch class requires a deadline; expected {DURATION_FORM}, at least "1m"',
                    )
                )
            elif self.deadline < _MIN_DEADLINE:
                problems.append(
                    (
                        ("deadline",),
                        f'expected {DURATION_FORM}, at least "1m", got "{format_duration(self.deadline)}"',
                    )
                )
            if self.on_rate_limit != "fail" or self.defer_class is not None:
                keys = [k for k in ("on_rate_limit", "defer_class") if k in self.model_fields_set]
                problems.append(
                    (
                        (),
                        f"a batch class cannot set realtime-only keys ({', '.join(keys)}); "
                        "expected them removed",
                    )
                )
            if self.cron is not None:
                problem = _cron_problem(self.cron, self.timezone)
                if problem is not None:
                    problems.append((("cron",), problem))
        if problems:
            raise _Problems(problems)
        return self

    @property
    def has_trigger(self) -> bool:
        """True when at least one flush trigger is set."""
        return any(getattr(self, key) is not None for key in _TRIGGERS)


def _cron_problem(expression: str, timezone: str) -> str | None:
    from .cron import cron_trigger  # imports APScheduler, which only a cron class needs

    try:
        cron_trigger(expression, timezone=timezone)
    except (ValueError, KeyError, zoneinfo.ZoneInfoNotFoundError) as exc:
        return (
            'expected a 5-field cron expression like "0 2 * * *" (minute hour day month weekday,'
            f" weekday 0 or 7 = Sunday): {exc}"
        )
    return None


PROVIDER_NAMES = ("anthropic", "openai")  # the providers a rule's `provider` glob may match


class Rule(BaseModel):
    """Maps calls to a class when no latency is given, by tag, model and provider globs: a rule
    matches when every glob it gives matches, and gives at least one."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    tag: Annotated[str | None, BeforeValidator(_text('a tag glob like "nightly-*"'))] = None
    model: Annotated[str | None, BeforeValidator(_text('a model glob like "claude-haiku-*"'))] = None
    provider: Annotated[str | None, BeforeValidator(_text('a provider glob like "openai"'))] = None
    # `class` is a Python keyword: the attribute and keyword argument are `class_`, the
    # TOML key is `class` (a validation alias, so typed code can still call Rule(class_=...)).
    class_: ClassName = Field(validation_alias="class", serialization_alias="class")

    @model_validator(mode="after")
    def _matches_something(self) -> Rule:
        if self.tag is None and self.model is None and self.provider is None:
            raise _Problems(
                [
                    (
                        ("tag",),
                        'required key is missing; expected a tag glob like "nightly-*"'
                        " (or a model or provider glob: a rule needs at least one)",
                    )
                ]
            )
        if self.provider is not None and not any(fnmatchcase(p, self.provider) for p in PROVIDER_NAMES):
            names = ", ".join(f'"{p}"' for p in PROVIDER_NAMES)
            problem = f"matches no provider; expected a glob matching one of: {names}"
            raise _Problems([(("provider",), problem)])
        return self


class ModelPrice(BaseModel):
    """USD per million tokens for one model; cache rates default to the published multipliers."""

    model_config = _FROZEN

    input: Price
    output: Price
    cache_write_5m: OptionalPrice = None
    cache_write_1h: OptionalPrice = None
    cache_read: OptionalPrice = None
    # The shortest prefix the API caches for this model; shorter ones are silently not cached.
    # None: the bundled table's figure (router/pricing.py), if it has one.
    min_cacheable_tokens: Annotated[int | None, _int_field(1, 1_000_000)] = None

    @property
    def effective_cache_write_5m(self) -> float:
        """Cache write with the 5-minute TTL: 1.25 x input unless set."""
        return self.cache_write_5m if self.cache_write_5m is not None else self.input * 1.25

    @property
    def effective_cache_write_1h(self) -> float:
        """Cache write with the 1-hour TTL: 2 x input unless set."""
        return self.cache_write_1h if self.cache_write_1h is not None else self.input * 2.0

    @property
    def effective_cache_read(self) -> float:
        """Cache read: 0.1 x input unless set."""
        return self.cache_read if self.cache_read is not None else self.input * 0.1


def _default_classes() -> dict[str, LatencyClass]:
    return {
        "realtime": LatencyClass(name="realtime", route="realtime"),
        "hourly": LatencyClass(name="hourly", route="batch", deadline=3600.0, every=60.0),
        "daily": LatencyClass(name="daily", route="batch", deadline=_DAY, every=900.0),
        "weekly": LatencyClass(name="weekly", route="batch", deadline=7 * _DAY, every=3600.0),
    }


# --------------------------------------------------------------------------- root


class RouterConfig(BaseModel):
    """The whole configuration; build it with `load_config`, `from_toml_text` or `default`."""

    model_config = _FROZEN

    anthropic: AnthropicSettings = Field(default_factory=AnthropicSettings)
    providers: ProvidersSettings = Field(default_factory=ProvidersSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    router: RouterSettings = Field(default_factory=RouterSettings)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    classes: Mapping[str, LatencyClass] = Field(default_factory=_default_classes)
    rules: tuple[Rule, ...] = ()
    pricing: Mapping[str, ModelPrice] = Field(default_factory=dict)
    webhooks: tuple[WebhookSettings, ...] = ()
    source: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _fill_class_names(cls, data: Any) -> Any:
        # The class name is its table key; `realtime` always exists so that explicit
        # latency="realtime" works under every policy file.
        if isinstance(data, Mapping) and isinstance(data.get("classes"), Mapping):
            classes: dict[Any, Any] = {"realtime": {"name": "realtime", "route": "realtime"}}
            for key, value in data["classes"].items():
                if isinstance(value, Mapping) and "name" not in value:
                    value = {**value, "name": key}
                classes[key] = value
            data = {**data, "classes": classes}
        return data

    @model_validator(mode="after")
    def _check_references(self) -> RouterConfig:
        problems: list[Problem] = []
        names = sorted(self.classes)
        known = f"expected one of: {', '.join(names)}"

        def unknown(name: str) -> str:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            return f'unknown class "{name}"; {known}{hint}'

        for key, latency_class in self.classes.items():
            if not _CLASS_NAME.fullmatch(key):
                problems.append((("classes", key), "expected a class name of letters, digits, '_' or '-'"))
            if latency_class.name != key:
                problems.append(
                    (("classes", key), f'class is named "{latency_class.name}" but keyed "{key}"')
                )
            if latency_class.defer_class is not None:
                target = self.classes.get(latency_class.defer_class)
                if target is None:
                    problems.append((("classes", key, "defer_class"), unknown(latency_class.defer_class)))
                elif not target.is_batch:
                    problems.append(
                        (
                            ("classes", key, "defer_class"),
                            f'"{latency_class.defer_class}" routes realtime; '
                            "expected the name of a batch class",
                        )
                    )
        if self.classes["realtime"].route != "realtime":
            problems.append(
                (("classes", "realtime", "route"), 'expected "realtime": this class is never deferred')
            )
        if self.router.default_class not in self.classes:
            problems.append((("router", "default_class"), unknown(self.router.default_class)))
        for index, rule in enumerate(self.rules):
            if rule.class_ not in self.classes:
                problems.append((("rules", index, "class"), unknown(rule.class_)))
        if problems:
            raise _Problems(problems)

        # A batch class with no trigger would never flush; give it the interval trigger.
        if any(c.is_batch and not c.has_trigger for c in self.classes.values()):
            filled = {
                key: c.model_copy(update={"every": self.batch.flush_interval})
                if c.is_batch and not c.has_trigger
                else c
                for key, c in self.classes.items()
            }
            # Still inside construction: nobody holds this instance yet, so bypassing
            # `frozen` here cannot be observed.
            object.__setattr__(self, "classes", filled)
        return self

    # ----------------------------------------------------------------- constructors

    @classmethod
    def default(cls, store_path: str | Path = "hybrid-router.db") -> RouterConfig:
        """The configuration used when there is no file: the four standard classes."""
        base_url = os.environ.get("ANTHROPIC_BASE_URL") or None
        return cls(anthropic=AnthropicSettings(base_url=base_url), store=StoreSettings(path=Path(store_path)))

    @classmethod
    def from_toml_text(cls, text: str, source: str | os.PathLike[str] | None = None) -> RouterConfig:
        """Parse and validate TOML text; `source` names the file in errors and anchors relative paths."""
        source_path = Path(source) if source is not None else None
        where = str(source_path) if source_path is not None else "<config>"
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: invalid TOML: {exc}") from None

        problems: list[Problem] = []
        data = _check_keys(raw, problems)
        anthropic = data.setdefault("anthropic", {})
        url_from_env = False
        if isinstance(anthropic, dict) and "base_url" not in anthropic:
            env_url = os.environ.get("ANTHROPIC_BASE_URL")
            if env_url:
                anthropic["base_url"] = env_url
                url_from_env = True
        store = data.setdefault("store", {})
        # The default path too is relative to the file, so a policy directory is self-contained.
        store_path = store.setdefault("path", "hybrid-router.db") if isinstance(store, dict) else None
        if isinstance(store_path, str) and store_path.strip():
            path = Path(store_path).expanduser()
            if not path.is_absolute() and source_path is not None:
                # Absolute, so that a later chdir cannot point the router at another database.
                path = (source_path.parent / path).absolute()
            store["path"] = path
        data["source"] = source_path

        config: RouterConfig | None = None
        try:
            config = cls.model_validate(data)
        except ValidationError as exc:
            for key_path, message in _pydantic_problems(exc):
                if url_from_env and key_path == ("anthropic", "base_url"):
                    message = f"(taken from the ANTHROPIC_BASE_URL environment variable) {message}"
                problems.append((key_path, message))
        if problems or config is None:
            raise ConfigError(_render_problems(where, problems)) from None
        return config

    # ----------------------------------------------------------------- overrides

    def with_store(self, path: str | os.PathLike[str]) -> RouterConfig:
        """A copy storing requests at `path`: a file, or a store URL (postgresql://, sqlite:///)."""
        if isinstance(path, str) and "://" in path:
            settings = {**self.store.model_dump(), "url": path}
            return self.model_copy(update={"store": StoreSettings.model_validate(settings)})
        return self.model_copy(
            update={"store": self.store.model_copy(update={"path": Path(path), "url": None})}
        )

    def with_base_url(self, url: str | None) -> RouterConfig:
        """A copy talking to `url` (None: the SDK default)."""
        settings = AnthropicSettings.model_validate({**self.anthropic.model_dump(), "base_url": url})
        return self.model_copy(update={"anthropic": settings})

    def with_overrides(
        self,
        *,
        store_path: str | os.PathLike[str] | None = None,
        base_url: str | None = None,
        flusher: Literal["inline", "daemon"] | None = None,
    ) -> RouterConfig:
        """A copy with the given settings replaced; arguments left as None keep their value."""
        config = self
        if store_path is not None:
            config = config.with_store(store_path)
        if base_url is not None:
            config = config.with_base_url(base_url)
        if flusher is not None:
            router = config.router.model_copy(update={"flusher": flusher})
            config = config.model_copy(update={"router": router})
        return config

    def latency_class(self, name: str) -> LatencyClass:
        """The class called `name` (KeyError if there is none)."""
        return self.classes[name]


def load_config(path: str | os.PathLike[str]) -> RouterConfig:
    """Load and validate a TOML config file; raises ConfigError naming the file, key and expected form."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{file}: expected a TOML file, found a directory") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: expected UTF-8 TOML text: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read config file: {exc.strerror or exc}") from None
    return RouterConfig.from_toml_text(text, file)


# --------------------------------------------------------------------------- key checking


def _field_keys(model: type[BaseModel], *, exclude: tuple[str, ...] = ()) -> tuple[str, ...]:
    keys = (
        info.validation_alias if isinstance(info.validation_alias, str) else (info.alias or name)
        for name, info in model.model_fields.items()
    )
    return tuple(key for key in keys if key not in exclude)


_SECTIONS: dict[str, type[BaseModel]] = {
    "anthropic": AnthropicSettings,
    "store": StoreSettings,
    "batch": BatchSettings,
    "router": RouterSettings,
    "daemon": DaemonSettings,
}
_TOP_KEYS = (*_SECTIONS, "providers", "classes", "rules", "pricing", "webhooks")
_PROVIDER_SECTIONS: dict[str, type[BaseModel]] = {"openai": OpenAISettings}
_OPENAI_SECRET_HINT = (
    "the API key is never read from the config file; remove this key and set the "
    "OPENAI_API_KEY environment variable instead"
)


def _unknown_key(path: tuple[PathPart, ...], key: str, valid: Iterable[str]) -> Problem:
    if key.lower() in _SECRET_KEYS:
        return (*path, key), _SECRET_HINT
    options = sorted(valid)
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.6)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    return (*path, key), f"unknown key{hint}; expected one of: {', '.join(options)}"


def _filter_table(
    table: dict[str, Any],
    path: tuple[PathPart, ...],
    valid: tuple[str, ...],
    problems: list[Problem],
) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, value in table.items():
        if key in valid:
            kept[key] = value
        else:
            problems.append(_unknown_key(path, key, valid))
    return kept


def _check_keys(raw: dict[str, Any], problems: list[Problem]) -> dict[str, Any]:
    """Drop unknown keys from the parsed TOML, recording one problem (with a suggestion) for each.

    Dropping them lets pydantic report the remaining problems in the same message; the
    values of unknown keys are never echoed, since one of them may be a secret.
    """
    data = _filter_table(raw, (), _TOP_KEYS, problems)
    for section, model in _SECTIONS.items():
        if isinstance(data.get(section), dict):
            data[section] = _filter_table(data[section], (section,), _field_keys(model), problems)
    providers = data.get("providers")
    if isinstance(providers, dict):
        providers = _filter_table(providers, ("providers",), tuple(_PROVIDER_SECTIONS), problems)
        for name, model in _PROVIDER_SECTIONS.items():
            table = providers.get(name)
            if not isinstance(table, dict):
                continue
            found: list[Problem] = []
            providers[name] = _filter_table(table, ("providers", name), _field_keys(model), found)
            # A key in [providers.openai] names the OpenAI key's variable, not Anthropic's.
            problems.extend((path, _OPENAI_SECRET_HINT if m == _SECRET_HINT else m) for path, m in found)
        data["providers"] = providers
    for key, model in (("classes", LatencyClass), ("pricing", ModelPrice)):
        if isinstance(data.get(key), dict):
            valid = _field_keys(model, exclude=("name",))
            data[key] = {
                name: _filter_table(table, (key, name), valid, problems) if isinstance(table, dict) else table
                for name, table in data[key].items()
            }
    for key, model in (("rules", Rule), ("webhooks", WebhookSettings)):
        if isinstance(data.get(key), list):
            valid = _field_keys(model)
            data[key] = [
                _filter_table(table, (key, index), valid, problems) if isinstance(table, dict) else table
                for index, table in enumerate(data[key])
            ]
    return data


# --------------------------------------------------------------------------- messages

_MISSING_FORMS = {
    "route": 'expected "realtime" or "batch"',
    "input": "expected a price in USD per million tokens, a number like 3.0",
    "output": "expected a price in USD per million tokens, a number like 15.0",
    "tag": 'expected a tag glob like "nightly-*"',
    "class": 'expected the name of a class, like "daily"',
    "url": f"expected {_WEBHOOK_URL_FORM}",
    "secret_env": (
        'expected the name of the environment variable holding the signing secret, like "HOOK_SECRET"'
    ),
}
_TABLE_FORMS = {
    "classes": 'expected a table of classes, like [classes.daily] with route = "batch"',
    "rules": 'expected an array of tables, written [[rules]] with tag = "..." and class = "..."',
    "pricing": 'expected a table of model prices, like [pricing."claude-sonnet-4-5"]',
    "webhooks": 'expected an array of tables, written [[webhooks]] with url = "..." and secret_env = "..."',
}


def _pydantic_problems(exc: ValidationError) -> list[Problem]:
    problems: list[Problem] = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        ctx = error.get("ctx") or {}
        cause = ctx.get("error")
        kind = error["type"]
        if isinstance(cause, _Problems):
            problems.extend(((*loc, *sub), message) for sub, message in cause.items)
            continue
        if isinstance(cause, ValueError):
            problems.append((loc, str(cause)))
            continue
        got = f", got {_show(error.get('input'))}"
        last = loc[-1] if loc else ""
        if kind == "missing":
            form = _MISSING_FORMS.get(str(last), "expected a value")
            message = f"required key is missing; {form}"
        elif kind == "literal_error":
            message = f"expected one of {str(ctx.get('expected', '')).replace(chr(39), chr(34))}{got}"
        elif kind in ("dict_type", "model_type", "model_attributes_type", "mapping_type"):
            if len(loc) == 1 and str(last) in _TABLE_FORMS:
                message = f"{_TABLE_FORMS[str(last)]}{got}"
            else:
                message = f"expected a table{got}"
        elif kind in ("tuple_type", "list_type"):
            form = _TABLE_FORMS["webhooks" if loc and loc[0] == "webhooks" else "rules"]
            message = f"{form}{got}"
        elif kind in ("string_type", "path_type"):
            message = f"expected a string{got}"
        elif kind == "extra_forbidden":
            message = "unknown key"
        else:
            message = f"{error['msg']}{got}"
        problems.append((loc, message))
    return problems


def _render_problems(where: str, problems: list[Problem]) -> str:
    lines = [f"{_format_path(path) or '(top level)'}: {message}" for path, message in problems]
    if len(lines) == 1:
        return f"{where}: {lines[0]}"
    return f"{where}: {len(lines)} problems:\n" + "\n".join(f"  {line}" for line in lines)
