"""What one audit entry says: a FHIR AuditEvent, flattened to the fields the ledger needs.

The fields follow FHIR R4 AuditEvent (auditevent.html) and the IHE Basic Audit Log Patterns:
``action`` is AuditEvent.action (C R U D E), ``agent`` the who (with the terminal or app
acting for them, BALP's "user agent"), ``on_behalf_of`` the person a token acts for,
``entity`` what was touched and ``citizen`` whose data it is (AuditEvent.entity with the
patient role), ``purpose`` AuditEvent.purposeOfEvent, ``outcome`` AuditEvent.outcome. The
canonical bytes (sorted keys, no spaces) are what the Merkle leaf hashes, so a record reads the
same to every verifier.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

# Identifiers that go into logs and proofs: short and plain (no personal data in clear).
_ID = r"^[A-Za-z0-9._:/@|-]{1,128}$"


class Agent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    who: str = Field(pattern=_ID, description="client id or pseudonymous subject")
    role: str | None = Field(default=None, max_length=64)
    organisation: str | None = Field(default=None, max_length=200)
    acting_via: str | None = Field(
        default=None, pattern=_ID, description="terminal or app acting for the agent"
    )


class AuditRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    entry_id: str = Field(
        pattern=r"^[A-Za-z0-9_-]{16,64}$", description="submitter's idempotency key"
    )
    time: AwareDatetime
    action: Literal["C", "R", "U", "D", "E"]
    agent: Agent
    on_behalf_of: str | None = Field(default=None, pattern=_ID)
    entity_type: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
    entity_id: str | None = Field(default=None, pattern=_ID)
    citizen: str | None = Field(default=None, pattern=_ID, description="whose data")
    purpose: str | None = Field(default=None, max_length=64)
    outcome: Literal["success", "refused", "error"]
    outcome_detail: str | None = Field(default=None, max_length=500)
    request_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:-]{1,128}$")
    source: str | None = Field(default=None, max_length=64, description="source address")
    level: int = Field(ge=1, le=5, description="graded-protection level of what was touched")

    @field_validator("time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    def canonical(self) -> bytes:
        """The bytes the ledger stores and hashes (RFC 8785-like: sorted keys, compact)."""
        return orjson.dumps(
            self.model_dump(mode="json", exclude_none=True), option=orjson.OPT_SORT_KEYS
        )
