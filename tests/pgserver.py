"""A throwaway PostgreSQL server for tests and benchmarks, from the binaries on the machine.

`initdb` and `pg_ctl` in a temporary directory, on a free loopback port, with a Unix socket
in the same directory. PostgreSQL refuses to run as root, so as root the server runs as the
`postgres` system user (or `nobody`), which owns the directory. `HYBRID_ROUTER_TEST_POSTGRES_URL`
names an existing server instead (its user must be allowed to create databases); then nothing is
started, and `restart()` is not available.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ENV_URL = "HYBRID_ROUTER_TEST_POSTGRES_URL"
BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")
HOW_TO_ENABLE = (
    "PostgreSQL tests need server binaries (apt-get install postgresql-15) or"
    f" {ENV_URL}=postgresql://user@host:port/db"
)


def find_bin_dir() -> Path | None:
    """The directory holding initdb and pg_ctl, or None."""
    for candidate in (os.environ.get("PG_BINDIR"), *BIN_DIRS):
        if candidate and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_user() -> pwd.struct_passwd | None:
    """Who runs the server: None for the current user, else an unprivileged system user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


@dataclass
class PostgresServer:
    """A running server; `url` connects as its superuser to the `postgres` database."""

    bin_dir: Path
    data_dir: Path
    port: int
    user: pwd.struct_passwd | None

    @property
    def superuser(self) -> str:
        return self.user.pw_name if self.user else pwd.getpwuid(os.getuid()).pw_name

    @property
    def url(self) -> str:
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.user is not None:
            command = [
                "setpriv",
                f"--reuid={self.user.pw_uid}",
                f"--regid={self.user.pw_gid}",
                "--clear-groups",
                "--",
                *command,
            ]
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip() or done.stdout}")
        return done

    def start(self) -> None:
        log = self.data_dir.parent / "server.log"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data_dir.parent}"
            " -c fsync=on -c synchronous_commit=on -c max_connections=200",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self) -> None:
        """Stop (fast: terminate sessions) and start again on the same port and data."""
        self.stop("fast")
        self.start()

    def create_database(self, name: str) -> str:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.superuser, name)
        return self.url_for(name)


@dataclass
class ExternalPostgres:
    """A server named by HYBRID_ROUTER_TEST_POSTGRES_URL: databases are created on it, nothing else."""

    url: str

    def url_for(self, database: str) -> str:
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(path=f"/{database}"))

    def create_database(self, name: str) -> str:
        psql = shutil.which("psql")
        if psql is None:
            raise FileNotFoundError(f"{ENV_URL} is set but psql is not installed")
        subprocess.run(
            [psql, self.url, "-qc", f'CREATE DATABASE "{name}"'], check=True, timeout=60, capture_output=True
        )
        return self.url_for(name)

    def restart(self) -> None:
        raise NotImplementedError(f"an external server ({ENV_URL}) is not restarted by the tests")


def available() -> bool:
    """Whether a server can be had: one named by the environment, or binaries to start one."""
    return bool(os.environ.get(ENV_URL)) or find_bin_dir() is not None


@contextlib.contextmanager
def postgres_server(parent: str | None = None) -> Iterator[PostgresServer | ExternalPostgres]:
    """Start a throwaway server and stop it (and remove its files) afterwards. Its directory is
    made in `parent` (default: the system's temporary directory)."""
    if os.environ.get(ENV_URL):
        yield ExternalPostgres(os.environ[ENV_URL])
        return
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError(HOW_TO_ENABLE)
    user = _server_user()
    root = Path(tempfile.mkdtemp(prefix="hybrid-router-pg-", dir=parent))
    try:
        if user is not None:
            os.chown(root, user.pw_uid, user.pw_gid)
        server = PostgresServer(bin_dir=bin_dir, data_dir=root / "data", port=_free_port(), user=user)
        server._run(
            "initdb",
            "-D",
            str(server.data_dir),
            "-A",
            "trust",
            "-U",
            server.superuser,
            "--no-sync",
            "-E",
            "UTF8",
        )
        server.start()
        try:
            yield server
        finally:
            with contextlib.suppress(RuntimeError):
                server.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)
