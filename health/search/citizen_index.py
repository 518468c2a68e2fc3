"""A Patient's citizen, as the search index holds it: the ``identifier`` token rows of the
Patient in the citizen system (health.fhir.compartment.CITIZEN_SYSTEM, the pseudonym).

The one way the store finds whose data a record is for its audit entries, whether beside a
read's row, beside a search's page, or for a set of patients: no Patient JSON is read or
parsed, and a deleted Patient (whose index rows are gone) is linked to no one. Of several
citizen identifiers on one Patient (a data error), the least is taken, everywhere alike.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, func, select

from health.fhir.compartment import CITIZEN_SYSTEM
from health.search.models import token_index

_IDENTIFIER = token_index.alias("citizen_identifier")
_OF_CITIZEN_SYSTEM = (
    _IDENTIFIER.c.resource_type == "Patient",
    _IDENTIFIER.c.param == "identifier",
    _IDENTIFIER.c.system == CITIZEN_SYSTEM,
)


# Built once per resources table or alias (a statement element is immutable, so one serves
# every statement): the store passes only its resources table, on every search.
@lru_cache(maxsize=8)
def citizen_column(r: Any) -> Any:
    """A column ``citizen``: the citizen of the Patient whose compartment each row of the
    resources alias ``r`` is in (None: no patient's, or a Patient linked to no one)."""
    return (
        select(func.min(_IDENTIFIER.c.code))
        .where(*_OF_CITIZEN_SYSTEM, _IDENTIFIER.c.resource_id == r.c.patient_key)
        .scalar_subquery()
        .label("citizen")
    )


# (patient id, citizen) for the Patients ``patient_keys`` that are linked to one.
CITIZENS_OF = (
    select(_IDENTIFIER.c.resource_id, func.min(_IDENTIFIER.c.code))
    .where(
        *_OF_CITIZEN_SYSTEM,
        _IDENTIFIER.c.resource_id.in_(bindparam("patient_keys", expanding=True)),
    )
    .group_by(_IDENTIFIER.c.resource_id)
)
