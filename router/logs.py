"""Logging: the library's loggers, and the output setup of the CLI and the daemon.

The library never configures logging. Its loggers are standard-library loggers named
``router.*`` (``router.client``, ``router.store.sqlite.store``, ...) wrapped by structlog, so the
application's `logging` configuration decides what is shown and where, as it does for
httpx and the anthropic SDK. The ``router`` logger carries a `logging.NullHandler`,
as the logging HOWTO advises for libraries: with no logging configured nothing prints, not
even warnings through `logging.lastResort`.

`configure_logging` is the application side, for the CLI, the daemon and small scripts.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog
from structlog.stdlib import ProcessorFormatter
from structlog.typing import EventDict, ExcInfo, Processor, WrappedLogger

__all__ = ["RouterLogger", "configure_logging", "get_logger", "reset_logging"]

ROOT = "router"
logging.getLogger(ROOT).addHandler(logging.NullHandler())

_HANDLER_NAME = "router.logs"
# structlog's method names (`exception` is an error with its traceback) to logging levels.
_LEVELS = {name.lower(): number for name, number in logging.getLevelNamesMapping().items()}
_LEVELS["exception"] = logging.ERROR


class RouterLogger(structlog.stdlib.BoundLogger):
    """A structlog logger over a `logging.Logger` that costs one level check when its level is off.

    Each call first asks the stdlib logger's cached `isEnabledFor`: a disabled call builds no
    event dict and runs no processor (about the cost of a disabled `logging.Logger.debug`).
    """

    def debug(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if self._logger.isEnabledFor(logging.DEBUG):
            return super()._proxy_to_logger("debug", event, *args, **kw)
        return None

    def info(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if self._logger.isEnabledFor(logging.INFO):
            return super()._proxy_to_logger("info", event, *args, **kw)
        return None

    def warning(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if self._logger.isEnabledFor(logging.WARNING):
            return super()._proxy_to_logger("warning", event, *args, **kw)
        return None

    warn = warning

    def error(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if self._logger.isEnabledFor(logging.ERROR):
            return super()._proxy_to_logger("error", event, *args, **kw)
        return None

    def exception(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if self._logger.isEnabledFor(logging.ERROR):
            kw.setdefault("exc_info", True)
            return super()._proxy_to_logger("exception", event, *args, **kw)
        return None

    def _proxy_to_logger(self, method_name: str, event: str | None = None, *args: Any, **kw: Any) -> Any:
        # The other methods (critical, log, the async ones) come here first.
        if not self._logger.isEnabledFor(_LEVELS[method_name]):
            return None
        return super()._proxy_to_logger(method_name, event, *args, **kw)


class _Event(dict[str, Any]):
    """An event dict as a log record's message.

    Plain `logging` formatters show ``str(record.msg)``: ``event key=value ...``. structlog's
    `ProcessorFormatter` copies the dict itself, so JSON output keeps every field typed.
    """

    _render = structlog.processors.LogfmtRenderer(bool_as_flag=False)

    def __str__(self) -> str:
        fields = {k: v for k, v in self.items() if k not in ("exc_info", "stack_info")}
        event = fields.pop("event", "")
        rest = self._render(None, "", fields) if fields else ""
        return f"{event} {rest}" if rest else str(event)


def _exc_info(value: object) -> ExcInfo | None:
    if isinstance(value, BaseException):
        return (type(value), value, value.__traceback__)
    if isinstance(value, tuple):
        return value
    if value:
        info = sys.exc_info()
        return info if info[0] is not None else None
    return None


# Frames of these files are the logging machinery, not the caller a record should name.
_MACHINERY = (os.path.dirname(structlog.__file__) + os.sep, __file__)


def _caller_stacklevel() -> int:
    """The `stacklevel` that makes a record's funcName, lineno and pathname the log call's.

    `logging` starts counting at the first frame outside itself: structlog's frame that
    calls the stdlib logger, two above this one (`_to_stdlib`, then `_process_event`).
    """
    frame = sys._getframe(3)
    level = 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_MACHINERY):
        frame = frame.f_back
        level += 1
    return level


def _to_stdlib(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
    """Hand the event to `logging`: the dict as the message (what `ProcessorFormatter.wrap_for_formatter`
    passes), `exc_info` as the record's own so that plain formatters print the traceback too,
    and the log call's place as the record's."""
    kwargs: dict[str, Any] = {"extra": {"_logger": logger, "_name": method_name}}
    # A logger class with a findCaller of its own (structlog's LoggerFactory installs one for
    # loggers created after it) finds the caller its own way: no stacklevel for it.
    if type(logger).findCaller is logging.Logger.findCaller:
        kwargs["stacklevel"] = _caller_stacklevel()
    if "exc_info" in event_dict:
        info = _exc_info(event_dict.pop("exc_info"))
        if info is not None:
            event_dict["exc_info"] = kwargs["exc_info"] = info
    return (_Event(event_dict),), kwargs


_PROCESSORS: list[Processor] = [structlog.contextvars.merge_contextvars, _to_stdlib]


def get_logger(name: str) -> RouterLogger:
    """The library's logger `name` (a module's ``__name__``), independent of `structlog.configure`."""
    return RouterLogger(logging.getLogger(name), _PROCESSORS, {})


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the `sys.stderr` of the moment: tests and daemons replace it."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.set_name(_HANDLER_NAME)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging(level: str = "warning", *, json: bool | None = None) -> None:
    """Log to stderr: JSON lines when not on a terminal (or when asked), readable lines otherwise.

    `level` applies to the ``router.*`` loggers; every other logger (apscheduler, httpx, the
    SDK, ...) shows warnings and above, or `level` if that is higher. Also routes the
    application's own ``structlog.get_logger()`` loggers to the same output. Calling it again
    replaces the previous setup.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    as_json = not sys.stderr.isatty() if json is None else json
    finish: list[Processor] = (
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
        if as_json
        else [structlog.dev.ConsoleRenderer(colors=False)]
    )
    handler = _StderrHandler()
    handler.setFormatter(
        ProcessorFormatter(
            processors=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                ProcessorFormatter.remove_processors_meta,
                *finish,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(numeric, logging.WARNING))
    logging.getLogger(ROOT).setLevel(numeric)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            _to_stdlib,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )


def reset_logging() -> None:
    """Undo `configure_logging` (for a program that runs the CLI in-process, such as the tests)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.setLevel(logging.WARNING)
    logging.getLogger(ROOT).setLevel(logging.NOTSET)
    structlog.reset_defaults()
