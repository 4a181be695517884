"""Bounding caps of spatial regions, so overlap queries drop most candidates in SQL.

Each region of visit, visit_detector_region, tract and patch gets its bounding circle
(centre unit vector, cosine and sine of the opening angle). Existing rows are filled in
from their stored regions.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TABLES = {
    "visit": ("instrument", "id"),
    "visit_detector_region": ("instrument", "visit", "detector"),
    "tract": ("skymap", "id"),
    "patch": ("skymap", "tract", "id"),
}
_COLUMNS = ("bound_x", "bound_y", "bound_z", "bound_cos", "bound_sin")


def upgrade() -> None:
    from registry.spatial import bounding_cap, decode_region

    # Plain ALTER TABLE (SQLite >= 3.35 adds and drops columns in place): a batch
    # rebuild would trip the foreign keys that point at these tables.
    for table in _TABLES:
        for name in _COLUMNS:
            op.add_column(table, sa.Column(name, sa.Float(), nullable=True))
    connection = op.get_bind()
    for table, keys in _TABLES.items():
        t = sa.table(table, *(sa.column(k) for k in keys), sa.column("region"), *(sa.column(c) for c in _COLUMNS))
        rows = connection.execute(sa.select(*(t.c[k] for k in keys), t.c.region)).all()
        for row in rows:
            region = decode_region(row[-1])
            if region is None:
                continue
            values = dict(zip(_COLUMNS, bounding_cap(region)))
            connection.execute(
                sa.update(t).where(*(t.c[k] == row[i] for i, k in enumerate(keys))).values(**values)
            )


def downgrade() -> None:
    for table in _TABLES:
        for name in _COLUMNS:
            op.drop_column(table, name)
