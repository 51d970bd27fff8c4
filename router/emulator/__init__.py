"""A faithful local HTTP server of the Anthropic API and the OpenAI batch path, for the demo and tests.

```python
from router.emulator import Emulator, EmulatorClock

async with Emulator(clock=EmulatorClock(start=1_700_000_000.0), batch_seconds=60) as emu:
    client = anthropic.AsyncAnthropic(base_url=emu.url, api_key="test")
    ...
    emu.clock.advance(60)   # batches created before now show as ended
```

Replies and token counts are deterministic (see `router.emulator.replies`),
batches end on a controllable clock (`router.emulator.batches`), their requests are
processed in parallel waves against one prompt cache shared with the real-time lane
(``batch_parallelism``, default 150; 1 is one request at a time; see ``CACHING.md``
in this package), and faults can be
injected at seeded rates or on demand (`router.emulator.faults`). The same controls
are served over HTTP under ``/_emulator/`` for an emulator run as a subprocess
(``python -m router.emulator --port P``).

The same server answers the OpenAI SDK (``openai.AsyncOpenAI(base_url=emu.url + "/v1")``):
chat completions (SSE too), files and batches (`router.emulator.openai`), on the same
clock, seed, faults (endpoint names ``openai.*``) and journal; ``emu.openai`` holds its
files and batches, ``emu.config.openai`` its batch timings and input-file limits, and
``emu.end_batches()`` ends the batches of both.
"""

from __future__ import annotations

from router.emulator.batches import StoredBatch
from router.emulator.clock import Clock, EmulatorClock, SystemClock
from router.emulator.config import DEFAULT_BATCH_PARALLELISM, EmulatorConfig, OutcomeConfig
from router.emulator.emulator import DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_BATCH_REQUESTS, Emulator, serve
from router.emulator.faults import ENDPOINTS, FaultConfig, FaultRates, ForcedFault
from router.emulator.journal import JournalEntry
from router.emulator.openai.batches import OpenAIBatch
from router.emulator.openai.config import OpenAIConfig
from router.emulator.openai.files import StoredFile
from router.emulator.server import API_VERSIONS

__all__ = [
    "API_VERSIONS",
    "DEFAULT_BATCH_PARALLELISM",
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_MAX_BATCH_REQUESTS",
    "ENDPOINTS",
    "Clock",
    "Emulator",
    "EmulatorClock",
    "EmulatorConfig",
    "FaultConfig",
    "FaultRates",
    "ForcedFault",
    "JournalEntry",
    "OpenAIBatch",
    "OpenAIConfig",
    "OutcomeConfig",
    "StoredBatch",
    "StoredFile",
    "SystemClock",
    "serve",
]
