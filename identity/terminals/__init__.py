"""Card terminals: registration, the card challenge-response (Web eID style), QR redemption.

Layout: ``routes`` (HTTP) -> ``service`` (the rules: :class:`~identity.terminals.service.
CardAuthenticator` runs every check of a tap in a fixed order) -> ``repository`` (queries);
``cards`` reads what the card sent (certificate, signature) and knows nothing of storage;
``store`` keeps the short-lived state in Redis (nonces, failure counters, locks, used QR ids);
``cache`` is the small in-process cache of verified certificates and terminals.
"""
