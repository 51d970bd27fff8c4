"""A TCP proxy in front of PostgreSQL that can lose a COMMIT's answer, or the COMMIT itself.

It reads the frontend's messages (the wire protocol: an untyped startup phase, then a type
byte and a length per message) only to find a simple-query ``COMMIT``. Armed, it cuts the
session there: "after" lets the COMMIT through, waits for the server's first answer byte
(so the commit has happened) and closes both sides without passing the answer on; "before"
closes both sides without sending the COMMIT (so the transaction is rolled back).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

Cut = Literal["after", "before"]

# Request codes of the untyped messages a client may send before its startup message.
_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104


class CommitCutter:
    """Proxies connections to `upstream_url`'s server; `url` is the same database through it."""

    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url
        parts = urlsplit(upstream_url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._server: asyncio.Server | None = None
        self._armed: Cut | None = None
        self.cuts = 0  # sessions cut so far
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        parts = urlsplit(self.upstream_url)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@127.0.0.1:{port}" if auth else f"127.0.0.1:{port}"
        query = "&".join(q for q in (parts.query, "sslmode=disable") if q)  # plain bytes to read
        return urlunsplit(parts._replace(netloc=netloc, query=query))

    def arm(self, cut: Cut) -> None:
        """Cut the next COMMIT that any session sends (once)."""
        self._armed = cut

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CommitCutter]:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        try:
            yield self
        finally:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()

    async def _session(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self._target)
        commit_sent = asyncio.Event()
        done = asyncio.Event()

        def close() -> None:
            client_w.close()
            server_w.close()
            done.set()

        async def upstream() -> None:  # client -> server, message by message
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                while True:  # the untyped startup phase
                    head = await client_r.readexactly(8)
                    length, code = struct.unpack("!ii", head)
                    server_w.write(head + await client_r.readexactly(length - 8))
                    if code not in (_SSL_REQUEST, _GSSENC_REQUEST):
                        break
                while True:
                    head = await client_r.readexactly(5)
                    body = await client_r.readexactly(struct.unpack("!i", head[1:])[0] - 4)
                    if head[:1] == b"Q" and body.lstrip().upper().startswith(b"COMMIT") and self._armed:
                        cut, self._armed = self._armed, None
                        self.cuts += 1
                        if cut == "before":
                            close()
                            return
                        server_w.write(head + body)
                        commit_sent.set()
                        return
                    server_w.write(head + body)
            close()

        async def downstream() -> None:  # server -> client, passed on until a cut commit answers
            with contextlib.suppress(ConnectionError):
                while data := await server_r.read(65536):
                    if commit_sent.is_set():
                        close()  # the server answered the COMMIT: it is done; the client never hears
                        return
                    client_w.write(data)
            close()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        self._tasks.update(tasks)
        try:
            await done.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.difference_update(tasks)
