"""Lease takeover time of `hybrid-router daemon --standby` with the default lease (15 s).

    .venv/bin/python bench/bench_takeover.py [--rounds 3] [--lease-ttl 15s]

Two cases, each measured from the moment the active daemon stops driving to the moment the
standby's owner id is in the `leases` row:
- SIGKILL: the holder's process is gone; on the same host the standby sees it at its next look.
- SIGSTOP: the holder is alive but hung; only the lease's expiry can tell (about lease_ttl).
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def owner(db: Path) -> str | None:
    try:
        conn = sqlite3.connect(db, timeout=10)
        try:
            row = conn.execute("SELECT owner FROM leases WHERE name = 'driver'").fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return None
    return str(row[0]) if row else None


def wait_owner(db: Path, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        holder = owner(db)
        if holder is not None and f":{proc.pid}:" in holder:
            return time.monotonic()
        time.sleep(0.01)
    raise SystemExit(f"daemon {proc.pid} did not take the lease in {timeout}s")


def daemon(config: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ANTHROPIC_API_KEY": "bench", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "router.cli",
            "--config",
            str(config),
            "--log-level",
            "warning",
            "daemon",
            *extra,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lease-ttl", default="15s")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        emulator = subprocess.Popen(
            [sys.executable, "-m", "router.emulator", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert emulator.stdout is not None
        url = emulator.stdout.readline().decode().rsplit(" ", 1)[-1].strip().removeprefix("url=")
        config = Path(tmp) / "router.toml"
        config.write_text(
            f'[anthropic]\nbase_url = "{url}"\n[store]\npath = "router.db"\n'
            f'[router]\nflusher = "daemon"\nlease_ttl = "{args.lease_ttl}"\n',
            encoding="utf-8",
        )
        db = Path(tmp) / "router.db"
        results: dict[str, list[float]] = {"SIGKILL": [], "SIGSTOP": []}
        active = daemon(config)
        wait_owner(db, active)
        procs = [active]
        try:
            for _ in range(args.rounds):
                for how in ("SIGKILL", "SIGSTOP"):
                    standby = daemon(config, "--standby")
                    procs.append(standby)
                    time.sleep(3.0)  # let it start and settle into standby
                    stopped = time.monotonic()
                    active.send_signal(signal.SIGKILL if how == "SIGKILL" else signal.SIGSTOP)
                    if how == "SIGKILL":
                        active.wait()  # reaped, as a supervisor (systemd) would
                    results[how].append(wait_owner(db, standby) - stopped)
                    if how == "SIGSTOP":
                        active.send_signal(signal.SIGCONT)
                        code = active.wait(timeout=60)
                        assert code == 4, f"a woken daemon that lost its lease should exit 4, got {code}"
                    active = standby
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGCONT)
                    proc.terminate()
                    proc.wait()
            emulator.terminate()
            emulator.wait()
    print(f"lease_ttl {args.lease_ttl}, {args.rounds} rounds")
    for how, times in results.items():
        print(
            f"  takeover after {how}: median {statistics.median(times):.2f} s,"
            f" max {max(times):.2f} s ({', '.join(f'{t:.2f}' for t in times)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
