"""The `Emulator`: a local Anthropic and OpenAI API server, its state, and `serve` for the CLI."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from types import TracebackType

from aiohttp import web

from router.emulator.batches import BatchStore, StoredBatch
from router.emulator.cache import PromptCache
from router.emulator.clock import Clock, SystemClock
from router.emulator.config import DEFAULT_BATCH_PARALLELISM, EmulatorConfig, OutcomeConfig
from router.emulator.faults import FaultConfig, FaultInjector
from router.emulator.journal import JournalEntry
from router.emulator.openai.state import OpenAIState
from router.emulator.server import build_app
from router.logs import get_logger

__all__ = ["DEFAULT_MAX_BATCH_BYTES", "DEFAULT_MAX_BATCH_REQUESTS", "Emulator", "serve"]

DEFAULT_MAX_BATCH_REQUESTS = 100_000
DEFAULT_MAX_BATCH_BYTES = 256_000_000

_log = get_logger(__name__)


class Emulator:
    """A faithful local HTTP server of the Anthropic Messages and Message Batches API, and of
    OpenAI's chat completions, files and batches (`emu.openai`).

    Use it in the client's own event loop (``async with Emulator() as emu``) or as a
    subprocess (``python -m router.emulator --port P``); the ``/_emulator/*`` admin
    routes expose the same controls over HTTP.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        batch_seconds: float = 3600.0,
        clock: Clock | None = None,
        seed: int = 0,
        api_key: str | None = None,
        *,
        faults: FaultConfig | None = None,
        outcomes: OutcomeConfig | None = None,
        max_batch_requests: int = DEFAULT_MAX_BATCH_REQUESTS,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        batch_parallelism: int = DEFAULT_BATCH_PARALLELISM,
    ) -> None:
        """`port=0` picks a free port; `clock=None` runs on real time; `api_key=None` accepts any key.

        `batch_parallelism` is the width of the waves a batch's requests are processed in
        (see `EmulatorConfig.batch_parallelism`); 1 processes them one after another.
        """
        self.host = host
        self.requested_port = port
        self.seed = seed
        self.api_key = api_key
        self.max_batch_requests = max_batch_requests
        self.max_batch_bytes = max_batch_bytes
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.config = EmulatorConfig(
            batch_seconds=batch_seconds,
            batch_parallelism=batch_parallelism,
            faults=faults if faults is not None else FaultConfig(),
            outcomes=outcomes if outcomes is not None else OutcomeConfig(),
        )
        self.journal: list[JournalEntry] = []
        """Every API request received, in order (the `/_emulator/*` admin routes are left out)."""
        self.journal_batches = False
        """Whether journal entries of batches.create list each request's custom_id and cache TTLs
        (off by default: a 100,000-request batch would keep 100,000 more tuples)."""
        self.cache = PromptCache()
        self._store = BatchStore(clock=self.clock, config=self.config, cache=self.cache, seed=seed)
        self._injector = FaultInjector(seed)
        self.openai = OpenAIState(clock=self.clock, config=self.config, seed=seed)
        """The OpenAI side: its files, batches and prompt cache (`emu.openai.batches`, ...)."""
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # -- runtime settings -------------------------------------------------------------------

    @property
    def batch_seconds(self) -> float:
        """Turnaround of batches created from now on."""
        return self.config.batch_seconds

    @batch_seconds.setter
    def batch_seconds(self, value: float) -> None:
        self.config.batch_seconds = value

    @property
    def batch_parallelism(self) -> int:
        """Width of the processing waves of batches created from now on (1: one request at a time)."""
        return self.config.batch_parallelism

    @batch_parallelism.setter
    def batch_parallelism(self, value: int) -> None:
        self.config.batch_parallelism = value

    @property
    def faults(self) -> FaultConfig:
        """Fault injection settings (mutable at runtime)."""
        return self.config.faults

    @faults.setter
    def faults(self, value: FaultConfig) -> None:
        self.config.faults = value

    @property
    def outcomes(self) -> OutcomeConfig:
        """Per-request batch outcome rates (mutable at runtime)."""
        return self.config.outcomes

    @outcomes.setter
    def outcomes(self, value: OutcomeConfig) -> None:
        self.config.outcomes = value

    # -- state --------------------------------------------------------------------------------

    @property
    def batches(self) -> Mapping[str, StoredBatch]:
        """Stored batches by id, oldest first, brought up to date with the clock."""
        self._store.refresh()
        return self._store.batches

    def end_batches(self) -> int:
        """End every batch not yet ended, Anthropic's and OpenAI's, now (processing their requests);
        returns how many."""
        return self._store.end_all() + self.openai.end_batches()

    # -- server -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port bound (known once started)."""
        if self._port is None:
            raise RuntimeError("the emulator is not running; call start() or use `async with`")
        return self._port

    @property
    def url(self) -> str:
        """Base URL to give the SDK, e.g. ``http://127.0.0.1:43210``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        """Bind the port and start answering."""
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.requested_port))
        except OSError:
            sock.close()
            raise
        runner = web.AppRunner(build_app(self), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(sock.getsockname()[1])

    async def stop(self) -> None:
        """Stop answering and release the port (state is kept)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "not started"
        return (
            f"Emulator({where}, batch_seconds={self.batch_seconds},"
            f" batch_parallelism={self.batch_parallelism}, seed={self.seed})"
        )


async def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    batch_seconds: float = 3600.0,
    seed: int = 0,
    *,
    api_key: str | None = None,
    clock: Clock | None = None,
    batch_parallelism: int = DEFAULT_BATCH_PARALLELISM,
) -> None:
    """Run an emulator until cancelled; prints ``hybrid-router emulator listening on URL`` once ready."""
    async with Emulator(
        host=host,
        port=port,
        batch_seconds=batch_seconds,
        clock=clock,
        seed=seed,
        api_key=api_key,
        batch_parallelism=batch_parallelism,
    ) as emu:
        _log.info(
            "emulator_listening",
            url=emu.url,
            batch_seconds=batch_seconds,
            batch_parallelism=batch_parallelism,
            seed=seed,
        )
        print(f"hybrid-router emulator listening on {emu.url}", flush=True)
        await asyncio.Event().wait()
