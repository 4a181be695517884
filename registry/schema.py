"""The registry's tables (SQLAlchemy Core), identical on SQLite and PostgreSQL.

This module describes the schema at the head migration; databases are created and
upgraded only through the Alembic migrations in :mod:`registry.migrations`, and a test
checks that the two agree.

Layout
------
* One table per dimension element (``instrument``, ``exposure``, ``patch``...), keyed
  by its data-ID columns; regions are ``lsst.sphgeom`` ``Region.encode()`` bytes; times
  are integer TAI nanoseconds (see :mod:`registry.dimensions`).
* ``<element>_skypix`` for each spatial element: one row per (element key, HTM trixel
  index) for every trixel of the region's envelope, with a covering index on
  (``skypix_index``, keys) so an overlap query is an index range scan.
* ``dataset_type``, ``collection`` (RUN, CHAINED, CALIBRATION), ``collection_chain``
  (ordered children), ``dataset`` (one row per dataset: UUID, type, run, file, and every
  required and implied data-ID value in its own indexed, nullable column) and
  ``calibration`` (certifications with half-open validity ranges).
* ``registry_attribute``: key/value settings fixed at creation (the HTM level).
"""

from __future__ import annotations

import sqlalchemy as sa

from .dimensions import ELEMENTS

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}

NAME_LENGTH = 128
COLLECTION_NAME_LENGTH = 256
DATA_ID_KEY_LENGTH = 1024

#: Collection types stored in ``collection.type``.
COLLECTION_TYPES = ("RUN", "CHAINED", "CALIBRATION")

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


def _name(column: str, *args: sa.SchemaItem, **kwargs: object) -> sa.Column:
    return sa.Column(column, sa.String(NAME_LENGTH), *args, **kwargs)  # type: ignore[arg-type]


# -- dimension elements ----------------------------------------------------------------

instrument = sa.Table(
    "instrument",
    metadata,
    _name("name", primary_key=True),
    sa.Column("visit_max", sa.BigInteger),
    sa.Column("exposure_max", sa.BigInteger),
    sa.Column("detector_max", sa.Integer),
    sa.Column("class_name", sa.String(256)),
)

band = sa.Table("band", metadata, _name("name", primary_key=True))

physical_filter = sa.Table(
    "physical_filter",
    metadata,
    _name("instrument", sa.ForeignKey("instrument.name"), primary_key=True),
    _name("name", primary_key=True),
    _name("band", sa.ForeignKey("band.name"), nullable=False),
)

detector = sa.Table(
    "detector",
    metadata,
    _name("instrument", sa.ForeignKey("instrument.name"), primary_key=True),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("full_name", sa.String(NAME_LENGTH)),
    sa.Column("serial", sa.String(NAME_LENGTH)),
    sa.Column("purpose", sa.String(32)),
)

exposure = sa.Table(
    "exposure",
    metadata,
    _name("instrument", sa.ForeignKey("instrument.name"), primary_key=True),
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    _name("physical_filter", nullable=False),
    _name("band", sa.ForeignKey("band.name"), nullable=False),
    sa.Column("day_obs", sa.Integer, nullable=False),
    sa.Column("obs_id", sa.String(NAME_LENGTH)),
    sa.Column("observation_type", sa.String(32)),
    sa.Column("exposure_time", sa.Float),
    sa.Column("dark_time", sa.Float),
    sa.Column("timespan_begin", sa.BigInteger),
    sa.Column("timespan_end", sa.BigInteger),
    sa.Column("tracking_ra", sa.Float),
    sa.Column("tracking_dec", sa.Float),
    sa.Column("sky_angle", sa.Float),
    sa.Column("airmass", sa.Float),
    sa.ForeignKeyConstraint(
        ["instrument", "physical_filter"], ["physical_filter.instrument", "physical_filter.name"]
    ),
    sa.Index(None, "instrument", "day_obs"),
)

def _bound_columns() -> list[sa.Column]:
    """Bounding cap of a region (centre unit vector, cos and sin of its opening angle):
    overlap queries drop most index candidates with it in SQL, before any region is
    decoded (see :mod:`registry.spatial`)."""
    return [sa.Column(name, sa.Float) for name in ("bound_x", "bound_y", "bound_z", "bound_cos", "bound_sin")]


visit = sa.Table(
    "visit",
    metadata,
    _name("instrument", sa.ForeignKey("instrument.name"), primary_key=True),
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    _name("physical_filter", nullable=False),
    _name("band", sa.ForeignKey("band.name"), nullable=False),
    sa.Column("day_obs", sa.Integer, nullable=False),
    sa.Column("timespan_begin", sa.BigInteger),
    sa.Column("timespan_end", sa.BigInteger),
    sa.Column("region", sa.LargeBinary),
    *_bound_columns(),
    sa.ForeignKeyConstraint(
        ["instrument", "physical_filter"], ["physical_filter.instrument", "physical_filter.name"]
    ),
)

visit_detector_region = sa.Table(
    "visit_detector_region",
    metadata,
    _name("instrument", primary_key=True),
    sa.Column("visit", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("detector", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("region", sa.LargeBinary),
    *_bound_columns(),
    sa.ForeignKeyConstraint(["instrument", "visit"], ["visit.instrument", "visit.id"]),
    sa.ForeignKeyConstraint(["instrument", "detector"], ["detector.instrument", "detector.id"]),
)

skymap = sa.Table(
    "skymap",
    metadata,
    _name("name", primary_key=True),
    sa.Column("hash", sa.LargeBinary(64), nullable=False),
    sa.Column("tract_max", sa.Integer, nullable=False),
    sa.Column("patch_nx_max", sa.Integer, nullable=False),
    sa.Column("patch_ny_max", sa.Integer, nullable=False),
    sa.Column("definition", sa.JSON),
)

tract = sa.Table(
    "tract",
    metadata,
    _name("skymap", sa.ForeignKey("skymap.name"), primary_key=True),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("region", sa.LargeBinary),
    *_bound_columns(),
)

patch = sa.Table(
    "patch",
    metadata,
    _name("skymap", primary_key=True),
    sa.Column("tract", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("cell_x", sa.Integer, nullable=False),
    sa.Column("cell_y", sa.Integer, nullable=False),
    sa.Column("region", sa.LargeBinary),
    *_bound_columns(),
    sa.ForeignKeyConstraint(["skymap", "tract"], ["tract.skymap", "tract.id"]),
)

ELEMENT_TABLES: dict[str, sa.Table] = {
    "instrument": instrument,
    "band": band,
    "physical_filter": physical_filter,
    "detector": detector,
    "exposure": exposure,
    "visit": visit,
    "visit_detector_region": visit_detector_region,
    "skymap": skymap,
    "tract": tract,
    "patch": patch,
}


def _skypix_table(element: str) -> sa.Table:
    """Overlap table of a spatial element: (element keys..., skypix_index)."""
    parent = ELEMENT_TABLES[element]
    key_columns = list(ELEMENTS[element].keys.values())
    columns = [sa.Column(c, parent.c[c].type, primary_key=True, autoincrement=False) for c in key_columns]
    return sa.Table(
        f"{element}_skypix",
        metadata,
        *columns,
        sa.Column("skypix_index", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.ForeignKeyConstraint(key_columns, [f"{element}.{c}" for c in key_columns], ondelete="CASCADE"),
        # Covering index: the candidate lookup never touches the table itself.
        sa.Index(f"ix_{element}_skypix_lookup", "skypix_index", *key_columns),
    )


SKYPIX_TABLES: dict[str, sa.Table] = {
    name: _skypix_table(name) for name, element in ELEMENTS.items() if element.spatial
}

# -- datasets and collections ----------------------------------------------------------

registry_attribute = sa.Table(
    "registry_attribute",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

dataset_type = sa.Table(
    "dataset_type",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    _name("name", nullable=False, unique=True),
    sa.Column("dimensions", sa.String(512), nullable=False),
    _name("storage_class", nullable=False),
    sa.Column("is_calibration", sa.Boolean, nullable=False),
)

collection = sa.Table(
    "collection",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(COLLECTION_NAME_LENGTH), nullable=False, unique=True),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("doc", sa.Text),
    sa.CheckConstraint("type IN ('RUN', 'CHAINED', 'CALIBRATION')", name="type"),
)

collection_chain = sa.Table(
    "collection_chain",
    metadata,
    sa.Column("parent_id", sa.Integer, sa.ForeignKey("collection.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("child_id", sa.Integer, sa.ForeignKey("collection.id"), nullable=False),
    sa.UniqueConstraint("parent_id", "child_id"),
    sa.Index(None, "child_id"),
)

#: Data-ID columns of the dataset table, with their types (every dimension).
DATASET_DATA_ID_COLUMNS: dict[str, sa.types.TypeEngine] = {
    "instrument": sa.String(NAME_LENGTH),
    "band": sa.String(NAME_LENGTH),
    "physical_filter": sa.String(NAME_LENGTH),
    "day_obs": sa.Integer(),
    "exposure": sa.BigInteger(),
    "visit": sa.BigInteger(),
    "detector": sa.Integer(),
    "skymap": sa.String(NAME_LENGTH),
    "tract": sa.Integer(),
    "patch": sa.Integer(),
}

dataset = sa.Table(
    "dataset",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("dataset_type_id", sa.Integer, sa.ForeignKey("dataset_type.id"), nullable=False),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("collection.id"), nullable=False),
    # Canonical "key=value,..." of the required data ID: the uniqueness key, since
    # unique constraints over nullable columns treat NULLs as distinct.
    sa.Column("data_id_key", sa.String(DATA_ID_KEY_LENGTH), nullable=False),
    *(sa.Column(name, type_, nullable=True, index=True) for name, type_ in DATASET_DATA_ID_COLUMNS.items()),
    sa.Column("uri", sa.Text),
    sa.Column("file_size", sa.BigInteger),
    sa.Column("checksum", sa.String(NAME_LENGTH)),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("dataset_type_id", "run_id", "data_id_key"),
    sa.Index(None, "run_id"),
    # Raws of one exposure share a file; removal asks who else refers to it.
    sa.Index(None, "uri"),
    # NULL in any column of a composite foreign key switches it off, so these hold
    # exactly for the dimensions a dataset has.
    sa.ForeignKeyConstraint(["instrument"], ["instrument.name"]),
    sa.ForeignKeyConstraint(["band"], ["band.name"]),
    sa.ForeignKeyConstraint(
        ["instrument", "physical_filter"], ["physical_filter.instrument", "physical_filter.name"]
    ),
    sa.ForeignKeyConstraint(["instrument", "exposure"], ["exposure.instrument", "exposure.id"]),
    sa.ForeignKeyConstraint(["instrument", "visit"], ["visit.instrument", "visit.id"]),
    sa.ForeignKeyConstraint(["instrument", "detector"], ["detector.instrument", "detector.id"]),
    sa.ForeignKeyConstraint(["skymap"], ["skymap.name"]),
    sa.ForeignKeyConstraint(["skymap", "tract"], ["tract.skymap", "tract.id"]),
    sa.ForeignKeyConstraint(["skymap", "tract", "patch"], ["patch.skymap", "patch.tract", "patch.id"]),
)

calibration = sa.Table(
    "calibration",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "collection_id", sa.Integer, sa.ForeignKey("collection.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("dataset_id", sa.Uuid, sa.ForeignKey("dataset.id", ondelete="CASCADE"), nullable=False),
    sa.Column("dataset_type_id", sa.Integer, sa.ForeignKey("dataset_type.id"), nullable=False),
    sa.Column("data_id_key", sa.String(DATA_ID_KEY_LENGTH), nullable=False),
    # Half-open [valid_begin, valid_end) in TAI ns; unbounded ends use the int64 extremes.
    sa.Column("valid_begin", sa.BigInteger, nullable=False),
    sa.Column("valid_end", sa.BigInteger, nullable=False),
    sa.CheckConstraint("valid_begin < valid_end", name="valid_range"),
    sa.Index("ix_calibration_lookup", "collection_id", "dataset_type_id", "data_id_key", "valid_begin"),
    sa.Index("ix_calibration_dataset", "dataset_id"),
)
