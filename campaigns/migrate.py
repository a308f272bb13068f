"""Versioned schema migrations: campaigns/migrations/NNNN_name.sql, applied in order, once.

Each file runs in its own transaction together with its row in `schema_migrations`, so a
failing migration leaves nothing behind. A session advisory lock serialises processes that start
at the same moment; the second one waits, then finds nothing left to do. The recorded sha256 of
each file makes an edited, already-applied migration an error instead of a silent divergence
between databases: change the schema by adding a new file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# pg_advisory_lock(bigint) key: the first 8 bytes of sha256("callwise.schema_migrations")
LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"callwise.schema_migrations").digest()[:8], "big", signed=True
)

_CREATE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    int PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """The database schema and the migration files disagree."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    sql: str
    checksum: str

    @property
    def filename(self) -> str:
        return self.path.name


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _FILE.match(path.name)
        if m is None:
            raise MigrationError(f"{path}: a migration is named NNNN_name.sql (e.g. 0002_dnc.sql)")
        # Line endings are normalised so a checkout with CRLF does not look like an edit.
        sql = path.read_text(encoding="utf-8").replace("\r\n", "\n")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(
                f"two migrations share version {version}: {found[version].filename} and {path.name}"
            )
        found[version] = Migration(
            version, m.group(2), path, sql, hashlib.sha256(sql.encode()).hexdigest()
        )
    return [found[v] for v in sorted(found)]


async def migrate(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply the pending migrations; returns those applied by this call (empty: up to date)."""
    migrations = discover(directory)
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await conn.execute(_CREATE)
        rows = await conn.fetch("SELECT version, name, checksum, applied_at FROM schema_migrations")
        _check_history({r["version"]: r for r in rows}, migrations, directory)
        done = {r["version"] for r in rows}
        applied = []
        for mig in migrations:
            if mig.version in done:
                continue
            async with conn.transaction():
                try:
                    await conn.execute(mig.sql)
                except asyncpg.PostgresError as err:
                    raise MigrationError(
                        f"migration {mig.filename} failed: {type(err).__name__}: {err}"
                    ) from err
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    mig.version,
                    mig.name,
                    mig.checksum,
                )
            applied.append(mig)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)


def _check_history(
    recorded: dict[int, asyncpg.Record], migrations: list[Migration], directory: Path
) -> None:
    known = {m.version: m for m in migrations}
    for version, row in sorted(recorded.items()):
        mig = known.get(version)
        if mig is None:
            newest = max(known, default=0)
            if version > newest:
                raise MigrationError(
                    f"the database schema is at version {version} ({row['name']}), newer than "
                    f"this callwise knows (up to {newest}); run a newer callwise against it"
                )
            raise MigrationError(
                f"migration {version:04d}_{row['name']}.sql was applied on "
                f"{_day(row['applied_at'])} but its file is missing from {directory}"
            )
        if mig.checksum != row["checksum"]:
            raise MigrationError(
                f"migration {mig.filename} changed after it was applied on "
                f"{_day(row['applied_at'])} (recorded sha256 {row['checksum'][:12]}, file now "
                f"{mig.checksum[:12]}); never edit an applied migration: restore the file and "
                "add the change as a new NNNN_*.sql"
            )


def _day(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")
