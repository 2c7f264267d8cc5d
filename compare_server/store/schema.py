"""Schema management with Alembic: new databases are created at head, old ones must be upgraded."""

from __future__ import annotations

import pathlib

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from compare_server.errors import SchemaOutOfDate

MIGRATIONS = pathlib.Path(__file__).parent / "migrations"


def _config(connection=None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Runs every migration up to `revision` in one transaction."""
    with engine.begin() as conn:
        command.upgrade(_config(conn), revision)


def ensure_schema(engine: Engine, url_for_message: str) -> None:
    """Creates the schema in an empty database; refuses one whose schema is behind this cmp."""
    current = current_revision(engine)
    if current is None and not inspect(engine).get_table_names():
        upgrade(engine)
        return
    head = head_revision()
    if current != head:
        raise SchemaOutOfDate(
            f"database schema is at revision {current or 'unknown'}, this cmp needs {head}: "
            f"back it up, then run `cmp db upgrade --db {url_for_message}`"
        )
