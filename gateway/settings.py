"""Settings of the gateway (environment variables ``ONECARD_*``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from services.kit import topology
from services.kit.settings import Environment, ServiceSettings


class GatewaySettings(ServiceSettings):
    service: ClassVar[str] = "gateway"

    port: int = topology.DEFAULT_GATEWAY_PORT
    # Base URL of each service by topology name; unset ones follow the gateway's port
    # (identity on port+1, health on port+2, ...), the layout ``onecard up`` starts.
    upstreams: dict[str, str] = Field(default_factory=dict)
    # Largest request body forwarded (a whole Synthea patient bundle fits with room to spare).
    max_body_bytes: int = 64 * 1024 * 1024
    # Per client (a verified token's client and subject, else the peer address): a sustained
    # rate and a burst, enforced with GCRA in Redis.
    rate_limit_per_second: float = 100.0
    rate_limit_burst: int = 200
    # Per peer address, on every request before any token is verified: generous, since many
    # users may share an address (a hospital's NAT), but it caps what one address can make
    # the gateway verify (made-up tokens included).
    rate_limit_per_address_per_second: float = 1000.0
    rate_limit_per_address_burst: int = 2000
    connect_timeout: float = 1.0
    # Seconds to wait for a service's answer, by topology name, overriding the topology's
    # per-route default (e.g. ONECARD_UPSTREAM_TIMEOUTS='{"health": 120}' for huge bundles).
    upstream_timeouts: dict[str, float] = Field(default_factory=dict)
    # Consecutive transport failures that open a service's circuit, and how long it stays open.
    breaker_failures: int = 5
    breaker_open_seconds: float = 2.0
    # Attempts for idempotent requests whose connection failed (RFC 9110 section 9.2.2).
    idempotent_attempts: int = 2
    # A request without a token to a route of protection level 2 or above is refused here
    # (401). False forwards it for the service to refuse instead: for tests of the forwarding
    # machinery only, refused in production. A token whose acr falls short of the level is
    # refused here either way (403).
    protection_require_token: bool = True

    @model_validator(mode="after")
    def _default_upstreams(self) -> GatewaySettings:
        base = self.port or topology.DEFAULT_GATEWAY_PORT
        merged = {
            spec.name: f"http://127.0.0.1:{base + spec.port_offset}" for spec in topology.SERVICES
        }
        merged.update({k: v.rstrip("/") for k, v in self.upstreams.items()})
        unknown = set(merged) - {spec.name for spec in topology.SERVICES}
        if unknown:
            raise ValueError(f"ONECARD_UPSTREAMS names unknown services: {sorted(unknown)}")
        object.__setattr__(self, "upstreams", merged)
        return self

    @model_validator(mode="after")
    def _check_upstream_timeouts(self) -> GatewaySettings:
        known = {spec.name for spec in topology.SERVICES}
        unknown = set(self.upstream_timeouts) - known
        if unknown:
            raise ValueError(f"ONECARD_UPSTREAM_TIMEOUTS names unknown services: {sorted(unknown)}")
        if any(seconds <= 0 for seconds in self.upstream_timeouts.values()):
            raise ValueError("ONECARD_UPSTREAM_TIMEOUTS values must be positive seconds")
        return self

    @model_validator(mode="after")
    def _check_protection(self) -> GatewaySettings:
        production = self.environment is Environment.PRODUCTION
        if self.protection_require_token is False and production:
            raise ValueError(
                "ONECARD_PROTECTION_REQUIRE_TOKEN=false is refused in production: the gateway "
                "must refuse requests without a token to protected routes"
            )
        return self

    @property
    def protection_requires_token(self) -> bool:
        return self.protection_require_token

    def timeout_for(self, spec: topology.ServiceSpec) -> float:
        """Seconds the gateway waits for ``spec``'s answer: the override, else the topology's."""
        return self.upstream_timeouts.get(spec.name, spec.timeout)
