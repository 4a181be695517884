"""Alembic environment of the registry, driven only from :mod:`registry.migrations`.

The caller hands over an open SQLAlchemy connection in ``config.attributes``; no
``alembic.ini`` and no URL (hence no credentials) pass through Alembic itself.
"""

from __future__ import annotations

from alembic import context

from registry import schema
from registry.migrations import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("registry migrations run through registry.migrations.upgrade(), not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=schema.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
