"""The Batch API's own JSONL shapes, in and out, so existing batch scripts can switch over.

In: one ``{"custom_id": ..., "params": {...}}`` per line (what `batches.create` takes);
the custom_id becomes the request's key. The whole file is checked before anything is
stored, so a bad line stores nothing; then it is read again and stored in chunks (one
transaction each), so a file of millions of lines never sits in memory.

Out: one ``{"custom_id": <the caller's key>, "result": {...}}`` per finished request, the
shape of a batch's results file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .errors import DeadlineError, InvalidRequestError, RouterError
from .params import ROUTER_KEYWORDS, check_key, check_tag
from .prefix import identify
from .providers.anthropic.params import batch_params, check_keywords, serialize
from .store import NewRequest, entries_budget, entry_bytes, states
from .store.idempotency import digest_of

if TYPE_CHECKING:
    from .client import Router
    from .config import LatencyClass

CHUNK = 1000  # lines per store transaction (and per key lookup)
MAX_REPORTED = 20  # bad lines listed before "... and N more"
_LINE_FIELDS = frozenset({"custom_id", "params"})
_API_RESULT_TYPES = frozenset({"succeeded", "errored", "canceled", "expired"})


class JsonlError(RouterError):
    """A requests file has bad lines; nothing from it was stored. `problems` are (line, message)."""

    def __init__(self, path: Path, problems: Sequence[tuple[int, str]], total: int) -> None:
        self.path = path
        self.problems = list(problems)
        self.total = total
        shown = [f"{path}:{line}: {message}" for line, message in self.problems]
        if total > len(self.problems):
            shown.append(f"... and {total - len(self.problems)} more bad line(s)")
        super().__init__(f"{total} bad line(s) in {path}; nothing was stored\n" + "\n".join(shown))


@dataclass
class EnqueueReport:
    lines: int = 0
    stored: int = 0  # new requests
    existing: int = 0  # custom_ids already stored with the same params (idempotent)
    escalated: int = 0  # stored but sent real time at once: no batch could meet their deadline
    classes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    key: str
    params: bytes
    model: str
    cls: LatencyClass


def _parse(router: Router, number: int, text: str, latency: str | None, tag: str | None) -> _Line:
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise InvalidRequestError(f"not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise InvalidRequestError(
            f'expected an object {{"custom_id": ..., "params": {{...}}}}, got {text[:40]!r}'
        )
    extra = sorted(set(obj) - _LINE_FIELDS)
    if extra:
        raise InvalidRequestError(f"unexpected field(s) {', '.join(extra)}; a line has custom_id and params")
    try:
        key = check_key(obj.get("custom_id"))
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"custom_id: {exc}") from None
    if key is None:
        raise InvalidRequestError("custom_id: this field is required")
    params = obj.get("params")
    if not isinstance(params, dict):
        raise InvalidRequestError(f"params: expected an object of Messages API fields, got {params!r:.40}")
    routing = sorted(set(params) & ROUTER_KEYWORDS)
    if routing:
        raise InvalidRequestError(
            f"params.{routing[0]}: not a Messages API field (use the --latency / --tag options)"
        )
    try:
        check_keywords(params)
        checked = batch_params(params)
        body = serialize(checked)
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"params.{exc}") from None
    cls = router.resolve_class(latency, tag, checked.get("model"))
    if cls.route != "batch":
        raise InvalidRequestError(
            f"class {cls.name!r} is real time; enqueue stores deferrable requests (pass --latency CLASS)"
        )
    frame = router.provider.batch_format
    limit = entries_budget(frame, router.config.batch.max_bytes)
    if entry_bytes(frame, 10**12, len(body)) > limit:
        raise InvalidRequestError(
            f"params are {len(body):,} bytes, more than fits in one batch"
            f" ({limit:,} bytes; [batch] max_bytes)"
        )
    return _Line(number, key, body, str(checked["model"]), cls)


def _request(line: _Line, tag: str | None, now: float) -> NewRequest:
    deadline = line.cls.deadline
    return NewRequest(
        key=line.key,
        latency=line.cls.name,
        tag=tag,
        model=line.model,
        params=line.params,
        created_at=now,
        deadline_at=now + deadline if deadline is not None else None,
        prefix=identify(line.params),
    )


def _existing(path: str | Path) -> Path:
    file = Path(path)
    if not file.is_file():
        raise RouterError(f"{file}: no such file")
    return file


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            yield number, raw.rstrip("\r\n")


def _chunks(
    path: Path, router: Router, latency: str | None, tag: str | None
) -> Iterator[list[_Line | tuple[int, str]]]:
    """Parsed lines in chunks; a bad line comes as (line number, problem)."""
    chunk: list[_Line | tuple[int, str]] = []
    for number, text in _lines(path):
        if not text.strip():
            chunk.append((number, "empty line (the format has one request per line, no blank lines)"))
        else:
            try:
                chunk.append(_parse(router, number, text, latency, tag))
            except InvalidRequestError as exc:
                chunk.append((number, str(exc)))
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def enqueue_file(
    router: Router,
    path: str | Path,
    *,
    latency: str | None = None,
    tag: str | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> EnqueueReport:
    """Store every request of a Batch API JSONL file, or none (raises JsonlError naming the bad lines).

    `progress(phase, lines)` is called after each chunk: phase "checking", then "storing"."""
    file = _existing(path)
    tag = check_tag(tag)
    if latency is not None:
        router.resolve_class(latency, tag, None)  # an unknown class is one error, not one per line
    problems: list[tuple[int, str]] = []
    bad = 0
    first_line: dict[str, int] = {}
    report = EnqueueReport()

    def problem(number: int, message: str) -> None:
        nonlocal bad
        bad += 1
        if len(problems) < MAX_REPORTED:
            problems.append((number, message))

    try:
        # Pass 1: check every line, and every key against the file and the store.
        for chunk in _chunks(file, router, latency, tag):
            good: list[_Line] = []
            for item in chunk:
                report.lines += 1
                if isinstance(item, tuple):
                    problem(*item)
                    continue
                seen = first_line.setdefault(item.key, item.number)
                if seen != item.number:
                    problem(item.number, f"custom_id {item.key!r} already used on line {seen}")
                    continue
                try:
                    router.deadline_risk(_request(item, tag, router.clock()), item.cls)
                except DeadlineError as exc:
                    problem(item.number, str(exc))
                    continue
                good.append(item)
            stored = await router.store.digests_by_key([line.key for line in good])
            for line in good:
                digest = stored.get(line.key)
                if digest is None:
                    continue
                if digest != digest_of(line.params):
                    problem(
                        line.number,
                        f"custom_id {line.key!r} is already stored with different params;"
                        " a key names one request",
                    )
            if progress is not None:
                progress("checking", report.lines)
        if bad:
            raise JsonlError(file, problems, bad)
        del first_line
        # Pass 2: store, one transaction per chunk.
        done = 0
        for chunk in _chunks(file, router, latency, tag):
            lines = [item for item in chunk if isinstance(item, _Line)]
            if len(lines) != len(chunk):
                raise RouterError(f"{file} changed while it was being stored; run the command again")
            now = router.clock()
            requests = [_request(line, tag, now) for line in lines]
            tickets = await router.store.enqueue_many(requests)
            escalate: list[int] = []
            for line, request, ticket in zip(lines, requests, tickets, strict=True):
                if isinstance(ticket, BaseException):
                    raise RouterError(f"{file}:{line.number}: {ticket} (stored by another process meanwhile)")
                if not ticket.created:
                    report.existing += 1
                    continue
                report.stored += 1
                report.classes[line.cls.name] = report.classes.get(line.cls.name, 0) + 1
                if router.deadline_risk(request, line.cls):
                    escalate.append(ticket.request_id)  # no batch can answer in time: real time now
                else:
                    router.after_enqueue(line.cls)
            if escalate:
                await router.escalate_now(escalate, now)
                report.escalated += len(escalate)
            done += len(chunk)
            if progress is not None:
                progress("storing", done)
    except UnicodeDecodeError as exc:
        raise RouterError(f"{file}: not UTF-8 text ({exc}); nothing was stored") from None
    if report.escalated:
        await router.drain_escalations()  # the caller may exit next: let the real-time sends finish
    return report


# ---------------------------------------------------------------------------- results out


@dataclass
class ExportReport:
    written: int = 0
    unfinished: dict[str, str] = field(default_factory=dict)  # key -> state, for requested keys only
    unknown: list[str] = field(default_factory=list)


def result_line(key: str, stored: bytes) -> bytes:
    """A stored result line (custom_id ``r<id>``) in the Batch API's shape under the caller's key.

    Router-specific outcomes (results lost past 29 days, a missed deadline) become `errored`
    with an `api_error` whose message says what happened, so batch scripts see known types.
    """
    line: dict[str, Any] = json.loads(stored)
    result = line.get("result") or {}
    kind = result.get("type")
    if kind not in _API_RESULT_TYPES:
        reason = result.get("reason") or f"the request ended as {kind!r}"
        result = {
            "type": "errored",
            "error": {"type": "error", "error": {"type": "api_error", "message": f"hybrid-router: {reason}"}},
        }
    return json.dumps({"custom_id": key, "result": result}, separators=(",", ":")).encode() + b"\n"


async def export_results(
    router: Router, out: IO[bytes], *, keys: Sequence[str] | None = None
) -> ExportReport:
    """Write finished results as Batch API result lines: every finished request, or those of `keys`."""
    report = ExportReport()
    store = router.store
    if keys is None:
        after = 0
        while True:
            rows = await store.finished_results(after=after, limit=CHUNK)
            if not rows:
                return report
            after = rows[-1].id
            finished = [result_line(row.key, row.line) for row in rows if row.line is not None]
            out.write(b"".join(finished))
            report.written += len(finished)
    wanted = list(dict.fromkeys(keys))
    for start in range(0, len(wanted), CHUNK):
        part = wanted[start : start + CHUNK]
        rows_by_key = await store.results_by_key(part)
        lines = []
        for key in part:
            found = rows_by_key.get(key)
            if found is None:
                report.unknown.append(key)
            elif found.state not in states.FINAL_STATES or found.line is None:
                report.unfinished[key] = found.state
            else:
                lines.append(result_line(key, found.line))
        out.write(b"".join(lines))
        report.written += len(lines)
    return report


def describe(report: EnqueueReport, path: Path | str) -> str:
    classes = ", ".join(f"{n} {name}" for name, n in sorted(report.classes.items())) or "none new"
    escalated = f"; {report.escalated} sent real time (no batch could meet their deadline)"
    return (
        f"stored {report.stored} request(s) from {path} ({classes});"
        f" {report.existing} already stored with the same params"
        f"{escalated if report.escalated else ''}"
    )
