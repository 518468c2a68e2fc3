"""The card lifecycle: issue, activate, suspend and resume, replace, cancel, expiry, e-cards.

Layout: ``routes`` (HTTP: who may do what) -> ``service`` (the state machine) ->
``repository`` (queries) -> ``models`` (the ``cards`` table). The card's certificate lives in
the PKI (:mod:`identity.pki`); every status change moves the certificate's status in the same
database transaction and, once that transaction has committed, the card's status in Redis
(:class:`services.kit.revocation.Revocations`), which every service checks on every request.
``cli`` is ``onecard card ...``: a registration desk and a card holder working a virtual card.
"""
