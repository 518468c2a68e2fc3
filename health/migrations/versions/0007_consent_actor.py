"""The consent index by actor (health/consent_index.py): a hospital's search reads the Consents
of the patients whose Consents name it, or name no one, instead of every Consent in the store.

Existing current Consents are indexed here, with the rule the store applies to every Consent it
writes from now on (``health.consent_index.actors_of``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

import orjson
import sqlalchemy as sa
from alembic import op

from health.consent_index import actors_of

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Consents read per round trip while indexing the existing ones.
_BATCH = 1000


def upgrade() -> None:
    table = op.create_table(
        "consent_actor",
        # A client id a provision names (urn:onecard:client), or "*" for a provision naming no
        # one; the patient whose Consent it is; the Consent.
        sa.Column("actor", sa.String(255), primary_key=True),
        sa.Column("patient_key", sa.String(64), primary_key=True),
        sa.Column("consent_id", sa.String(64), primary_key=True),
    )
    op.create_index("ix_consent_actor_consent", "consent_actor", ["consent_id"])
    assert table is not None
    connection = op.get_bind()
    consents = connection.execute(
        sa.text(
            "SELECT id, patient_key, content FROM resources WHERE resource_type = 'Consent' "
            "AND deleted = :no AND patient_key IS NOT NULL"
        ).bindparams(no=False)
    )
    while batch := consents.fetchmany(_BATCH):
        rows = [
            {"actor": actor, "patient_key": patient_key, "consent_id": consent_id}
            for consent_id, patient_key, content in batch
            for actor in sorted(actors_of(orjson.loads(content)))
        ]
        if rows:
            connection.execute(table.insert(), rows)


def downgrade() -> None:
    op.drop_table("consent_actor")
