"""The examples run as a newcomer would run them: a subprocess, offline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quickstart_runs_offline_and_prints_both_replies() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "real time: Reply to: Summarise ticket #1" in done.stdout
    assert "batched: Reply to: Label: 'refund not received'" in done.stdout
