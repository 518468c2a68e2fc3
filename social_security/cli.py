"""``onecard social-security``: the bureau's bulk import, scheme rules and designated
institutions (``social_security.importer.cli`` and ``social_security.admin_cli``)."""

from __future__ import annotations

from social_security.admin_cli import register
from social_security.importer.cli import app

register(app)

__all__ = ["app"]
