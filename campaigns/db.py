"""The PostgreSQL connection: a given server (DATABASE_URL) or a private embedded one.

`connect()` returns a `Database` (an asyncpg pool) with the schema migrated. Without a URL it
starts the embedded server in the callwise data folder and stops it again on `close()`, so a
single-machine deployment needs no database administration at all.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from campaigns.embedded import EmbeddedPostgres, default_data_dir
from campaigns.migrate import MIGRATIONS_DIR, Migration, migrate
from campaigns.projection import SESSION_SQL

log = logging.getLogger(__name__)


class DatabaseSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CALLWISE_",
        env_file=os.environ.get("CALLWISE_SETTINGS", ".env"),
        extra="ignore",
    )

    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL", "CALLWISE_DATABASE_URL"),
        description="postgresql://user:password@host:port/db; unset: the embedded server",
    )
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="local data: the embedded server (pg/), the outbox",
    )
    db_pool_min: int = Field(1, ge=0)
    db_pool_max: int = Field(10, ge=1)
    db_connect_timeout_s: float = Field(10.0, gt=0)


class DatabaseError(RuntimeError):
    """The database cannot be used as configured."""


class DatabaseUnavailable(DatabaseError):
    """The server cannot be reached now; a later attempt may succeed."""


def is_unavailable(err: BaseException) -> bool:
    """True for failures that mean 'the server is not there', not 'this data is wrong'."""
    if isinstance(err, DatabaseUnavailable | OSError | TimeoutError):
        return True
    if isinstance(
        err,
        asyncpg.PostgresConnectionError
        | asyncpg.CannotConnectNowError
        | asyncpg.AdminShutdownError
        | asyncpg.CrashShutdownError
        | asyncpg.TooManyConnectionsError,
    ):
        return True
    # asyncpg reports a socket that died under a query as InterfaceError("connection is closed")
    return isinstance(err, asyncpg.InterfaceError) and "closed" in str(err)


def describe(dsn: str) -> str:
    """Where a DSN points, for messages: host:port/database, never the password."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "localhost"])[0]
    port = query.get("port", [str(parts.port or 5432)])[0]
    database = parts.path.lstrip("/") or parts.username or "postgres"
    where = f"socket {host}" if host.startswith("/") else f"{host}:{port}"
    return f"{where}, database {database!r}"


@dataclass
class Database:
    """An asyncpg pool on a migrated callwise database; close() it (or use `async with`)."""

    pool: asyncpg.Pool
    where: str
    embedded: EmbeddedPostgres | None = None
    migrations_applied: list[Migration] = field(default_factory=list)

    def acquire(self) -> Any:
        return self.pool.acquire()

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.pool.close(), timeout=10)
        except TimeoutError:
            log.warning("database pool did not close in 10 s; terminating its connections")
            self.pool.terminate()
        if self.embedded is not None:
            await self.embedded.astop()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def connect(
    url: str | None = None,
    *,
    apply_migrations: bool = True,
    migrations_dir: Path = MIGRATIONS_DIR,
    settings: DatabaseSettings | None = None,
) -> Database:
    """Open the callwise database: `url`, else DATABASE_URL, else the embedded server."""
    settings = settings or DatabaseSettings()
    dsn = url or settings.database_url
    embedded = None
    if dsn is None:
        embedded = EmbeddedPostgres(settings.data_dir / "pg")
        await embedded.astart()
        dsn = embedded.dsn
    where = describe(dsn)
    pool = None
    try:
        pool = await create_pool(dsn, settings)
        applied: list[Migration] = []
        if apply_migrations:
            async with pool.acquire() as conn:
                applied = await migrate(conn, migrations_dir)
        for mig in applied:
            log.info("applied migration %s to %s", mig.filename, where)
        return Database(pool, where, embedded, applied)
    except BaseException:
        if pool is not None:
            pool.terminate()
        if embedded is not None:
            await embedded.astop()
        raise


async def create_pool(dsn: str, settings: DatabaseSettings) -> asyncpg.Pool:
    where = describe(dsn)
    try:
        return await asyncpg.create_pool(
            dsn,
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            timeout=settings.db_connect_timeout_s,
            init=_init_connection,
            # let the server notice peers that vanished (an outage, a killed process)
            server_settings={"application_name": "callwise", "tcp_keepalives_idle": "60"},
        )
    except asyncpg.InvalidCatalogNameError as err:
        raise DatabaseError(
            f"PostgreSQL at {where}: {err}; create the database (createdb) or fix DATABASE_URL"
        ) from err
    except asyncpg.InvalidAuthorizationSpecificationError as err:
        raise DatabaseError(
            f"PostgreSQL at {where} refused the login: {err}; check the "
            "user and password in DATABASE_URL"
        ) from err
    except Exception as err:
        if is_unavailable(err):
            raise DatabaseUnavailable(
                f"cannot reach PostgreSQL at {where} ({type(err).__name__}: {err}); start the "
                "server, or set DATABASE_URL=postgresql://user:password@host:port/db to use "
                "another one (leave it unset to run the embedded server)"
            ) from err
        raise


async def _init_connection(conn: asyncpg.Connection) -> None:
    # The store stages each batch in temporary tables; made once per connection rather than per
    # batch, because creating and dropping tables at ingest rate bloats the system catalogs.
    await conn.execute(SESSION_SQL)
