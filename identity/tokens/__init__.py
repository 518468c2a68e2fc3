"""Access tokens: signing keys and JWKS, the OAuth 2.0 token endpoint, introspection, revocation."""
