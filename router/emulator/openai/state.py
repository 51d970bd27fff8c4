"""`OpenAIState`: the files, batches and prompt cache of the OpenAI side (`emu.openai`)."""

from __future__ import annotations

from collections.abc import Mapping

from router.emulator.clock import Clock
from router.emulator.config import EmulatorConfig
from router.emulator.openai.batches import OpenAIBatch, OpenAIBatchStore
from router.emulator.openai.chat import PrefixCache
from router.emulator.openai.files import FileStore, StoredFile

__all__ = ["OpenAIState"]


class OpenAIState:
    """Everything the OpenAI routes hold, on the emulator's clock and config."""

    def __init__(self, *, clock: Clock, config: EmulatorConfig, seed: int) -> None:
        self.cache = PrefixCache()
        self.file_store = FileStore(clock)
        self.batch_store = OpenAIBatchStore(
            clock=clock, config=config, files=self.file_store, cache=self.cache, seed=seed
        )

    @property
    def files(self) -> Mapping[str, StoredFile]:
        """Uploaded and batch-written files by id, oldest first, batches brought up to date first."""
        self.batch_store.refresh()
        return self.file_store.files

    @property
    def batches(self) -> Mapping[str, OpenAIBatch]:
        """Batches by id, oldest first, brought up to date with the clock."""
        self.batch_store.refresh()
        return self.batch_store.batches

    def end_batches(self) -> int:
        """Take every batch that is not final to its end now; returns how many."""
        return self.batch_store.end_all()
