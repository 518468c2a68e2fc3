"""The reference data a fresh database starts from: the shipped rules of each medical scheme
and the catalogue (``social_security/data``), installed once at start-up when the tables hold
none. Later versions arrive as data (``onecard social-security rules add FILE``), never as code.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.kit.database import Database
from social_security.claims.catalogue import Catalogue, default_catalogue
from social_security.claims.rules import RuleSet, default_rule_set
from social_security.models import CatalogueItemRow, RuleSetRow
from social_security.schemes import MEDICAL_SCHEMES

log = logging.getLogger(__name__)
DEFAULT_AUTHOR = "onecard-defaults"


async def install_defaults(db: Database) -> None:
    """Install the shipped rules and catalogue where nothing is installed yet (idempotent)."""
    async with db.unit_of_work() as session:
        for scheme in MEDICAL_SCHEMES:
            held = await session.scalar(
                select(func.count())
                .select_from(RuleSetRow)
                .where(RuleSetRow.scheme == scheme.value)  # type: ignore[arg-type]
            )
            if not held:
                await add_rule_set(session, default_rule_set(scheme), author=DEFAULT_AUTHOR)
                log.info("rules.installed", extra={"scheme": scheme.value, "version": 1})
        if not await session.scalar(select(func.count()).select_from(CatalogueItemRow)):
            catalogue = default_catalogue()
            await add_catalogue(session, catalogue)
            log.info("catalogue.installed", extra={"items": len(catalogue.items)})


async def add_rule_set(session: AsyncSession, rules: RuleSet, *, author: str) -> RuleSetRow:
    """Store ``rules`` as its scheme's next version (its own ``version`` must be that number:
    a document says which version it is, so a second upload of it is refused, not duplicated)."""
    newest = await session.scalar(
        select(func.max(RuleSetRow.version)).where(RuleSetRow.scheme == rules.scheme.value)  # type: ignore[arg-type]
    )
    expected = (newest or 0) + 1
    if rules.version != expected:
        raise ValueError(
            f"{rules.scheme.value} holds versions up to {newest or 0}: the document must be "
            f"version {expected}, not {rules.version}"
        )
    row = RuleSetRow(
        scheme=rules.scheme.value,
        version=rules.version,
        year=rules.year,
        effective_from=rules.effective_from,
        document=rules.to_json(),
        created_at=datetime.now(UTC),
        created_by=author,
    )
    session.add(row)
    await session.flush()
    return row


async def add_catalogue(session: AsyncSession, catalogue: Catalogue) -> int:
    """Store the catalogue's items as in effect from its date (a code's newer entry takes over
    from then; the older one stays for bills of earlier dates)."""
    for item in catalogue.items:
        await session.merge(
            CatalogueItemRow(
                code=item.code,
                effective_from=catalogue.effective_from,
                name=item.name,
                kind=item.kind.value,
                catalogue_class=item.catalogue_class.value,
                price_cap_fen=item.price_cap_fen,
            )
        )
    await session.flush()
    return len(catalogue.items)
