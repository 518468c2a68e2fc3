"""What a stored version is, and how new versions are staged and written in bulk.

Every write (create, update, patch, delete; alone or in a Bundle) becomes a new version: a row
in ``resource_versions`` and the matching ``resources`` row, plus the search index, all in the
caller's transaction. :class:`Writes` collects them so a Bundle of hundreds of entries costs a
few executemany statements, not hundreds of round trips.
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Row
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from health.fhir.compartment import patient_key as compartment_patient_key
from health.search.index import Indexed, reindex_many
from health.store import repository
from health.store.models import ResourceRow, ResourceVersionRow
from services.kit.errors import Problem


@dataclass(frozen=True, slots=True)
class Version:
    """One version of one resource, as stored (``content`` is empty for a deletion)."""

    resource_type: str
    id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    content: str
    # Whose compartment it is in, and who wrote it: what access rules and audit entries need.
    patient_key: str | None = None
    author: str | None = None

    @classmethod
    def of(cls, row: ResourceRow | ResourceVersionRow | Row[Any]) -> Version:
        return cls(
            row.resource_type,
            row.id,
            row.version_id,
            row.last_updated,
            row.deleted,
            row.content,
            row.patient_key,
            row.author,
        )

    @property
    def etag(self) -> str:
        # FHIR R4 http.html#versioning: the weak ETag carries meta.versionId.
        return f'W/"{self.version_id}"'

    @property
    def last_modified(self) -> str:
        # RFC 9110 section 8.8.2: an HTTP-date.
        return email.utils.format_datetime(self.last_updated.astimezone(UTC), usegmt=True)

    @property
    def relative_url(self) -> str:
        return f"{self.resource_type}/{self.id}"

    @property
    def version_url(self) -> str:
        return f"{self.resource_type}/{self.id}/_history/{self.version_id}"

    def resource(self) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self.content)
        return parsed


def now() -> datetime:
    """The time of a write, at the millisecond precision ``meta.lastUpdated`` shows.

    Stored and shown times then agree exactly, so ``_since`` with a time read from
    ``meta.lastUpdated`` includes that version.
    """
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def instant(moment: datetime) -> str:
    """A FHIR instant (datatypes.html#instant) in UTC."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Writes:
    """New versions staged in one transaction, written by :meth:`flush`."""

    session: AsyncSession
    author: str | None
    moment: datetime = field(default_factory=now)
    _new: list[dict[str, Any]] = field(default_factory=list)
    _replaced: list[dict[str, Any]] = field(default_factory=list)
    _versions: list[dict[str, Any]] = field(default_factory=list)
    _fresh_index: list[Indexed] = field(default_factory=list)
    _reindex: list[Indexed] = field(default_factory=list)
    # Every version staged, in order: what the audit ledger is told was written.
    written: list[Version] = field(default_factory=list)

    def stage(
        self,
        *,
        resource_type: str,
        resource_id: str,
        version_id: int,
        resource: dict[str, Any] | None,
        method: str,
        is_new: bool,
        patient_key: str | None = None,
    ) -> Version:
        """Stage version ``version_id`` of a resource (``resource`` None: a deletion).

        ``resource`` is changed in place: its id and meta.versionId / meta.lastUpdated are
        the server's (FHIR R4 resource.html#Meta). A deletion keeps the patient key it had.
        """
        if resource is not None:
            resource["id"] = resource_id
            meta = resource.get("meta")
            meta = dict(meta) if isinstance(meta, dict) else {}
            meta["versionId"] = str(version_id)
            meta["lastUpdated"] = instant(self.moment)
            resource["meta"] = meta
            patient_key = compartment_patient_key(resource)
            content = orjson.dumps(resource).decode()
        else:
            content = ""
        row = {
            "resource_type": resource_type,
            "id": resource_id,
            "version_id": version_id,
            "last_updated": self.moment,
            "deleted": resource is None,
            "patient_key": patient_key,
            "author": self.author,
            "content": content,
        }
        (self._new if is_new else self._replaced).append(row)
        self._versions.append({**row, "method": method})
        indexed = Indexed(resource_type, resource_id, resource, patient_key)
        if is_new:
            self._fresh_index.append(indexed)
        else:
            self._reindex.append(indexed)
        version = Version(
            resource_type,
            resource_id,
            version_id,
            self.moment,
            resource is None,
            content,
            patient_key,
            self.author,
        )
        self.written.append(version)
        return version

    async def flush(self) -> None:
        """Write what was staged: current rows, versions, and the search index."""
        try:
            if self._new:
                await repository.insert_current(self.session, self._new)
            for row in self._replaced:
                await repository.replace_current(self.session, row)
            if self._versions:
                await repository.insert_versions(self.session, self._versions)
        except IntegrityError:
            # Writers lock what they change first (repository.lock), so this is a version
            # written meanwhile by a path that did not: a conflict, for the client to retry.
            raise Problem(409, "a concurrent write changed this resource; retry") from None
        if self._fresh_index:
            await reindex_many(self.session, self._fresh_index, fresh=True)
        if self._reindex:
            await reindex_many(self.session, self._reindex, fresh=False)
        self._new, self._replaced, self._versions = [], [], []
        self._fresh_index, self._reindex = [], []


def parse_if_match(value: str | None) -> int | None:
    """The version an ``If-Match`` names (``W/"3"`` or ``"3"``), FHIR R4 http.html#concurrency."""
    if value is None:
        return None
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit():
        raise Problem(400, f'If-Match {value[:40]!r} is not a version ETag such as W/"1"')
    return int(text)
