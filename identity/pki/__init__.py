"""The provincial card PKI: root and issuing CAs, card and terminal certificates, CRL, OCSP.

Layout: ``routes`` (public HTTP: CA chain, CRLs, OCSP) -> ``service`` (:class:`PkiService`,
the rules) -> ``repository`` (queries) -> ``models`` (tables). The X.509 work lives in
``authority`` (CAs, chain building), ``certificates`` (issuing from CSRs, application list)
and ``status`` (CRLs, OCSP), which know nothing of the database; ``keystore`` seals CA keys.

The errors below are the package's contract with its callers: each says what was wrong.
"""

from __future__ import annotations


class PkiError(Exception):
    """Anything the PKI refuses."""


class InvalidRequest(PkiError, ValueError):
    """A certificate request (the CSR or the issuing parameters) is refused."""


class CertificateRejected(PkiError, ValueError):
    """A certificate does not chain to one of our issuing CAs, or is not valid now."""


class UnknownCertificate(PkiError, LookupError):
    """No certificate with this serial number was issued here."""


class UnknownIssuer(PkiError, LookupError):
    """No CA of ours has this key id."""


class StatusConflict(PkiError):
    """The status change is not allowed from the certificate's current status."""


class KeyStoreError(PkiError):
    """A stored CA key cannot be opened (wrong passphrase, corrupt row, key/cert mismatch)."""


class AuthorityUnavailable(PkiError):
    """The CAs were not created yet (``PkiService.ensure_authority`` has not run)."""
