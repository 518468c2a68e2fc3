"""Graded protection (MLPS 2.0, GB/T 22239-2019): which level each route and record holds, and
which token assurance (``acr``) meets it (DESIGN.md "Audit and graded protection", "Tokens").

The policy is data, not code: rules matching a path prefix (and optionally methods) to a level,
FHIR resource types to levels, and FHIR security labels that raise a record's level. The
defaults live in :data:`DEFAULT_RULES`, :data:`DEFAULT_FHIR_TYPES` and :data:`DEFAULT_LABELS`;
an operator's override (``ONECARD_PROTECTION_POLICY``, JSON) is validated at start-up and
merged on top. Decisions are values (:class:`Decision`), so a refusal can be audited as is.

The acr rule (:data:`ACR_MEETS`): level 1 is public (a token optional); level 2 needs a token of
any acr; level 3 needs two factors, card + PIN (acr 2), or an institution authenticated by its
registered key (acr 3); level 4 needs the same and more (consent or break-glass), which the
record's owner decides: the decision says so in ``needs_more``.

Services enforce it again (defence in depth) with :func:`require_level` or
:func:`protection_guard` as a route or router dependency.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from services.kit.auth import REALM, _bearer, authenticate
from services.kit.errors import Problem
from services.kit.tokens import AccessToken

log = logging.getLogger(__name__)

LEVELS = (1, 2, 3, 4)
FHIR_BASE = "/fhir"

# Which acr values meet each level; None: no token needed (DESIGN.md "Tokens": acr 1 one
# factor, 2 card + PIN, 3 an institution's registered key). Not overridable: an operator sets
# levels, not what the levels mean.
ACR_MEETS: dict[int, frozenset[str] | None] = {
    1: None,
    2: frozenset({"1", "2", "3"}),
    3: frozenset({"2", "3"}),
    4: frozenset({"2", "3"}),
}
_NEEDS = {
    2: "a bearer token (any acr)",
    3: "card + PIN (acr 2) or an institution's key (acr 3)",
    4: "card + PIN (acr 2) or an institution's key (acr 3), then consent or break-glass",
}

# RFC 9110 section 9 methods (and PATCH, RFC 5789).
METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
# A path prefix: "/" or "/"-separated RFC 3986 segments, without empty, "." or ".." segments,
# query or fragment; an optional trailing "/*" is only a reminder that sub-paths match too.
_SEGMENT = r"[A-Za-z0-9\-._~!$&'()+,;=:@%]+"
_PREFIX = re.compile(rf"/|(/{_SEGMENT})+(/\*)?")
# A FHIR resource type name (FHIR R4 datatypes: a code starting with an upper-case letter).
_FHIR_TYPE = re.compile(r"[A-Z][A-Za-z]{0,63}")

V3_CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


class Rule(BaseModel):
    """``prefix`` (and, when given, only ``methods``) holds data of ``level``; ``exact``: the
    path itself only, not the paths below it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prefix: str
    level: StrictInt  # a JSON true is not level 1
    methods: frozenset[str] | None = None
    exact: bool = False

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not _PREFIX.fullmatch(value) or any(s in {".", ".."} for s in value.split("/")):
            raise ValueError(
                f"malformed path prefix {value!r}: expected '/' or '/segment[/segment...]' "
                "(optionally ending in '/*'), without '.', '..', empty segments, '?' or '#'"
            )
        return value.removesuffix("/*") or "/"

    @field_validator("level")
    @classmethod
    def _check_level(cls, value: int) -> int:
        return check_level(value)

    @field_validator("methods")
    @classmethod
    def _check_methods(cls, value: frozenset[str] | None) -> frozenset[str] | None:
        if value is None:
            return None
        upper = frozenset(m.upper() for m in value)
        unknown = upper - METHODS
        if unknown or not upper:
            raise ValueError(f"unknown HTTP methods {sorted(unknown)}; known: {sorted(METHODS)}")
        return upper

    def matches(self, method: str, path: str) -> bool:
        if self.methods is not None and method.upper() not in self.methods:
            return False
        if path == self.prefix or (self.prefix == "/" and not self.exact):
            return True
        return not self.exact and path.startswith(self.prefix + "/")


def check_level(value: Any) -> int:
    """``value`` if it is a protection level (1-4), else ValueError."""
    if type(value) is not int or value not in LEVELS:
        raise ValueError(f"unknown protection level {value!r}; levels are 1, 2, 3 and 4")
    return value


def _rule(prefix: str, level: int, *methods: str, exact: bool = False) -> Rule:
    chosen = frozenset(methods) if methods else None
    return Rule(prefix=prefix, level=level, methods=chosen, exact=exact)


# The default table (issue 4: benefits summary 2, health records and claims 3, sensitive
# records 4 by security label). Anything no rule matches needs level 3: unlisted is protected.
DEFAULT_RULES: tuple[Rule, ...] = (
    _rule("/", 3),
    _rule("/.well-known", 1),
    _rule("/healthz", 1, exact=True),  # liveness and readiness probes
    _rule("/readyz", 1, exact=True),
    _rule("/identity", 1),  # identity's own routes decide by scope
    _rule("/fhir", 3),
    # The CapabilityStatement (FHIR R4 http.html#capabilities): that path only.
    _rule("/fhir/metadata", 1, "GET", "HEAD", exact=True),
    _rule("/fhir/.well-known", 1),  # SMART configuration
    _rule("/insurance", 3),
    # The catalogue's drug classes: reference data, not personal; any token.
    _rule("/insurance/catalogue", 2, "GET", "HEAD"),
    # Contributions, accounts, claims: personal social-security data, level 3 (MLPS 2.0).
    _rule("/social-security", 3),
    _rule("/social-security/benefits", 2),  # the benefits summary (enrolment per scheme)
    _rule("/audit", 3),
    _rule("/audit/me", 2),  # the citizen's own access log
    _rule("/audit/checkpoints", 1, "GET", "HEAD"),  # signed checkpoints and their key: public
    _rule("/audit/consistency", 1, "GET", "HEAD", exact=True),  # consistency proofs: public
    _rule("/audit/policy", 1, "GET", "HEAD", exact=True),  # the levels in force: public
)
# Resource types whose records hold a level other than their route's; a type only raises.
DEFAULT_FHIR_TYPES: Mapping[str, int] = MappingProxyType({})
# HL7 v3 security labels (FHIR R4 security-labels.html) that make a record level 4:
# confidentiality restricted and very restricted, and the sensitivity codes.
DEFAULT_LABELS: Mapping[str, int] = MappingProxyType(
    {
        f"{V3_CONFIDENTIALITY}|R": 4,
        f"{V3_CONFIDENTIALITY}|V": 4,
        **{
            f"{V3_ACT_CODE}|{code}": 4
            for code in (
                "ETH",  # substance abuse
                "ETHUD",  # alcohol or drug abuse
                "HIV",
                "PSY",  # psychiatry
                "PSYTHPN",  # psychotherapy note
                "SDV",  # sexual assault, abuse or domestic violence
                "SEX",  # sexuality and reproductive health
                "STD",  # sexually transmitted disease
                "GDIS",  # genetic disease
                "TBOO",  # taboo
                "SICKLE",  # sickle cell
            )
        },
    }
)


_UNLISTED = Rule(prefix="/", level=3)


class PolicyOverride(BaseModel):
    """An operator's changes to the default policy (``ONECARD_PROTECTION_POLICY``, JSON).

    ``rules`` are added to the defaults (one with the same prefix and methods replaces it);
    ``fhir_types`` and ``labels`` are merged into theirs (a label key is ``system|code``, or a
    bare ``code`` for any system).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: tuple[Rule, ...] = ()
    fhir_types: dict[str, StrictInt] = Field(default_factory=dict)
    labels: dict[str, StrictInt] = Field(default_factory=dict)

    @field_validator("fhir_types")
    @classmethod
    def _check_types(cls, value: dict[str, int]) -> dict[str, int]:
        for name, level in value.items():
            if not _FHIR_TYPE.fullmatch(name):
                raise ValueError(f"{name!r} is not a FHIR resource type name")
            check_level(level)
        return value

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: dict[str, int]) -> dict[str, int]:
        for key, level in value.items():
            system, _, code = key.rpartition("|")
            if not code or code != code.strip() or (system and not system.startswith("http")):
                raise ValueError(f"{key!r} is not a security label ('system|code' or 'code')")
            check_level(level)
        return value


@dataclass(frozen=True, slots=True)
class Decision:
    """What the policy says about one request: a value, so it can be audited as it is."""

    level: int
    allowed: bool
    # The HTTP status of a refusal: 401 (no token where one is needed) or 403 (acr too low).
    status: int
    reason: str
    method: str
    path: str
    # The prefix of the rule that set the level (before any FHIR type or label raised it).
    rule: str
    acr: str | None
    # Level 4: the token is strong enough, but consent or break-glass must still allow it
    # (decided by the record's owner, the FHIR store).
    needs_more: bool = False

    @property
    def acr_values(self) -> tuple[str, ...]:
        """The acr values that would meet the level (RFC 9470 ``acr_values``)."""
        meets = ACR_MEETS[self.level]
        return tuple(sorted(meets)) if meets is not None else ()


@dataclass(frozen=True, slots=True)
class ProtectionPolicy:
    """The rules, FHIR type levels and security-label levels in force."""

    rules: tuple[Rule, ...] = DEFAULT_RULES
    fhir_types: Mapping[str, int] = field(default_factory=lambda: DEFAULT_FHIR_TYPES)
    labels: Mapping[str, int] = field(default_factory=lambda: DEFAULT_LABELS)
    # Most specific first, so the first match is the one that decides (measured: a third of
    # the time of comparing every match, which runs on every forwarded request).
    # Each as (path, prefix of the paths below or None, methods, rule): what Rule.matches
    # checks, without its attribute lookups.
    _by_specificity: tuple[tuple[str, str | None, frozenset[str] | None, Rule], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        ordered = sorted(
            self.rules,
            key=lambda r: (len(r.prefix), r.exact, r.methods is not None),
            reverse=True,
        )
        compiled = tuple(
            (r.prefix, None if r.exact else r.prefix.rstrip("/") + "/", r.methods, r)
            for r in ordered
        )
        object.__setattr__(self, "_by_specificity", compiled)

    @classmethod
    def from_override(cls, override: PolicyOverride | None) -> ProtectionPolicy:
        """The default policy with ``override`` merged on top."""
        if override is None:
            return cls()
        replaced = {(r.prefix, r.methods, r.exact) for r in override.rules}
        kept = tuple(r for r in DEFAULT_RULES if (r.prefix, r.methods, r.exact) not in replaced)
        return cls(
            rules=kept + override.rules,
            fhir_types=MappingProxyType({**DEFAULT_FHIR_TYPES, **override.fhir_types}),
            labels=MappingProxyType({**DEFAULT_LABELS, **override.labels}),
        )

    def rule_for(self, method: str, path: str) -> Rule:
        """The longest matching prefix wins; at equal length an exact rule, then one naming
        the method."""
        for prefix, below, methods, rule in self._by_specificity:
            if (path == prefix or (below is not None and path.startswith(below))) and (
                methods is None or method in methods
            ):
                return rule
        return _UNLISTED

    def fhir_type_of(self, path: str) -> str | None:
        """The resource type a FHIR REST path names (``/fhir/Observation/o-1`` -> Observation)."""
        if not path.startswith(FHIR_BASE + "/"):
            return None
        first = path[len(FHIR_BASE) + 1 :].split("/", 1)[0]
        return first if _FHIR_TYPE.fullmatch(first) else None

    def level_for(self, method: str, path: str) -> int:
        """The level a request needs before any record is read (route, then FHIR type)."""
        return self._level(method, path)[0]

    def _level(self, method: str, path: str) -> tuple[int, str]:
        rule = self.rule_for(method, path)
        level = rule.level
        resource_type = self.fhir_type_of(path)
        if resource_type is not None and rule.prefix in {"/", FHIR_BASE}:
            # A type only raises a generic /fhir level; an explicit rule under /fhir decides.
            level = max(level, self.fhir_types.get(resource_type, level))
        return level, rule.prefix

    def record_level(
        self,
        resource_type: str,
        labels: Iterable[tuple[str | None, str]] = (),
        *,
        base: int | None = None,
    ) -> int:
        """The level of one FHIR record: its type's (or ``base``, else /fhir's), raised by its
        ``meta.security`` labels, given as ``(system, code)`` pairs."""
        level = base if base is not None else self.rule_for("GET", FHIR_BASE).level
        level = max(level, self.fhir_types.get(resource_type, level))
        for system, code in labels:
            by_label = self.labels.get(f"{system}|{code}") if system else None
            if by_label is None:
                by_label = self.labels.get(code)
            if by_label is not None:
                level = max(level, by_label)
        return level

    def decide(
        self, method: str, path: str, token: AccessToken | None, *, level: int | None = None
    ) -> Decision:
        """Does ``token`` (or no token) meet the level of ``method path`` (or ``level``)?"""
        rule_prefix = "(required level)"
        if level is None:
            level, rule_prefix = self._level(method, path)
        return decide(level, token, method=method, path=path, rule=rule_prefix)


def decide(
    level: int, token: AccessToken | None, *, method: str = "", path: str = "", rule: str = ""
) -> Decision:
    """The acr rule (:data:`ACR_MEETS`) for one request at ``level``."""
    check_level(level)
    meets = ACR_MEETS[level]
    acr = token.acr if token is not None else None

    def decision(allowed: bool, status: int, reason: str) -> Decision:
        return Decision(
            level=level,
            allowed=allowed,
            status=status,
            reason=reason,
            method=method,
            path=path,
            rule=rule,
            acr=acr,
            needs_more=allowed and level >= 4,
        )

    if meets is None:
        return decision(True, 200, "public route")
    holds = f"this route holds level-{level} data: it needs {_NEEDS[level]}"
    if token is None:
        return decision(False, 401, f"{holds}; no bearer token was sent")
    if acr not in meets:
        return decision(False, 403, f"{holds}; the token has acr {acr}")
    return decision(True, 200, f"acr {acr} meets level {level}")


# --- Refusals: answered, and handed to whoever records them --------------------------------

RefusalHook = Callable[[Decision, AccessToken | None, Request], Awaitable[None] | None]


class ProtectionRefused(Problem):
    """A refusal by the policy; carries its :class:`Decision`."""

    def __init__(self, decision: Decision) -> None:
        if decision.status == 401:
            challenge = f'Bearer realm="{REALM}"'
        else:
            # RFC 9470 section 3: the challenge that tells a client to step up authentication.
            challenge = (
                f'Bearer realm="{REALM}", error="insufficient_user_authentication", '
                f'error_description="level {decision.level} needs acr '
                f'{" or ".join(decision.acr_values)}", acr_values="{" ".join(decision.acr_values)}"'
            )
        super().__init__(
            decision.status,
            decision.reason,
            headers={"WWW-Authenticate": challenge},
            protection_level=decision.level,
        )
        self.decision = decision


def refusal_fields(
    decision: Decision, token: AccessToken | None, request: Request
) -> dict[str, Any]:
    """What an audit entry of a refusal needs (the ``protection.refused`` log event's fields)."""
    return {
        "event": "protection.refused",
        "method": decision.method,
        "path": decision.path,
        "protection_level": decision.level,
        "rule": decision.rule,
        "status": decision.status,
        "reason": decision.reason,
        "acr": decision.acr,
        "subject": token.sub if token is not None else None,
        "client_id": token.client_id if token is not None else None,
        "actor": token.act if token is not None else None,
        "card": token.card if token is not None else None,
        "source_address": request.client.host if request.client else None,
    }


def log_refusal(decision: Decision, token: AccessToken | None, request: Request) -> None:
    """The default refusal hook: a ``protection.refused`` log event, until the audit client
    records refusals in the ledger."""
    log.warning("protection.refused", extra=refusal_fields(decision, token, request))


async def emit_refusal(
    hook: RefusalHook, decision: Decision, token: AccessToken | None, request: Request
) -> None:
    result = hook(decision, token, request)
    if result is not None:
        await result


# --- Service-side enforcement (defence in depth) -------------------------------------------


def _guard(
    level_of: Callable[[Request], tuple[int, str]], on_refusal: RefusalHook
) -> Callable[..., Awaitable[Decision]]:
    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Decision:
        level, rule = level_of(request)
        # A token sent to a public route is still verified: a bad one is refused.
        token = await authenticate(request, credentials) if credentials is not None else None
        decision = decide(level, token, method=request.method, path=request.url.path, rule=rule)
        if not decision.allowed:
            await emit_refusal(on_refusal, decision, token, request)
            raise ProtectionRefused(decision)
        request.state.protection = decision
        return decision

    return dependency


def require_level(
    level: int, *, on_refusal: RefusalHook = log_refusal
) -> Callable[..., Awaitable[Decision]]:
    """A dependency: the request's token meets ``level``; returns the :class:`Decision`."""
    check_level(level)
    return _guard(lambda request: (level, "(required level)"), on_refusal)


def protection_guard(
    policy: ProtectionPolicy | None = None, *, on_refusal: RefusalHook = log_refusal
) -> Callable[..., Awaitable[Decision]]:
    """A router dependency: each request meets the level ``policy`` gives its method and path
    (the same table the gateway enforces)."""

    def level_of(request: Request) -> tuple[int, str]:
        chosen = policy or policy_of(request)
        return chosen._level(request.method, request.url.path)

    return _guard(level_of, on_refusal)


def policy_of(request: Request) -> ProtectionPolicy:
    """The policy the app enforces: the newest the security administrator set
    (``services.kit.policy_watch``), else its settings' (``ONECARD_PROTECTION_POLICY``),
    built once per app."""
    state = request.app.state
    policy: ProtectionPolicy | None = getattr(state, "protection_policy", None)
    if policy is None:
        settings = getattr(getattr(state, "runtime", None), "settings", None)
        policy = ProtectionPolicy.from_override(getattr(settings, "protection_policy", None))
        state.protection_policy = policy
    return policy
