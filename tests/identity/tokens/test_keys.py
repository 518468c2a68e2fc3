"""Signing-key rotation: verifiers never meet a token signed by a key they could not know."""

from __future__ import annotations

from identity.tokens import keys
from identity.tokens.setup import load_ring, passphrase
from services.kit.tokens import KeySet, StaticKeySource, TokenVerifier
from tests.identity.conftest import IdentityService


async def _rotate(identity: IdentityService) -> str:
    db = identity.app.state.runtime.db
    async with db.sessionmaker() as session, session.begin():
        return await keys.rotate(session=session, passphrase=passphrase(identity.settings))


async def test_rotation_promotes_the_published_next_key_and_keeps_the_old_one(
    identity_service: IdentityService,
) -> None:
    before = identity_service.app.state.token_issuer.ring
    [upcoming] = [k for k in before.published if k != before.kid]
    old_token = await identity_service.token("client.manage")

    new_kid = await _rotate(identity_service)
    ring = await load_ring(identity_service.app.state.runtime.db, identity_service.settings)
    identity_service.app.state.token_issuer.use(ring)

    assert new_kid == upcoming  # verifiers already had it from the JWKS
    assert ring.kid == upcoming
    assert before.kid in ring.published  # retired, still published for its live tokens
    assert len(ring.published) == 3  # retired + current + a new next
    jwks = (await identity_service.http.get("/.well-known/jwks.json")).json()
    assert jwks["keys"][0]["kid"] == upcoming
    verifier = TokenVerifier(
        issuer="http://testserver",
        audience="http://testserver/identity",
        keys=StaticKeySource(KeySet.from_jwks(jwks)),
    )
    assert (await verifier.verify(old_token)).sub
    new_token = await identity_service.token("client.manage")
    assert (await verifier.verify(new_token)).sub
    # The service itself still accepts the token signed before the rotation.
    response = await identity_service.http.get(
        "/identity/clients/nobody", headers={"Authorization": f"Bearer {old_token}"}
    )
    assert response.status_code == 404


async def test_private_keys_are_stored_encrypted(identity_service: IdentityService) -> None:
    from sqlalchemy import text

    db = identity_service.app.state.runtime.db
    async with db.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT private_key_pem FROM signing_keys"))).all()
    assert rows
    for (pem,) in rows:
        assert "ENCRYPTED PRIVATE KEY" in pem
