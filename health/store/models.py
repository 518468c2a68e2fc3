"""The store's tables (migration 0002): the current version of each resource, and every version.

The search helper (``health.search``) reads ``resources`` and indexes what is written here; the
shape of both tables is a contract with it (see the migration).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Column, Index, Integer, String, Text
from sqlmodel import Field, SQLModel

from services.kit.sqltypes import utc_column


class ResourceRow(SQLModel, table=True):
    """The current version of one resource (a deleted one stays, marked ``deleted``)."""

    __tablename__ = "resources"
    __table_args__ = (
        Index("ix_resources_type_last_updated", "resource_type", "last_updated"),
        Index("ix_resources_patient_key", "patient_key"),
    )

    resource_type: str = Field(sa_column=Column(String(64), primary_key=True))
    id: str = Field(sa_column=Column(String(64), primary_key=True))
    version_id: int = Field(sa_column=Column(Integer, nullable=False))
    last_updated: datetime = Field(sa_column=utc_column())
    deleted: bool = Field(sa_column=Column(Boolean, nullable=False))
    # The logical id of the Patient whose compartment holds the resource (FHIR R4
    # compartmentdefinition-patient); a Patient's is its own id. The key to shard by later.
    patient_key: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    # The client_id of the writer (a hospital's system): "reads what it authored".
    author: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    # The resource JSON as written, with meta.versionId and meta.lastUpdated set ("" if deleted).
    content: str = Field(sa_column=Column(Text, nullable=False))


class ResourceVersionRow(SQLModel, table=True):
    """One version of one resource, for vread and history (FHIR R4 http.html#history)."""

    __tablename__ = "resource_versions"
    __table_args__ = (
        Index("ix_resource_versions_last_updated", "last_updated"),
        Index("ix_resource_versions_type_last_updated", "resource_type", "last_updated"),
    )

    resource_type: str = Field(sa_column=Column(String(64), primary_key=True))
    id: str = Field(sa_column=Column(String(64), primary_key=True))
    version_id: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    last_updated: datetime = Field(sa_column=utc_column())
    deleted: bool = Field(sa_column=Column(Boolean, nullable=False))
    patient_key: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    author: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    content: str = Field(sa_column=Column(Text, nullable=False))
    # The interaction that made this version: POST, PUT, PATCH or DELETE (Bundle.entry.request).
    method: str = Field(sa_column=Column(String(8), nullable=False))
