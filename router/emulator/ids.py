"""Identifiers in the API's shapes (`msg_...`, `msgbatch_...`, `req_...`)."""

from __future__ import annotations

import random
import string

__all__ = ["new_id"]

_ALPHABET = string.ascii_letters + string.digits
# Seeded from os.urandom, not from the emulator seed: two emulator runs (say, before
# and after a crash test restarts one) must never hand out the same batch id.
_RANDOM = random.Random()


def new_id(prefix: str, length: int = 24) -> str:
    """A fresh random id such as ``msg_emu_01Ab...``."""
    return prefix + "".join(_RANDOM.choices(_ALPHABET, k=length))
