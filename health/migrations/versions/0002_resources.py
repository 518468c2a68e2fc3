"""FHIR resources: the current version of each (``resources``) and every version.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

``resources`` is what reads, conditional interactions and search start from; the
``resource_versions`` rows serve vread and history (FHIR R4 http.html#history). Both carry the
patient key (the Patient compartment the resource is in), so they can be sharded by it later.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _columns() -> list[sa.Column[object]]:
    return [
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("patient_key", sa.String(64), nullable=True),
        sa.Column("author", sa.String(64), nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "resources",
        *_columns(),
        sa.PrimaryKeyConstraint("resource_type", "id", name="pk_resources"),
        sa.CheckConstraint("version_id >= 1", name="ck_resources_version_id"),
    )
    # Type history and _lastUpdated searches; the patient's compartment ($everything, sharding).
    op.create_index(
        "ix_resources_type_last_updated", "resources", ["resource_type", "last_updated"]
    )
    op.create_index("ix_resources_patient_key", "resources", ["patient_key"])

    op.create_table(
        "resource_versions",
        *_columns(),
        sa.Column("method", sa.String(8), nullable=False),
        sa.PrimaryKeyConstraint("resource_type", "id", "version_id", name="pk_resource_versions"),
        sa.CheckConstraint("version_id >= 1", name="ck_resource_versions_version_id"),
        sa.CheckConstraint(
            "method IN ('POST', 'PUT', 'PATCH', 'DELETE')", name="ck_resource_versions_method"
        ),
    )
    # System history and _since; type history.
    op.create_index("ix_resource_versions_last_updated", "resource_versions", ["last_updated"])
    op.create_index(
        "ix_resource_versions_type_last_updated",
        "resource_versions",
        ["resource_type", "last_updated"],
    )


def downgrade() -> None:
    op.drop_index("ix_resource_versions_type_last_updated", table_name="resource_versions")
    op.drop_index("ix_resource_versions_last_updated", table_name="resource_versions")
    op.drop_table("resource_versions")
    op.drop_index("ix_resources_patient_key", table_name="resources")
    op.drop_index("ix_resources_type_last_updated", table_name="resources")
    op.drop_table("resources")
