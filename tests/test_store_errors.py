"""Setup mistakes about the database get one StoreError line naming the file; a full disk loses
only what was not acknowledged; commands that read never create a database."""

from __future__ import annotations

import asyncio
import ctypes
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import anthropic
import pytest

from router import Router, RouterConfig, RouterError, StoreError, StoreFullError, UnknownKeyError
from router.cli import main
from router.emulator import Emulator
from router.providers.anthropic.params import serialize
from router.store import NewRequest, Store
from router.store.sqlite.schema import SCHEMA_VERSION
from tests.durability import query
from tests.engine import quiet_router
from tests.helpers import ask, reply_text, run_batches

REPO = Path(__file__).resolve().parents[1]


async def open_error(path: Path, *, create: bool = True) -> str:
    with pytest.raises(StoreError) as caught:
        await Store.open(path, create=create)
    return str(caught.value)


def test_store_errors_are_router_errors_the_cli_reports_in_one_line() -> None:
    assert issubclass(StoreFullError, StoreError) and issubclass(StoreError, RouterError)


# ---------------------------------------------------------------------------- opening


async def test_a_path_through_a_file_names_the_file_in_the_way(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("not a folder")
    for db in (blocker / "router.db", blocker / "deeper" / "router.db"):
        assert await open_error(db) == f"{db}: {blocker} is a file, not a folder"
    assert blocker.read_text() == "not a folder"


async def test_a_file_that_is_not_a_database_is_named_and_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "router.db"
    junk = b"these are not the bytes of a database\n" * 200
    db.write_bytes(junk)
    for create in (True, False):
        assert await open_error(db, create=create) == f"{db}: not a SQLite database (file is not a database)"
    assert db.read_bytes() == junk
    assert os.listdir(tmp_path) == ["router.db"]


async def test_a_corrupt_database_is_named(tmp_path: Path) -> None:
    db = tmp_path / "router.db"
    await (await Store.open(db)).close()
    with db.open("r+b") as f:  # the schema page, past the 100-byte header
        f.seek(100)
        f.write(b"\xff" * 3000)
    assert await open_error(db) == (
        f"{db}: the database is corrupt (database disk image is malformed); restore it from a backup"
    )


async def test_corruption_found_after_opening_is_named_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "router.db"
    store = await Store.open(db)
    await store.enqueue_many([_new(f"k{i}", "") for i in range(200)])
    await store.close()
    conn = sqlite3.connect(db)
    ((root,),) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'requests'").fetchall()
    ((page_size,),) = conn.execute("PRAGMA page_size").fetchall()
    conn.close()
    with db.open("r+b") as f:  # the requests table's root page: the schema itself is intact
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * page_size)
    corrupt = f"{db}: the database is corrupt (database disk image is malformed); restore it from a backup"
    store = await Store.open(db)
    try:
        with pytest.raises(StoreError) as caught:
            await store.state_counts()
        assert str(caught.value) == corrupt
    finally:
        await store.close()
    config = tmp_path / "router.toml"
    config.write_text(f'[store]\npath = "{db}"\n', encoding="utf-8")
    assert await asyncio.to_thread(main, ["-c", str(config), "status"]) == 2
    assert capsys.readouterr().err == f"hybrid-router: {corrupt}\n"


async def test_errors_that_are_not_about_the_file_pass_unchanged(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "router.db")
    try:
        await store.enqueue_many([_new("taken", "")])
        # The write transaction (private: the test reaches in) lets other errors through as they are.
        with pytest.raises(sqlite3.IntegrityError):
            async with store._transaction() as w:
                await w.execute("INSERT INTO requests SELECT * FROM requests WHERE key = 'taken'")
        assert (await store.state_counts()) == {"pending": 1}
    finally:
        await store.close()


async def test_a_schema_newer_than_the_code_asks_for_an_upgrade(tmp_path: Path) -> None:
    db = tmp_path / "router.db"
    await (await Store.open(db)).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 4}")
    conn.commit()
    conn.close()
    assert await open_error(db) == (
        f"{db}: schema version {SCHEMA_VERSION + 4} is newer than this hybrid-router ({SCHEMA_VERSION});"
        " upgrade hybrid-router"
    )


async def test_a_folder_is_not_a_database_file(tmp_path: Path) -> None:
    assert await open_error(tmp_path) == f"{tmp_path}: this is a folder, not a database file"


# Opened by a process that permission bits bind. Root's are bypassed by its capabilities
# (CAP_DAC_OVERRIDE and friends), so a root run drops them from the child's bounding set
# before it starts: the child is still root, the owner of the files, held to the owner's bits.
CHILD_OPEN = textwrap.dedent(
    """
    import asyncio, sys
    from router import StoreError
    from router.store import Store

    async def main() -> None:
        for path in sys.argv[1:]:
            try:
                await (await Store.open(path)).close()
            except StoreError as exc:
                print(exc)
            else:
                print("opened")

    asyncio.run(main())
    """
)
PR_CAPBSET_DROP = 24
CAPS_THAT_BYPASS_PERMISSIONS = (1, 2, 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER


def _drop_permission_caps() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in CAPS_THAT_BYPASS_PERMISSIONS:
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def open_bound_by_permissions(*dbs: Path) -> list[str]:
    """Store.open of each path, in a subprocess that permission bits apply to; a line for each."""
    preexec = _drop_permission_caps if os.geteuid() == 0 else None
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD_OPEN, *map(str, dbs)],
            cwd=REPO,
            preexec_fn=preexec,  # one prctl call before exec: nothing that takes a lock
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    except subprocess.SubprocessError as exc:
        if isinstance(exc, subprocess.CalledProcessError):
            raise
        pytest.skip(f"cannot drop root's permission-bypassing capabilities here ({exc})")
    return done.stdout.splitlines()


def test_a_folder_that_is_not_writable_is_named(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    existing = locked / "existing.db"
    sqlite3.connect(existing).close()  # a database file it could write, in a folder it cannot
    existing.chmod(0o666)
    locked.chmod(0o555)
    new, deeper = locked / "router.db", locked / "sub" / "router.db"
    assert open_bound_by_permissions(new, deeper, existing) == [
        f"{new}: the folder {locked} is not writable (permission denied)",
        f"{deeper}: the folder {locked} is not writable (permission denied)",
        # SQLite needs the folder too: the write-ahead log lives beside the database.
        f"{existing}: the folder {locked} is not writable (attempt to write a readonly database)",
    ]
    assert sorted(p.name for p in locked.iterdir()) == ["existing.db"]


def test_a_database_file_that_is_not_writable_is_named(tmp_path: Path) -> None:
    db = tmp_path / "router.db"
    sqlite3.connect(db).close()
    db.chmod(0o444)
    assert open_bound_by_permissions(db) == [f"{db}: the file is not writable (permission denied)"]


# ---------------------------------------------------------------------------- create=False


async def test_opening_an_existing_database_only_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "deeper" / "router.db"
    assert await open_error(missing, create=False) == (
        f"{missing}: no database here (no folder {missing.parent}); check [store] path in the config"
    )
    absent = tmp_path / "router.db"
    assert await open_error(absent, create=False) == (
        f"{absent}: no database here; check [store] path in the config"
    )
    assert os.listdir(tmp_path) == []
    absent.touch()  # an empty file would become a database on first use
    assert await open_error(absent, create=False) == (
        f"{absent}: no database here (the file is empty); check [store] path in the config"
    )
    assert absent.stat().st_size == 0
    absent.unlink()
    await (await Store.open(absent)).close()
    await (await Store.open(absent, create=False)).close()


async def test_a_router_that_must_not_create_its_store_says_so(tmp_path: Path) -> None:
    db = tmp_path / "nowhere" / "router.db"
    with pytest.raises(StoreError, match="no database here"):
        async with Router(RouterConfig.default(store_path=db), create_store=False, scheduler=False):
            pass
    assert not db.parent.exists()


@pytest.mark.parametrize(
    "argv", [["status"], ["report"], ["results", "k"], ["results", "--out", "-"], ["purge"]]
)
def test_reading_commands_never_create_a_database(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "mistyped" / "router.db"
    config = tmp_path / "router.toml"
    config.write_text(f'[store]\npath = "{db}"\n', encoding="utf-8")
    assert main(["-c", str(config), *argv]) == 2
    assert capsys.readouterr().err == (
        f"hybrid-router: {db}: no database here (no folder {db.parent}); check [store] path in the config\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["router.toml"]


# ---------------------------------------------------------------------------- a full disk


async def limit_pages(store: Store, extra: int) -> None:
    """Cap the database at its current size plus `extra` pages, as a full disk would
    (SQLite then answers SQLITE_FULL, exactly as on ENOSPC). The cap is a setting of the
    store's own writer connection, so the test reaches into its private transaction."""
    async with store._transaction() as w:
        ((pages,),) = await w.execute_fetchall("PRAGMA page_count")
        await w.execute(f"PRAGMA max_page_count = {int(pages) + extra}")


async def stored_keys(store: Store) -> list[str]:
    keyed = "SELECT r.key FROM requests r JOIN request_params p ON p.id = r.id ORDER BY r.id"
    rows = query(store.path, keyed)
    ((params,),) = query(store.path, "SELECT COUNT(*) FROM request_params")
    ((requests,),) = query(store.path, "SELECT COUNT(*) FROM requests")
    assert params == requests  # never a request without its params, or the other way round
    return [str(k) for (k,) in rows]


async def test_a_full_disk_fails_the_whole_group_and_keeps_every_acknowledged_request(
    db_path: Path, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    acknowledged = [f"ok{i}" for i in range(10)]
    refused = [f"full{i}" for i in range(50)]
    big = "x" * 2000  # each request needs room the capped file does not have
    async with quiet_router(db_path, emulator, sdk) as router:
        for key in acknowledged:
            await router.messages.submit(**ask(f"{key} {big}"), latency="daily", key=key)

        async def submit_all(keys: list[str]) -> list[object]:
            # Concurrent callers: one group commit.
            return list(
                await asyncio.gather(
                    *(router.messages.submit(**ask(f"{k} {big}"), latency="daily", key=k) for k in keys),
                    return_exceptions=True,
                )
            )

        await limit_pages(router.store, 0)
        outcomes = await submit_all(refused)
        assert all(isinstance(o, StoreFullError) for o in outcomes), outcomes
        assert str(outcomes[0]) == (
            f"{db_path}: the disk is full (database or disk is full); free some space and try again"
        )
        assert await stored_keys(router.store) == acknowledged

        # Room for a few rows: the group fails part way through its transaction, and none of it stays.
        await limit_pages(router.store, 3)
        outcomes = await submit_all(refused)
        assert all(isinstance(o, StoreFullError) for o in outcomes), outcomes
        assert await stored_keys(router.store) == acknowledged
        await router.messages.submit(**ask("small"), latency="daily", key="fits")  # the room was there
        with pytest.raises(StoreFullError):  # bulk callers (map, enqueue) are told the same way
            await router.store.enqueue_many([_new(k, big) for k in refused])
        assert await stored_keys(router.store) == [*acknowledged, "fits"]

        # Space is back: the same store takes the refused requests and sends them all.
        await limit_pages(router.store, 1_000_000)
        assert all(not isinstance(o, BaseException) for o in await submit_all(refused))
        await run_batches(router, emulator)
        assert (await router.store.state_counts()) == {"succeeded": 61}

    async with Router(RouterConfig.default(store_path=db_path), create_store=False, scheduler=False) as again:
        for key in [*acknowledged, *refused]:
            assert key in reply_text(await again.results.wait(key))


async def test_requests_refused_by_a_full_disk_are_not_there_after_a_restart(
    db_path: Path, emulator: Emulator, sdk: anthropic.AsyncAnthropic
) -> None:
    async with quiet_router(db_path, emulator, sdk) as router:
        await router.messages.submit(**ask("kept"), latency="daily", key="kept")
        await limit_pages(router.store, 0)
        with pytest.raises(StoreFullError):
            await router.messages.submit(**ask("lost " + "x" * 5000), latency="daily", key="lost")
    async with Router(RouterConfig.default(store_path=db_path), create_store=False, scheduler=False) as again:
        assert (await again.results.status("kept")).state == "pending"
        with pytest.raises(UnknownKeyError):
            await again.results.status("lost")


def _new(key: str, text: str) -> NewRequest:
    return NewRequest(
        key=key,
        latency="daily",
        tag=None,
        model="claude-haiku-4-5",
        params=serialize(ask(f"{key} {text}")),
        created_at=0.0,
        deadline_at=None,
    )
