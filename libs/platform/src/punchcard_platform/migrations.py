"""A migration runner over plain SQL files, safe to run twice or from two processes at once.

Files are ``NNNN_name.sql`` beside this module, applied in order, each in its own
transaction with its row in ``schema_migrations``. A session advisory lock makes
concurrent runners take turns; the second finds everything applied and does nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import structlog

from punchcard_platform.db import Database
from punchcard_platform.errors import MigrationError

__all__ = ["Migration", "apply_migrations", "available_migrations"]

log = structlog.get_logger(__name__)

# Any constant works; it only has to be the same for every runner.
_MIGRATION_LOCK_KEY = 0x70756E6368  # "punch"


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file: its version (the file name without .sql) and its text."""

    version: str
    sql: str

    @property
    def checksum(self) -> str:
        """What the file held when it was applied; a changed file is refused."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available_migrations() -> list[Migration]:
    """The migration files shipped with this package, in the order they apply."""
    folder = resources.files("punchcard_platform") / "migrations"
    files = sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    return [Migration(entry.name.removesuffix(".sql"), entry.read_text("utf-8")) for entry in files]


async def apply_migrations(db: Database, migrations: list[Migration] | None = None) -> list[str]:
    """Apply what has not been applied yet; return the versions applied now."""
    pending_check = available_migrations() if migrations is None else migrations
    applied_now: list[str] = []
    async with db.connection() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_KEY)
        try:
            await conn.execute(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version    text        PRIMARY KEY,
                    checksum   text        NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """
            )
            rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
            done = {row["version"]: row["checksum"] for row in rows}
            for migration in pending_check:
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version} changed after it was applied; "
                            "add a new migration instead of editing an applied one"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                        migration.version,
                        migration.checksum,
                    )
                log.info("migration applied", version=migration.version)
                applied_now.append(migration.version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_KEY)
    return applied_now
