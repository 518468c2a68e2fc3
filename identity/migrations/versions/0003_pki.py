"""Card PKI: CA keys (encrypted at rest), issued certificates with their status, CRLs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_LIVE = "status IN ('current', 'next')"


def upgrade() -> None:
    op.create_table(
        "ca_keys",
        # Hex Subject Key Identifier of the CA key: the AKI of what it signs.
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(512), nullable=False),
        sa.Column("issuer_kid", sa.String(64), nullable=True),
        sa.Column("certificate_pem", sa.Text(), nullable=False),
        # Encrypted PKCS#8 PEM; never the clear key.
        sa.Column("encrypted_key_pem", sa.Text(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("crl_number", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("status_version", sa.Integer(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("kid", name="pk_ca_keys"),
        sa.ForeignKeyConstraint(["issuer_kid"], ["ca_keys.kid"], name="fk_ca_keys_issuer"),
        sa.CheckConstraint("role IN ('root', 'issuing')", name="ck_ca_keys_role"),
        sa.CheckConstraint("status IN ('current', 'next', 'retired')", name="ck_ca_keys_status"),
    )
    # One current and one next CA per role: what makes concurrent first start-ups safe.
    op.create_index(
        "uq_ca_keys_role_live_status",
        "ca_keys",
        ["role", "status"],
        unique=True,
        sqlite_where=sa.text(_LIVE),
        postgresql_where=sa.text(_LIVE),
    )

    op.create_table(
        "certificates",
        sa.Column("serial", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("device_serial", sa.String(64), nullable=False),
        sa.Column("issuer_kid", sa.String(64), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("revocation_reason", sa.String(32), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("crl_number_at_change", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("serial", name="pk_certificates"),
        sa.ForeignKeyConstraint(["issuer_kid"], ["ca_keys.kid"], name="fk_certificates_issuer"),
        sa.CheckConstraint("kind IN ('card', 'terminal')", name="ck_certificates_kind"),
        sa.CheckConstraint(
            "status IN ('good', 'suspended', 'revoked')", name="ck_certificates_status"
        ),
    )
    op.create_index("ix_certificates_subject_id", "certificates", ["subject_id"])
    op.create_index("ix_certificates_device_serial", "certificates", ["device_serial"])
    op.create_index(
        "ix_certificates_issuer_change", "certificates", ["issuer_kid", "crl_number_at_change"]
    )
    op.create_index("ix_certificates_issuer_status", "certificates", ["issuer_kid", "status"])

    op.create_table(
        "crls",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("issuer_kid", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("base_number", sa.Integer(), nullable=True),
        sa.Column("status_version", sa.Integer(), nullable=False),
        sa.Column("this_update", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_update", sa.DateTime(timezone=True), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_crls"),
        sa.ForeignKeyConstraint(["issuer_kid"], ["ca_keys.kid"], name="fk_crls_issuer"),
        sa.UniqueConstraint("issuer_kid", "number", name="uq_crls_issuer_number"),
        sa.CheckConstraint("kind IN ('full', 'delta')", name="ck_crls_kind"),
    )
    op.create_index("ix_crls_issuer_kind_number", "crls", ["issuer_kid", "kind", "number"])


def downgrade() -> None:
    op.drop_index("ix_crls_issuer_kind_number", table_name="crls")
    op.drop_table("crls")
    op.drop_index("ix_certificates_issuer_status", table_name="certificates")
    op.drop_index("ix_certificates_issuer_change", table_name="certificates")
    op.drop_index("ix_certificates_device_serial", table_name="certificates")
    op.drop_index("ix_certificates_subject_id", table_name="certificates")
    op.drop_table("certificates")
    op.drop_index("uq_ca_keys_role_live_status", table_name="ca_keys")
    op.drop_table("ca_keys")
