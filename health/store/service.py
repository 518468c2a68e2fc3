"""The FHIR R4 REST interactions on single resources (http.html): the store's rules.

Writers serialize on what they change (``repository.lock``): an update or delete on its
``Type/id``, a conditional interaction on its ``Type?query``. The lock is taken before the
current version is read, so an ``If-Match`` is judged on the version as it is when the write
happens, and a conditional create searches only after any earlier creator has committed:
50 concurrent conditional creates make exactly one resource.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jsonpatch
from sqlalchemy import Row
from sqlmodel.ext.asyncio.session import AsyncSession

from health.fhir.outcome import Issue, fhir_problem
from health.fhir.validation import check_id, validate_resource
from health.search.query import find_ids
from health.store import repository
from health.store.versions import Version, Writes
from services.kit.errors import Problem

# http.html#cond-update: one match is required; two are enough to know there are several.
_MATCH_LIMIT = 2


@dataclass(frozen=True, slots=True)
class Written:
    """The outcome of a write: the version now current, and whether it was a creation."""

    version: Version
    created: bool
    # A conditional create that found its match wrote nothing (http.html#ccreate: 200).
    matched: bool = False


def search_params(query: str) -> list[tuple[str, str]]:
    """The parameters of a conditional URL's query (``identifier=a|b&_id=x``); 400 if none."""
    params = parse_qsl(query.lstrip("?"), keep_blank_values=True)
    if not params:
        raise Problem(400, "the condition has no search parameters")
    return params


def describe(query: str) -> str:
    """A condition as named in errors: its parameter names only, never their values (an
    identifier may be a person's number, and errors reach logs)."""
    names = sorted({name for name, _ in parse_qsl(query.lstrip("?"), keep_blank_values=True)})
    return f"the condition on {', '.join(names) or 'nothing'}"


def condition_key(resource_type: str, params: list[tuple[str, str]]) -> str:
    return f"{resource_type}?{urlencode(sorted(params))}"


def instance_key(resource_type: str, resource_id: str) -> str:
    return f"{resource_type}/{resource_id}"


async def matches(
    *, session: AsyncSession, resource_type: str, params: list[tuple[str, str]]
) -> list[str]:
    """Ids of the current resources matching a condition (at most two: one, or "several")."""
    return await find_ids(session, resource_type, params, limit=_MATCH_LIMIT)


async def find_matches(
    *, session: AsyncSession, resource_type: str, params: list[tuple[str, str]], limit: int
) -> list[str]:
    """Ids of the current resources matching search parameters (``health.search``)."""
    return await find_ids(session, resource_type, params, limit=limit)


async def lock_condition(
    *, session: AsyncSession, resource_type: str, params: list[tuple[str, str]]
) -> None:
    """Hold the condition's lock: its answer cannot change before this transaction ends."""
    await repository.lock(session, [condition_key(resource_type, params)])


async def current_or_none(
    *, session: AsyncSession, resource_type: str, resource_id: str
) -> Version | None:
    """The current version (deleted or not), or None if the resource was never written."""
    row = await repository.current(session, resource_type=resource_type, resource_id=resource_id)
    return None if row is None else Version.of(row)


async def read(*, session: AsyncSession, resource_type: str, resource_id: str) -> Version:
    """The current version; 404 if never known, 410 if deleted (http.html#read)."""
    row = await repository.current(session, resource_type=resource_type, resource_id=resource_id)
    return Version.of(_readable(row, resource_type, resource_id))


async def read_with_citizen(
    *, session: AsyncSession, resource_type: str, resource_id: str
) -> tuple[Version, dict[str, str]]:
    """:func:`read`, with the citizen whose record it is as ``citizens_of`` would answer for
    its patient (empty when it is no patient's, or the patient is linked to no citizen), for
    the read's audit entry: one statement instead of a read and then a lookup of the patient."""
    found = await repository.current_with_citizen(
        session, resource_type=resource_type, resource_id=resource_id
    )
    row = _readable(found, resource_type, resource_id)
    version = Version.of(row)
    if version.patient_key is None or row.citizen is None:
        return version, {}
    return version, {version.patient_key: row.citizen}


def _readable(row: Row[Any] | None, resource_type: str, resource_id: str) -> Row[Any]:
    """``row`` if it is a readable current version; 404 if none, 410 if a deletion."""
    if row is None:
        raise Problem(404, f"{resource_type}/{resource_id} is not known")
    if row.deleted:
        version = Version.of(row)
        raise Problem(
            410,
            f"{resource_type}/{resource_id} was deleted (version {row.version_id})",
            headers={"ETag": version.etag, "Last-Modified": version.last_modified},
        )
    return row


async def vread(
    *, session: AsyncSession, resource_type: str, resource_id: str, version_id: int
) -> Version:
    """One version (http.html#vread); 410 for the version that records a deletion."""
    row = await repository.version(
        session, resource_type=resource_type, resource_id=resource_id, version_id=version_id
    )
    if row is None:
        raise Problem(404, f"{resource_type}/{resource_id} has no version {version_id}")
    if row.deleted:
        raise Problem(410, f"version {version_id} of {resource_type}/{resource_id} is a deletion")
    return Version.of(row)


async def create(
    *,
    session: AsyncSession,
    resource_type: str,
    resource: Any,
    author: str | None,
    if_none_exist: str | None = None,
) -> Written:
    """Create with a server-assigned id (http.html#create), or find the match (#ccreate)."""
    resource = validate_resource(resource, expected_type=resource_type)
    if if_none_exist is not None:
        params = search_params(if_none_exist)
        await lock_condition(session=session, resource_type=resource_type, params=params)
        found = await matches(session=session, resource_type=resource_type, params=params)
        if len(found) > 1:
            raise Problem(
                412, f"If-None-Exist: {describe(if_none_exist)} matches several resources"
            )
        if found:
            existing = await read(
                session=session, resource_type=resource_type, resource_id=found[0]
            )
            return Written(existing, created=False, matched=True)
    writes = Writes(session, author)
    version = writes.stage(
        resource_type=resource_type,
        resource_id=str(uuid.uuid4()),
        version_id=1,
        resource=resource,
        method="POST",
        is_new=True,
    )
    await writes.flush()
    return Written(version, created=True)


def _check_if_match(
    current: Version | None, if_match: int | None, resource_type: str, resource_id: str
) -> None:
    # http.html#concurrency: a version other than the current one is a 412.
    if if_match is None:
        return
    if current is None or current.deleted or current.version_id != if_match:
        have = "none" if current is None or current.deleted else str(current.version_id)
        raise Problem(
            412,
            f"If-Match version {if_match} is not the current version of "
            f"{resource_type}/{resource_id} (current: {have})",
        )


async def update(
    *,
    session: AsyncSession,
    resource_type: str,
    resource_id: str,
    resource: Any,
    author: str | None,
    if_match: int | None = None,
) -> Written:
    """Update, or create with the client's id (http.html#update, "update as create")."""
    check_id(resource_id)
    resource = validate_resource(resource, expected_type=resource_type)
    body_id = resource.get("id")
    if body_id is None:
        raise fhir_problem(
            400,
            [Issue("required", "an update must carry the resource's id", (f"{resource_type}.id",))],
        )
    if body_id != resource_id:
        raise fhir_problem(
            400,
            [
                Issue(
                    "invalid",
                    f"the body's id {str(body_id)[:64]!r} is not the URL's {resource_id!r}",
                    (f"{resource_type}.id",),
                )
            ],
        )
    await repository.lock(session, [instance_key(resource_type, resource_id)])
    return await _write_update(
        session=session,
        resource_type=resource_type,
        resource_id=resource_id,
        resource=resource,
        author=author,
        if_match=if_match,
        method="PUT",
    )


async def _write_update(
    *,
    session: AsyncSession,
    resource_type: str,
    resource_id: str,
    resource: dict[str, Any],
    author: str | None,
    if_match: int | None,
    method: str,
) -> Written:
    """The write of an update, its instance lock held."""
    row = await repository.current(session, resource_type=resource_type, resource_id=resource_id)
    current = Version.of(row) if row is not None else None
    _check_if_match(current, if_match, resource_type, resource_id)
    writes = Writes(session, author)
    version = writes.stage(
        resource_type=resource_type,
        resource_id=resource_id,
        version_id=1 if current is None else current.version_id + 1,
        resource=resource,
        method=method,
        is_new=current is None,
    )
    await writes.flush()
    return Written(version, created=current is None or current.deleted)


async def conditional_update(
    *,
    session: AsyncSession,
    resource_type: str,
    query: str,
    resource: Any,
    author: str | None,
    if_match: int | None = None,
) -> Written:
    """Update the one resource matching ``query`` (http.html#cond-update)."""
    params = search_params(query)
    resource = validate_resource(resource, expected_type=resource_type)
    await lock_condition(session=session, resource_type=resource_type, params=params)
    found = await matches(session=session, resource_type=resource_type, params=params)
    if len(found) > 1:
        raise Problem(412, f"{describe(query)} matches several resources")
    body_id = resource.get("id")
    if found:
        target = found[0]
        if body_id is not None and body_id != target:
            raise fhir_problem(
                400,
                [
                    Issue(
                        "invalid",
                        f"the body's id {str(body_id)[:64]!r} is not the matched resource's",
                        (f"{resource_type}.id",),
                    )
                ],
            )
    elif body_id is not None:
        target = str(body_id)
    else:
        target = str(uuid.uuid4())
    await repository.lock(session, [instance_key(resource_type, target)])
    return await _write_update(
        session=session,
        resource_type=resource_type,
        resource_id=target,
        resource=resource,
        author=author,
        if_match=if_match,
        method="PUT",
    )


def apply_patch(document: dict[str, Any], operations: Any) -> dict[str, Any]:
    """``document`` after an RFC 6902 JSON Patch; 400 for a malformed patch, 422 if it fails."""
    if not isinstance(operations, list):
        raise Problem(400, "a JSON Patch (RFC 6902) is a JSON array of operations")
    # Messages name the operation, never the resource's values: jsonpatch's and jsonpointer's
    # own messages quote the document, which may hold personal data and reaches logs.
    try:
        steps = [(op, jsonpatch.JsonPatch([op])) for op in operations]
    except (jsonpatch.InvalidJsonPatch, jsonpatch.JsonPointerException, TypeError, ValueError):
        raise Problem(400, "invalid JSON Patch: each operation needs op and a path") from None
    # RFC 6902 section 5: the operations apply in order, to a copy (none applies if one fails).
    patched: Any = copy.deepcopy(document)
    for index, (operation, step) in enumerate(steps):
        where = f"operation {index} ({operation.get('op')} {str(operation.get('path'))[:100]})"
        try:
            patched = step.apply(patched, in_place=True)
        except jsonpatch.JsonPatchTestFailed:
            # RFC 6902 section 4.6 / RFC 5789 section 2.2: a failed test is a conflict with
            # the resource's state; FHIR R4 http.html#patch answers it with 422.
            raise Problem(422, f"JSON Patch {where}: the tested value differs") from None
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise Problem(422, f"JSON Patch {where} cannot be applied: {_kind(exc)}") from None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError):
            raise Problem(422, f"JSON Patch {where} cannot be applied") from None
    if not isinstance(patched, dict):
        raise Problem(422, "the patched document is not a resource")
    return patched


def _kind(exc: Exception) -> str:
    if isinstance(exc, jsonpatch.JsonPointerException):
        return "its path does not exist in the resource"
    if isinstance(exc, jsonpatch.JsonPatchConflict):
        return "it conflicts with the resource"
    return "invalid operation"


async def patch(
    *,
    session: AsyncSession,
    resource_type: str,
    resource_id: str,
    operations: Any,
    author: str | None,
    if_match: int | None = None,
) -> Written:
    """Apply a JSON Patch to the current version (http.html#patch)."""
    check_id(resource_id)
    await repository.lock(session, [instance_key(resource_type, resource_id)])
    current = await read(session=session, resource_type=resource_type, resource_id=resource_id)
    _check_if_match(current, if_match, resource_type, resource_id)
    patched = apply_patch(current.resource(), operations)
    if patched.get("resourceType") != resource_type or patched.get("id") != resource_id:
        raise Problem(422, "a patch may not change the resource's type or id")
    try:
        validate_resource(patched, expected_type=resource_type)
    except Problem as exc:
        # The patch was well-formed but its result is not a valid resource: 422.
        raise Problem(422, exc.detail, **exc.extensions) from None
    writes = Writes(session, author)
    version = writes.stage(
        resource_type=resource_type,
        resource_id=resource_id,
        version_id=current.version_id + 1,
        resource=patched,
        method="PATCH",
        is_new=False,
    )
    await writes.flush()
    return Written(version, created=False)


async def conditional_patch(
    *,
    session: AsyncSession,
    resource_type: str,
    query: str,
    operations: Any,
    author: str | None,
    if_match: int | None = None,
) -> Written:
    """Patch the one resource matching ``query`` (http.html#patch: conditional patch)."""
    params = search_params(query)
    await lock_condition(session=session, resource_type=resource_type, params=params)
    found = await matches(session=session, resource_type=resource_type, params=params)
    if len(found) != 1:
        how = "no resource" if not found else "several resources"
        raise Problem(404 if not found else 412, f"{describe(query)} matches {how}")
    return await patch(
        session=session,
        resource_type=resource_type,
        resource_id=found[0],
        operations=operations,
        author=author,
        if_match=if_match,
    )


async def delete(
    *,
    session: AsyncSession,
    resource_type: str,
    resource_id: str,
    author: str | None,
    if_match: int | None = None,
) -> Version | None:
    """Delete logically: a new version marks it deleted (http.html#delete).

    Deleting what does not exist or is already deleted changes nothing and is not an error
    (the spec allows 200/204 for an idempotent delete); the answer is then None.
    """
    check_id(resource_id)
    await repository.lock(session, [instance_key(resource_type, resource_id)])
    row = await repository.current(session, resource_type=resource_type, resource_id=resource_id)
    current = Version.of(row) if row is not None else None
    _check_if_match(current, if_match, resource_type, resource_id)
    if row is None or row.deleted:
        return None
    writes = Writes(session, author)
    version = writes.stage(
        resource_type=resource_type,
        resource_id=resource_id,
        version_id=row.version_id + 1,
        resource=None,
        method="DELETE",
        is_new=False,
        patient_key=row.patient_key,
    )
    await writes.flush()
    return version


async def conditional_delete(
    *, session: AsyncSession, resource_type: str, query: str, author: str | None
) -> Version | None:
    """Delete the one resource matching ``query`` (http.html#cdelete); 412 for several."""
    params = search_params(query)
    await lock_condition(session=session, resource_type=resource_type, params=params)
    found = await matches(session=session, resource_type=resource_type, params=params)
    if len(found) > 1:
        raise Problem(412, f"{describe(query)} matches several resources")
    if not found:
        return None
    return await delete(
        session=session, resource_type=resource_type, resource_id=found[0], author=author
    )
