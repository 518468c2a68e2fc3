"""Audiences and scopes the identity service grants.

Scopes follow SMART App Launch v2 (``patient/Observation.rs``, ``user/*.cruds``,
``system/Claim.c``) plus a few platform scopes. Each terminal purpose grants the holder's
token only what that counter needs (least privilege), and the card must be enabled for the
application the purpose belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass

# The applications one card certificate can be enabled for (one certificate, many uses).
APPLICATIONS = ("health", "medical_insurance", "social_security", "pension", "transit", "library")

# Public path prefix of each resource server; its audience is the issuer URL + prefix.
RESOURCE_PREFIXES = ("/identity", "/fhir", "/insurance", "/social-security", "/audit")


def audiences(issuer: str, prefixes: tuple[str, ...] = RESOURCE_PREFIXES) -> tuple[str, ...]:
    """RFC 9068 section 3: the resource servers a token is meant for, as their base URLs."""
    base = issuer.rstrip("/")
    return tuple(base + p for p in prefixes)


@dataclass(frozen=True, slots=True)
class Purpose:
    """What a terminal is for: the card application it needs and what a tap there grants."""

    application: str
    scopes: tuple[str, ...]
    prefixes: tuple[str, ...]


PURPOSES: dict[str, Purpose] = {
    # A hospital registration desk: the patient is present, their records may be read.
    "registration_desk": Purpose("health", ("patient/*.rs", "presence.health"), ("/fhir",)),
    # The hospital's billing counter: one-stop settlement of the bill with the card.
    "hospital_counter": Purpose(
        "medical_insurance",
        ("patient/Coverage.rs", "patient/Claim.cr", "insurance.settle"),
        ("/insurance", "/fhir"),
    ),
    "pharmacy": Purpose(
        "medical_insurance", ("patient/Coverage.rs", "insurance.settle"), ("/insurance",)
    ),
    "social_security_office": Purpose("social_security", ("benefits.read",), ("/social-security",)),
    "pension_office": Purpose("pension", ("benefits.read",), ("/social-security",)),
    "bus": Purpose("transit", ("transit.ride",), ("/identity",)),
    "library": Purpose("library", ("library.borrow",), ("/identity",)),
    # The citizen's own phone reading the card over NFC: their own data, everywhere, and the
    # Consent that decides which other hospitals may read their records.
    "mobile_app": Purpose(
        "health",
        ("patient/*.rs", "patient/Consent.cru", "benefits.read", "card.self", "audit.self"),
        RESOURCE_PREFIXES,
    ),
}


# --- Separation of duties (MLPS 2.0, GB/T 22239-2019 level 3 "security management": system,
# security and audit administrators are separate roles, none able to do another's work) -------

ADMIN_ROLES: dict[str, frozenset[str]] = {
    # Runs the platform: registers institutions, terminals, citizens and their cards.
    "system": frozenset({"client.manage", "terminal.manage", "citizen.manage", "card.manage"}),
    # Sets the graded-protection policy; reads no personal data and no audit trail.
    "security": frozenset({"policy.manage"}),
    # Reads the audit ledger; changes nothing.
    "audit": frozenset({"audit.read"}),
}
# Only platform services append to the audit ledger.
SERVICE_SCOPES = frozenset({"audit.append"})
_ROLE_OF = {scope: role for role, scopes in ADMIN_ROLES.items() for scope in scopes}


def role_of(scope: str) -> str | None:
    """The administrator role ``scope`` belongs to, if any."""
    return _ROLE_OF.get(scope)


def scopes_refusal(kind: str, scopes: list[str]) -> str | None:
    """Why a client of ``kind`` may not hold ``scopes`` (separation of duties), or None."""
    held = set(scopes)
    roles = sorted({role for s in held if (role := role_of(s)) is not None})
    admin_scopes = " ".join(sorted(s for s in held if role_of(s)))
    if kind == "service":
        others = " ".join(sorted(held - SERVICE_SCOPES))
        return f"a platform service holds only audit.append, not {others}" if others else None
    if held & SERVICE_SCOPES:
        return f"only platform services may hold {' '.join(sorted(held & SERVICE_SCOPES))}"
    if kind != "admin":
        return f"administrator scopes ({admin_scopes}) need an admin client" if roles else None
    if len(roles) > 1:
        return (
            "separation of duties: one administrator client holds one role's scopes "
            f"(system, security or audit), not {' and '.join(roles)}"
        )
    data = " ".join(sorted(s for s in held if role_of(s) is None))
    return f"an administrator's client holds only its role's scopes, not {data}" if data else None
