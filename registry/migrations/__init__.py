"""Schema migrations of the registry (Alembic), run from Python: no ``alembic.ini``.

:func:`upgrade` brings a database to a revision (the head by default);
:func:`current_revision` and :func:`head_revision` let :class:`registry.Registry`
refuse databases whose schema is older or newer than this code. Revisions live in
``versions/``; write a new one for every change to :mod:`registry.schema` (the test
suite compares the head with the schema module).
"""

from __future__ import annotations

import logging
import os

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

log = logging.getLogger(__name__)

#: Table holding the schema revision (distinct from Alembic's default name, so a
#: registry can share a PostgreSQL schema with other Alembic-managed tables).
VERSION_TABLE = "registry_schema_version"

_HERE = os.path.dirname(os.path.abspath(__file__))


def _config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", _HERE)
    config.attributes["connection"] = connection
    return config


def script_directory() -> ScriptDirectory:
    """The revisions shipped with this package."""
    return ScriptDirectory.from_config(_config())


def head_revision() -> str:
    """The newest revision this code knows."""
    head = script_directory().get_current_head()
    assert head is not None
    return head


def known_revisions() -> set[str]:
    """Every revision this code knows."""
    return {script.revision for script in script_directory().walk_revisions()}


def current_revision(connection: sa.Connection) -> str | None:
    """The database's revision, or ``None`` when it has never been migrated."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def upgrade(connection: sa.Connection, revision: str = "head") -> None:
    """Migrate the database behind ``connection`` to ``revision`` (in one transaction)."""
    log.info("upgrading registry schema to %s", revision)
    command.upgrade(_config(connection), revision)


def downgrade(connection: sa.Connection, revision: str) -> None:
    """Migrate the database behind ``connection`` back to ``revision`` (``base`` = empty)."""
    log.info("downgrading registry schema to %s", revision)
    command.downgrade(_config(connection), revision)
