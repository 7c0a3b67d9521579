"""Versioned SQL migrations, applied in order on start under a Postgres advisory lock.

Files live in ``bgagent_query/migrations/NNNN_name.sql``; each is applied once, in its own
transaction together with its row in ``schema_migrations``. Several processes starting at
once serialise on the advisory lock, so each file runs exactly once.
"""

from __future__ import annotations

import logging
import re
from importlib import resources
from typing import Any

from .errors import MigrationError

logger = logging.getLogger(__name__)

# Arbitrary constant: "bgagent query migrations".
ADVISORY_LOCK_KEY = 0x6267_6171_6D69_67
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class Migration:
    __slots__ = ("name", "sql", "version")

    def __init__(self, version: int, name: str, sql: str) -> None:
        self.version = version
        self.name = name
        self.sql = sql


def discover() -> list[Migration]:
    """Every migration shipped with the package, in version order."""
    found: list[Migration] = []
    for entry in resources.files("bgagent_query").joinpath("migrations").iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _NAME.match(entry.name)
        if match is None:
            raise MigrationError(f"migration file {entry.name!r} is not named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions: {versions}")
    return found


async def migrate(conn: Any) -> list[int]:
    """Apply the missing migrations; returns the versions applied now (empty when up to date)."""
    applied_now: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", ADVISORY_LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in discover():
            if migration.version in done:
                continue
            try:
                async with conn.transaction():  # a savepoint: the error names the file
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )
            except Exception as exc:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} failed: {exc}"
                ) from exc
            logger.info("applied migration %04d_%s", migration.version, migration.name)
            applied_now.append(migration.version)
    return applied_now
