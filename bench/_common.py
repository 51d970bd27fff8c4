"""Shared helpers of the benchmarks: RSS sampling, medians, an emulator subprocess, request bodies,
and the store under test (an SQLite file or a PostgreSQL database on a throwaway server).

HYBRID_ROUTER_BENCH_CODE names another checkout whose `router` package is measured instead of
this one (bench_before_after.py runs bench_wake.py, which the older code lacks, on that code;
bench_ingest.py --before measures another checkout); the emulator and the sink stay this
checkout's, so both sides talk to the same server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
CODE = Path(os.environ.get("HYBRID_ROUTER_BENCH_CODE") or ROOT).resolve()
for _tree in dict.fromkeys((ROOT, CODE)):  # CODE ends up first
    if str(_tree) not in sys.path:
        sys.path.insert(0, str(_tree))

from router.logs import configure_logging  # noqa: E402

# As an application would: warnings only (the library logs debug events it must not pay for).
configure_logging("warning")

MiB = 1024 * 1024
MODEL = "claude-haiku-4-5"


def rss_bytes() -> int:
    """Current resident set size of this process (VmRSS)."""
    return _status_field("VmRSS:")


def hwm_bytes() -> int:
    """Peak resident set size of this process so far (VmHWM)."""
    return _status_field("VmHWM:")


def _status_field(name: str) -> int:
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(name.encode()):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{name} not in /proc/self/status")


class RssSampler:
    """Samples VmRSS in a thread every `interval` seconds; `peak` is the highest value seen.

    Use as a context manager around the measured code; `growth` is peak minus the RSS at entry.
    """

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.base = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self.base = rss_bytes()
        self.peak = self.base
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def growth(self) -> int:
        return self.peak - self.base


class CpuClock:
    """CPU seconds spent in the block by this process and, given the pid of a PostgreSQL
    postmaster on this machine, by every process of that server, connections the pool opens
    inside the block included (read from /proc; None without a postmaster).

    On a machine with 2 cores both sides of an ingest are busy at once, so their sum says how
    much work there was, which wall time alone does not.
    """

    def __init__(self, postmaster: int | None = None) -> None:
        self.postmaster = postmaster
        self.client = 0.0
        self.server: float | None = None
        self._started: tuple[float, dict[int, float]] = (0.0, {})

    def __enter__(self) -> CpuClock:
        self._started = (time.process_time(), self._server_now())
        return self

    def __exit__(self, *exc: object) -> None:
        client, server = self._started
        self.client = time.process_time() - client
        now = self._server_now()
        # A process started inside the block counts from zero; one gone before its end is lost.
        self.server = sum(cpu - server.get(pid, 0.0) for pid, cpu in now.items()) if now else None

    def _server_now(self) -> dict[int, float]:
        """CPU seconds so far of each child of the postmaster, by pid."""
        found = {}
        for entry in os.listdir("/proc") if self.postmaster is not None else ():
            if entry.isdigit() and (stat := _stat_of(int(entry))) is not None and stat[0] == self.postmaster:
                found[int(entry)] = stat[1]
        return found


def _stat_of(pid: int) -> tuple[int, float] | None:
    """(parent pid, user plus system CPU seconds so far) of a process, None if unreadable."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def server_parent(url: str) -> int | None:
    """The pid of the PostgreSQL postmaster behind `url` (the parent of a backend), None if the
    server is not on this machine."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        stat = _stat_of(int(await conn.fetchval("SELECT pg_backend_pid()")))
    finally:
        await conn.close()
    return None if stat is None else stat[0]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "inf"


def banner(title: str) -> None:
    print(f"\n### {title}", flush=True)
    print(f"machine: {os.cpu_count()} cpus, python {sys.version.split()[0]}", flush=True)
    if CODE != ROOT:
        print(f"code measured: {CODE}", flush=True)


def row(label: str, runs: Sequence[float], unit: str, fmt: str = "{:,.0f}") -> None:
    shown = ", ".join(fmt.format(v) for v in runs)
    print(f"  {label:<44} median {fmt.format(median(runs))} {unit}   (runs: {shown})", flush=True)


def emulator_process(*extra: str) -> contextlib.AbstractContextManager[str]:
    """Run `python -m router.emulator` in a subprocess (its CPU and memory are not the client's)."""
    return server_process([sys.executable, "-m", "router.emulator", "--port", "0", *extra])


def sink_process() -> contextlib.AbstractContextManager[str]:
    """Run bench/_sink.py: reads a batches.create body to the end and answers at once."""
    return server_process([sys.executable, str(ROOT / "bench" / "_sink.py")])


@contextlib.contextmanager
def server_process(argv: list[str]) -> Iterator[str]:
    """Run a server subprocess that prints `... listening on URL`; yields the URL."""
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if "listening on" in line:
                url = line.rsplit(" ", 1)[-1].strip()
                break
        if not url:
            raise RuntimeError(f"{argv} did not start")
        # Keep reading its output: a full pipe would block the server mid-benchmark.
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def params_of_size(i: int, size: int) -> dict[str, Any]:
    """Messages params whose JSON is about `size` bytes (distinct per i)."""
    head = f"Request {i}: classify the following text. "
    base = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": head}]}
    pad = max(0, size - len(json.dumps(base, separators=(",", ":"))))
    filler = ("lorem ipsum dolor sit amet " * (pad // 27 + 1))[:pad]
    base["messages"][0]["content"] = head + filler
    return base


def run_child(fn: Callable[..., Any], *args: Any) -> Any:
    """Run `fn(*args)` in a fresh spawned process and return its result (a picklable value)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)


@dataclass
class Timing:
    seconds: float
    rss_growth: int
    rss_peak: int

    def mib(self) -> float:
        return self.rss_growth / MiB


async def open_location(location: str) -> Any:
    """The store at `location`: a PostgreSQL URL, or an SQLite file (opened as the code under
    test opens one; the code before the engine seam has no `open_store`)."""
    from router.store import Store

    if "://" in location:
        from router.config import StoreSettings
        from router.store import open_store

        return await open_store(StoreSettings(url=location))
    return await Store.open(location)


async def build_store(
    location: str | Path, count: int, size: int, *, chunk: int = 5000, start: int = 0
) -> None:
    """A store (file or database) holding `count` pending requests of about `size` bytes of params each."""
    from router.store import NewRequest

    store = await open_location(str(location))
    try:
        now = time.time()
        for first in range(start, start + count, chunk):
            batch = []
            for i in range(first, min(first + chunk, start + count)):
                body = json.dumps(params_of_size(i, size), separators=(",", ":")).encode()
                batch.append(NewRequest(f"k{i}", "daily", None, MODEL, body, now, now + 86400))
            await store.enqueue_many(batch)
    finally:
        await store.close()


async def measured_flush(
    db: str, url: str, *, max_requests: int
) -> tuple[Any, dict[str, Any], dict[str, int]]:
    """Our side of the flush benchmarks: one `batcher.flush` (what the scheduler and the daemon
    call) of a prepared store, timed, with the flusher's RSS sampled.

    Returns the FlushReport, the figures (seconds, RSS growth, peak, base) and the state counts.
    """
    import anthropic

    from router import batcher

    store = await open_location(db)
    client = anthropic.AsyncAnthropic(base_url=url, api_key="bench-key", max_retries=0, timeout=600)
    try:
        from router.providers.anthropic.provider import AnthropicProvider

        api: Any = AnthropicProvider(client)
    except ImportError:  # the code before the provider interface takes the SDK client
        api = client
    try:
        with RssSampler() as rss:
            start = time.perf_counter()
            report = await batcher.flush(
                store,
                api,
                latencies=None,
                max_requests=max_requests,
                max_bytes=256_000_000,
                now=time.time(),
                first_poll_after=60.0,
            )
            seconds = time.perf_counter() - start
        counts = await store.state_counts()
    finally:
        await client.close()
        await store.close()
    figures = {"seconds": seconds, "growth": rss.growth, "peak": rss.peak, "base": rss.base}
    return report, figures, counts


def run_on_copy(master: str | Path, name: str, fn: Callable[..., Any], url: str) -> Any:
    """`fn(location, url)` in a fresh spawned process, on its own copy of the prepared store
    `master` (a file copied, or a database created from it as a template)."""
    if "://" in str(master):
        copy = copy_database(str(master), name)
        try:
            return run_async_child(fn, copy, url)
        finally:
            drop_database(copy)
    db = Path(master).with_name(f"{name}.db")
    shutil.copyfile(master, db)
    try:
        return run_async_child(fn, str(db), url)
    finally:
        db.unlink()


def report_time_and_memory(
    runs: dict[str, list[dict[str, Any]]], ours_label: str, sdk_label: str
) -> tuple[float, float, float, float]:
    """Print each side's time and peak RSS growth (runs "ours" and "sdk") and the ratios.

    Returns the medians: ours' time, the SDK's time, ours' growth and the SDK's, in MiB.
    """
    secs = {k: [r["seconds"] for r in v] for k, v in runs.items()}
    grow = {k: [r["growth"] / MiB for r in v] for k, v in runs.items()}
    row(f"ours: {ours_label}, time", secs["ours"], "s", "{:.2f}")
    row(f"SDK {sdk_label}, time", secs["sdk"], "s", "{:.2f}")
    row("ours: peak RSS growth", grow["ours"], "MiB", "{:.1f}")
    row("SDK: peak RSS growth", grow["sdk"], "MiB", "{:.1f}")
    t_ours, t_sdk = median(secs["ours"]), median(secs["sdk"])
    m_ours, m_sdk = median(grow["ours"]), median(grow["sdk"])
    print(f"  ratio time SDK / ours: {ratio(t_sdk, t_ours)};  memory SDK / ours: {ratio(m_sdk, m_ours)}")
    return t_ours, t_sdk, m_ours, m_sdk


def run_async_child(fn: Callable[..., Any], *args: Any) -> Any:
    """`asyncio.run(fn(*args))` in a fresh spawned process; returns its (picklable) result."""
    return run_child(_run_async, fn, *args)


def _run_async(fn: Callable[..., Any], *args: Any) -> Any:
    import asyncio

    return asyncio.run(fn(*args))


# ---------------------------------------------------------------------- engines

ENGINES = ("sqlite", "postgresql")


def engines_argument(parser: argparse.ArgumentParser) -> None:
    """`--engine sqlite|postgresql|both`; both by default where a PostgreSQL server can be had."""
    parser.add_argument(
        "--engine",
        choices=(*ENGINES, "both"),
        default=None,
        help="the store engine(s) to measure (default: both, or sqlite without PostgreSQL binaries)",
    )


def chosen_engines(choice: str | None) -> list[str]:
    if choice in ENGINES:
        return [choice]
    if choice is None and not postgres_available():
        print("  (PostgreSQL skipped: no server binaries; --engine sqlite to silence this)", flush=True)
        return ["sqlite"]
    return list(ENGINES)


def run_per_engine(doc: str, run: Callable[[str, int], object], *, repeats: int) -> int:
    """A script's main: `--engine` and `--repeats` from the command line, then `run(engine,
    repeats)` for each engine chosen."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    engines_argument(parser)
    parser.add_argument("--repeats", type=int, default=repeats)
    args = parser.parse_args()
    for engine in chosen_engines(args.engine):
        run(engine, args.repeats)
    return 0


@contextlib.contextmanager
def master_store(engine: str, name: str) -> Iterator[str]:
    """Where to prepare the store that each run copies: a file in a temporary directory, or a
    database on a throwaway PostgreSQL server (running until the block ends)."""
    with tempfile.TemporaryDirectory() as tmp:
        if engine != "postgresql":
            yield str(Path(tmp) / f"{name}.db")
            return
        with postgres() as server:
            yield server.create_database(name)


def postgres_available() -> bool:
    try:
        import asyncpg  # noqa: F401

        from tests.pgserver import available
    except ImportError:
        return False
    return available()


@contextlib.contextmanager
def postgres() -> Iterator[Any]:
    """A throwaway PostgreSQL server (tests/pgserver.py), or the one HYBRID_ROUTER_TEST_POSTGRES_URL names."""
    from tests.pgserver import postgres_server

    with postgres_server() as server:
        yield server


def copy_database(master: str, name: str) -> str:
    """A new database on `master`'s server, a copy of `master` (CREATE DATABASE ... TEMPLATE)."""
    parts = urlsplit(master)
    _admin(master, f'CREATE DATABASE "{name}" TEMPLATE "{parts.path.lstrip("/")}" STRATEGY FILE_COPY')
    return urlunsplit(parts._replace(path=f"/{name}"))


def drop_database(url: str) -> None:
    _admin(url, f'DROP DATABASE IF EXISTS "{urlsplit(url).path.lstrip("/")}" WITH (FORCE)')


def _admin(url: str, statement: str) -> None:
    """Run `statement` on the server's `postgres` database (CREATE/DROP DATABASE cannot run in the
    database they name)."""
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(urlunsplit(urlsplit(url)._replace(path="/postgres")))
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())
