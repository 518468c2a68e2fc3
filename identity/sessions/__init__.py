"""Mobile-app sessions: login with the card over NFC, rotating refresh tokens, logout.

The phone acts as a terminal (terminal id ``app:<installation id>``, purpose ``mobile_app``)
for the same challenge-response as a counter; the app then holds a short access token (with
the session's ``sid``) and an opaque refresh token that changes at every use (OAuth 2.0
Security BCP, RFC 9700 section 4.14.2: refresh token rotation for public clients). A refresh
token used twice means two parties hold it: the whole session ends, and every access token
it issued is refused everywhere (``Revocations.revoke_session``).

The ``sessions`` table (``identity.tokens.models.Session``) holds the current refresh token's
SHA-256; ``rotated_refresh_tokens`` (here) remembers the ones it replaced, so that a replay is
recognised as reuse rather than as an unknown token.
"""
