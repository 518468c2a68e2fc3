"""The graded-protection policy in force, set by the security administrator (issue 4).

Separation of duties (MLPS 2.0 level 3): the security administrator (``policy.manage``) changes
the levels; nobody else can, and changing them reads no personal data. Every version is kept
(append-only table) and every change is itself a ledger entry. The gateway and every service
poll ``GET /audit/policy`` (public: the levels are not secret, and a service must be able to
learn them before it holds any token) and enforce the newest version within seconds
(``services.kit.policy_watch``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy import Column, Integer, String, Text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.kit.audit import access_record
from services.kit.auth import require_token
from services.kit.deps import SessionDep
from services.kit.errors import Problem
from services.kit.protection import PolicyOverride, ProtectionPolicy, protection_guard
from services.kit.sqltypes import utc_column, utcnow
from services.kit.tokens import AccessToken

router = APIRouter(
    prefix="/audit/policy", tags=["policy"], dependencies=[Depends(protection_guard())]
)
SecurityAdministrator = Annotated[AccessToken, Depends(require_token("policy.manage"))]


class PolicyVersion(SQLModel, table=True):
    __tablename__ = "protection_policies"

    version: int = SQLField(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    policy: str = SQLField(sa_column=Column(Text, nullable=False))
    set_by: str = SQLField(sa_column=Column(String(128), nullable=False))
    set_at: datetime = SQLField(sa_column=utc_column())
    reason: str | None = SQLField(default=None, sa_column=Column(String(500), nullable=True))


class PolicyDocument(BaseModel):
    """The policy in force: the operator's changes to the default table, and their version
    (0: none set through the ledger yet; the services' own settings apply)."""

    version: int
    set_at: datetime | None = None
    policy: PolicyOverride


class PolicyChange(BaseModel):
    policy: PolicyOverride
    # Optimistic concurrency: the version this change was made from (two administrators
    # editing at once must not silently overwrite each other).
    based_on: int = Field(ge=0)
    reason: str = Field(min_length=3, max_length=500)


async def latest(session: AsyncSession) -> PolicyVersion | None:
    query = select(PolicyVersion).order_by(col(PolicyVersion.version).desc()).limit(1)
    return (await session.exec(query)).first()


def document(row: PolicyVersion | None) -> PolicyDocument:
    if row is None:
        return PolicyDocument(version=0, policy=PolicyOverride())
    return PolicyDocument(
        version=row.version,
        set_at=row.set_at,
        policy=PolicyOverride.model_validate_json(row.policy),
    )


@router.get("", summary="The graded-protection policy in force (public)")
async def get_policy(session: SessionDep) -> PolicyDocument:
    return document(await latest(session))


@router.put(
    "",
    summary="Set the graded-protection policy (the security administrator only)",
    responses={409: {"description": "Another change was made since based_on"}},
)
async def set_policy(
    change: PolicyChange,
    request: Request,
    session: SessionDep,
    admin: SecurityAdministrator,
) -> PolicyDocument:
    current = await latest(session)
    version = current.version if current is not None else 0
    if change.based_on != version:
        raise Problem(409, f"the policy is at version {version}, not {change.based_on}: reload")
    new_version = version + 1
    # Write-ahead: the change is in the ledger before it is stored (and so before it acts).
    # Appended before this transaction writes anything: on SQLite the ledger's writer needs
    # the database's one write lock, which this request would otherwise hold.
    entry = access_record(
        request,
        action="U",
        entity_type="ProtectionPolicy",
        entity_id=str(new_version),
        level=3,
        detail=change.reason,
        token=admin,
    )
    await request.app.state.ledger.append(entry)
    row = PolicyVersion(
        version=new_version,
        policy=orjson.dumps(change.policy.model_dump(mode="json")).decode(),
        set_by=admin.sub,
        set_at=utcnow(),
        reason=change.reason,
    )
    session.add(row)
    try:
        await session.flush()
    except IntegrityError:
        raise Problem(409, "another policy change was saved at the same moment: reload") from None
    # The request's unit of work commits on return; this process enforces it from now on.
    request.app.state.protection_policy = ProtectionPolicy.from_override(change.policy)
    return document(row)


async def load_policy(session: AsyncSession) -> PolicyOverride | None:
    """The newest policy set through the ledger, if any (the ledger enforces it too)."""
    row = await latest(session)
    return None if row is None else PolicyOverride.model_validate_json(row.policy)
