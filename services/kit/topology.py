"""The deployables of the platform and how the gateway reaches them.

The kit names services by import *string* only (uvicorn's ``module:factory`` form), so the
launcher can start them and the OpenAPI command can load them without ``services`` importing
any service module at import time (import-linter contract "kit imports no service").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One deployable: its name, how to build its ASGI app, its port offset and public routes."""

    name: str
    factory: str
    port_offset: int
    # Public path prefixes the gateway forwards to this service, unchanged (DESIGN.md routes).
    prefixes: tuple[str, ...] = ()
    # Seconds the gateway waits for this service's response headers.
    timeout: float = 10.0
    has_database: bool = True


GATEWAY = ServiceSpec(
    name="gateway", factory="gateway.app:create_app", port_offset=0, has_database=False
)

SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        name="identity",
        factory="identity.app:create_app",
        port_offset=1,
        prefixes=("/identity", "/.well-known"),
        timeout=5.0,
    ),
    ServiceSpec(
        name="health",
        factory="health.app:create_app",
        port_offset=2,
        prefixes=("/fhir",),
        timeout=60.0,
    ),  # large transaction bundles must not time out
    ServiceSpec(
        name="social_security",
        factory="social_security.app:create_app",
        port_offset=3,
        prefixes=("/insurance", "/social-security"),
        timeout=15.0,
    ),
    ServiceSpec(
        name="audit",
        factory="services.audit.app:create_app",
        port_offset=4,
        prefixes=("/audit",),
        timeout=5.0,
    ),
)

ALL: tuple[ServiceSpec, ...] = (GATEWAY, *SERVICES)

DEFAULT_GATEWAY_PORT = 8000


def by_name(name: str) -> ServiceSpec:
    for spec in ALL:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown service {name!r}; known: {', '.join(s.name for s in ALL)}")
