"""Initial registry schema: dimension elements, spatial overlap tables, dataset types,
collections, datasets and calibration validity ranges.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "band",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_band")),
    )
    op.create_table(
        "collection",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("doc", sa.Text(), nullable=True),
        sa.CheckConstraint("type IN ('RUN', 'CHAINED', 'CALIBRATION')", name=op.f("ck_collection_type")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_collection")),
        sa.UniqueConstraint("name", name=op.f("uq_collection_name")),
    )
    op.create_table(
        "dataset_type",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("dimensions", sa.String(length=512), nullable=False),
        sa.Column("storage_class", sa.String(length=128), nullable=False),
        sa.Column("is_calibration", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_type")),
        sa.UniqueConstraint("name", name=op.f("uq_dataset_type_name")),
    )
    op.create_table(
        "instrument",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("visit_max", sa.BigInteger(), nullable=True),
        sa.Column("exposure_max", sa.BigInteger(), nullable=True),
        sa.Column("detector_max", sa.Integer(), nullable=True),
        sa.Column("class_name", sa.String(length=256), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_instrument")),
    )
    op.create_table(
        "registry_attribute",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_registry_attribute")),
    )
    op.create_table(
        "skymap",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("hash", sa.LargeBinary(length=64), nullable=False),
        sa.Column("tract_max", sa.Integer(), nullable=False),
        sa.Column("patch_nx_max", sa.Integer(), nullable=False),
        sa.Column("patch_ny_max", sa.Integer(), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_skymap")),
    )
    op.create_table(
        "collection_chain",
        sa.Column("parent_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("child_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["child_id"], ["collection.id"], name=op.f("fk_collection_chain_child_id")),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["collection.id"], name=op.f("fk_collection_chain_parent_id"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("parent_id", "position", name=op.f("pk_collection_chain")),
        sa.UniqueConstraint("parent_id", "child_id", name=op.f("uq_collection_chain_parent_id_child_id")),
    )
    op.create_index(op.f("ix_collection_chain_child_id"), "collection_chain", ["child_id"], unique=False)
    op.create_table(
        "detector",
        sa.Column("instrument", sa.String(length=128), nullable=False),
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("full_name", sa.String(length=128), nullable=True),
        sa.Column("serial", sa.String(length=128), nullable=True),
        sa.Column("purpose", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["instrument"], ["instrument.name"], name=op.f("fk_detector_instrument")),
        sa.PrimaryKeyConstraint("instrument", "id", name=op.f("pk_detector")),
    )
    op.create_table(
        "physical_filter",
        sa.Column("instrument", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("band", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(["band"], ["band.name"], name=op.f("fk_physical_filter_band")),
        sa.ForeignKeyConstraint(
            ["instrument"], ["instrument.name"], name=op.f("fk_physical_filter_instrument")
        ),
        sa.PrimaryKeyConstraint("instrument", "name", name=op.f("pk_physical_filter")),
    )
    op.create_table(
        "tract",
        sa.Column("skymap", sa.String(length=128), nullable=False),
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("region", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(["skymap"], ["skymap.name"], name=op.f("fk_tract_skymap")),
        sa.PrimaryKeyConstraint("skymap", "id", name=op.f("pk_tract")),
    )
    op.create_table(
        "exposure",
        sa.Column("instrument", sa.String(length=128), nullable=False),
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("physical_filter", sa.String(length=128), nullable=False),
        sa.Column("band", sa.String(length=128), nullable=False),
        sa.Column("day_obs", sa.Integer(), nullable=False),
        sa.Column("obs_id", sa.String(length=128), nullable=True),
        sa.Column("observation_type", sa.String(length=32), nullable=True),
        sa.Column("exposure_time", sa.Float(), nullable=True),
        sa.Column("dark_time", sa.Float(), nullable=True),
        sa.Column("timespan_begin", sa.BigInteger(), nullable=True),
        sa.Column("timespan_end", sa.BigInteger(), nullable=True),
        sa.Column("tracking_ra", sa.Float(), nullable=True),
        sa.Column("tracking_dec", sa.Float(), nullable=True),
        sa.Column("sky_angle", sa.Float(), nullable=True),
        sa.Column("airmass", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["band"], ["band.name"], name=op.f("fk_exposure_band")),
        sa.ForeignKeyConstraint(
            ["instrument", "physical_filter"],
            ["physical_filter.instrument", "physical_filter.name"],
            name=op.f("fk_exposure_instrument_physical_filter"),
        ),
        sa.ForeignKeyConstraint(["instrument"], ["instrument.name"], name=op.f("fk_exposure_instrument")),
        sa.PrimaryKeyConstraint("instrument", "id", name=op.f("pk_exposure")),
    )
    op.create_index(
        op.f("ix_exposure_instrument_day_obs"), "exposure", ["instrument", "day_obs"], unique=False
    )
    op.create_table(
        "patch",
        sa.Column("skymap", sa.String(length=128), nullable=False),
        sa.Column("tract", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("cell_x", sa.Integer(), nullable=False),
        sa.Column("cell_y", sa.Integer(), nullable=False),
        sa.Column("region", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["skymap", "tract"], ["tract.skymap", "tract.id"], name=op.f("fk_patch_skymap_tract")
        ),
        sa.PrimaryKeyConstraint("skymap", "tract", "id", name=op.f("pk_patch")),
    )
    op.create_table(
        "tract_skypix",
        sa.Column("skymap", sa.String(length=128), autoincrement=False, nullable=False),
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("skypix_index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.ForeignKeyConstraint(
            ["skymap", "id"],
            ["tract.skymap", "tract.id"],
            name=op.f("fk_tract_skypix_skymap_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("skymap", "id", "skypix_index", name=op.f("pk_tract_skypix")),
    )
    op.create_index("ix_tract_skypix_lookup", "tract_skypix", ["skypix_index", "skymap", "id"], unique=False)
    op.create_table(
        "visit",
        sa.Column("instrument", sa.String(length=128), nullable=False),
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("physical_filter", sa.String(length=128), nullable=False),
        sa.Column("band", sa.String(length=128), nullable=False),
        sa.Column("day_obs", sa.Integer(), nullable=False),
        sa.Column("timespan_begin", sa.BigInteger(), nullable=True),
        sa.Column("timespan_end", sa.BigInteger(), nullable=True),
        sa.Column("region", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(["band"], ["band.name"], name=op.f("fk_visit_band")),
        sa.ForeignKeyConstraint(
            ["instrument", "physical_filter"],
            ["physical_filter.instrument", "physical_filter.name"],
            name=op.f("fk_visit_instrument_physical_filter"),
        ),
        sa.ForeignKeyConstraint(["instrument"], ["instrument.name"], name=op.f("fk_visit_instrument")),
        sa.PrimaryKeyConstraint("instrument", "id", name=op.f("pk_visit")),
    )
    op.create_table(
        "dataset",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("dataset_type_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("data_id_key", sa.String(length=1024), nullable=False),
        sa.Column("instrument", sa.String(length=128), nullable=True),
        sa.Column("band", sa.String(length=128), nullable=True),
        sa.Column("physical_filter", sa.String(length=128), nullable=True),
        sa.Column("day_obs", sa.Integer(), nullable=True),
        sa.Column("exposure", sa.BigInteger(), nullable=True),
        sa.Column("visit", sa.BigInteger(), nullable=True),
        sa.Column("detector", sa.Integer(), nullable=True),
        sa.Column("skymap", sa.String(length=128), nullable=True),
        sa.Column("tract", sa.Integer(), nullable=True),
        sa.Column("patch", sa.Integer(), nullable=True),
        sa.Column("uri", sa.Text(), nullable=True),
        sa.Column("file_size", sa.BigInteger(), nullable=True),
        sa.Column("checksum", sa.String(length=128), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["band"], ["band.name"], name=op.f("fk_dataset_band")),
        sa.ForeignKeyConstraint(
            ["dataset_type_id"], ["dataset_type.id"], name=op.f("fk_dataset_dataset_type_id")
        ),
        sa.ForeignKeyConstraint(
            ["instrument", "detector"],
            ["detector.instrument", "detector.id"],
            name=op.f("fk_dataset_instrument_detector"),
        ),
        sa.ForeignKeyConstraint(
            ["instrument", "exposure"],
            ["exposure.instrument", "exposure.id"],
            name=op.f("fk_dataset_instrument_exposure"),
        ),
        sa.ForeignKeyConstraint(
            ["instrument", "physical_filter"],
            ["physical_filter.instrument", "physical_filter.name"],
            name=op.f("fk_dataset_instrument_physical_filter"),
        ),
        sa.ForeignKeyConstraint(
            ["instrument", "visit"],
            ["visit.instrument", "visit.id"],
            name=op.f("fk_dataset_instrument_visit"),
        ),
        sa.ForeignKeyConstraint(["instrument"], ["instrument.name"], name=op.f("fk_dataset_instrument")),
        sa.ForeignKeyConstraint(["run_id"], ["collection.id"], name=op.f("fk_dataset_run_id")),
        sa.ForeignKeyConstraint(
            ["skymap", "tract", "patch"],
            ["patch.skymap", "patch.tract", "patch.id"],
            name=op.f("fk_dataset_skymap_tract_patch"),
        ),
        sa.ForeignKeyConstraint(
            ["skymap", "tract"], ["tract.skymap", "tract.id"], name=op.f("fk_dataset_skymap_tract")
        ),
        sa.ForeignKeyConstraint(["skymap"], ["skymap.name"], name=op.f("fk_dataset_skymap")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset")),
        sa.UniqueConstraint(
            "dataset_type_id",
            "run_id",
            "data_id_key",
            name=op.f("uq_dataset_dataset_type_id_run_id_data_id_key"),
        ),
    )
    op.create_index(op.f("ix_dataset_band"), "dataset", ["band"], unique=False)
    op.create_index(op.f("ix_dataset_day_obs"), "dataset", ["day_obs"], unique=False)
    op.create_index(op.f("ix_dataset_detector"), "dataset", ["detector"], unique=False)
    op.create_index(op.f("ix_dataset_exposure"), "dataset", ["exposure"], unique=False)
    op.create_index(op.f("ix_dataset_instrument"), "dataset", ["instrument"], unique=False)
    op.create_index(op.f("ix_dataset_patch"), "dataset", ["patch"], unique=False)
    op.create_index(op.f("ix_dataset_physical_filter"), "dataset", ["physical_filter"], unique=False)
    op.create_index(op.f("ix_dataset_run_id"), "dataset", ["run_id"], unique=False)
    op.create_index(op.f("ix_dataset_skymap"), "dataset", ["skymap"], unique=False)
    op.create_index(op.f("ix_dataset_tract"), "dataset", ["tract"], unique=False)
    op.create_index(op.f("ix_dataset_uri"), "dataset", ["uri"], unique=False)
    op.create_index(op.f("ix_dataset_visit"), "dataset", ["visit"], unique=False)
    op.create_table(
        "patch_skypix",
        sa.Column("skymap", sa.String(length=128), autoincrement=False, nullable=False),
        sa.Column("tract", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("skypix_index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.ForeignKeyConstraint(
            ["skymap", "tract", "id"],
            ["patch.skymap", "patch.tract", "patch.id"],
            name=op.f("fk_patch_skypix_skymap_tract_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("skymap", "tract", "id", "skypix_index", name=op.f("pk_patch_skypix")),
    )
    op.create_index(
        "ix_patch_skypix_lookup", "patch_skypix", ["skypix_index", "skymap", "tract", "id"], unique=False
    )
    op.create_table(
        "visit_detector_region",
        sa.Column("instrument", sa.String(length=128), nullable=False),
        sa.Column("visit", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("detector", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("region", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["instrument", "detector"],
            ["detector.instrument", "detector.id"],
            name=op.f("fk_visit_detector_region_instrument_detector"),
        ),
        sa.ForeignKeyConstraint(
            ["instrument", "visit"],
            ["visit.instrument", "visit.id"],
            name=op.f("fk_visit_detector_region_instrument_visit"),
        ),
        sa.PrimaryKeyConstraint("instrument", "visit", "detector", name=op.f("pk_visit_detector_region")),
    )
    op.create_table(
        "visit_skypix",
        sa.Column("instrument", sa.String(length=128), autoincrement=False, nullable=False),
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("skypix_index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.ForeignKeyConstraint(
            ["instrument", "id"],
            ["visit.instrument", "visit.id"],
            name=op.f("fk_visit_skypix_instrument_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("instrument", "id", "skypix_index", name=op.f("pk_visit_skypix")),
    )
    op.create_index(
        "ix_visit_skypix_lookup", "visit_skypix", ["skypix_index", "instrument", "id"], unique=False
    )
    op.create_table(
        "calibration",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Uuid(), nullable=False),
        sa.Column("dataset_type_id", sa.Integer(), nullable=False),
        sa.Column("data_id_key", sa.String(length=1024), nullable=False),
        sa.Column("valid_begin", sa.BigInteger(), nullable=False),
        sa.Column("valid_end", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("valid_begin < valid_end", name=op.f("ck_calibration_valid_range")),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            ["collection.id"],
            name=op.f("fk_calibration_collection_id"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["dataset.id"], name=op.f("fk_calibration_dataset_id"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["dataset_type_id"], ["dataset_type.id"], name=op.f("fk_calibration_dataset_type_id")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calibration")),
    )
    op.create_index("ix_calibration_dataset", "calibration", ["dataset_id"], unique=False)
    op.create_index(
        "ix_calibration_lookup",
        "calibration",
        ["collection_id", "dataset_type_id", "data_id_key", "valid_begin"],
        unique=False,
    )
    op.create_table(
        "visit_detector_region_skypix",
        sa.Column("instrument", sa.String(length=128), autoincrement=False, nullable=False),
        sa.Column("visit", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("detector", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("skypix_index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.ForeignKeyConstraint(
            ["instrument", "visit", "detector"],
            [
                "visit_detector_region.instrument",
                "visit_detector_region.visit",
                "visit_detector_region.detector",
            ],
            name=op.f("fk_visit_detector_region_skypix_instrument_visit_detector"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "instrument", "visit", "detector", "skypix_index", name=op.f("pk_visit_detector_region_skypix")
        ),
    )
    op.create_index(
        "ix_visit_detector_region_skypix_lookup",
        "visit_detector_region_skypix",
        ["skypix_index", "instrument", "visit", "detector"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_table("visit_detector_region_skypix")
    op.drop_table("calibration")
    op.drop_table("visit_skypix")
    op.drop_table("visit_detector_region")
    op.drop_table("patch_skypix")
    op.drop_table("dataset")
    op.drop_table("visit")
    op.drop_table("tract_skypix")
    op.drop_table("patch")
    op.drop_table("exposure")
    op.drop_table("tract")
    op.drop_table("physical_filter")
    op.drop_table("detector")
    op.drop_table("collection_chain")
    op.drop_table("skymap")
    op.drop_table("registry_attribute")
    op.drop_table("instrument")
    op.drop_table("dataset_type")
    op.drop_table("collection")
    op.drop_table("band")
