"""The dynamic QR code of the electronic card: signed by the platform, single use, <= 60 s.

After the electronic social-security card's dynamic QR code: the citizen's app shows a short
signed payload, a terminal scans it and redeems it for a holder token. The payload is an ES256
JWT signed with the token-signing key under its own ``typ`` (``onecard-qr+jwt``), so anyone
holding the published JWKS can check it offline, and it can never pass as an access token.
"""
