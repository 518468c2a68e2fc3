"""What crosses the wire for app sessions."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from identity.terminals.schemas import CardAnswer

# An installation id is made by the app once (a UUID, say): 16 to 56 URL-safe characters, so
# that ``app:<installation id>`` fits a client id.
INSTALLATION_ID_PATTERN = r"^[A-Za-z0-9_-]{16,56}$"


class AppChallengeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    installation_id: str = Field(
        pattern=INSTALLATION_ID_PATTERN,
        description="The app installation's own random id",
        examples=["3f1c9a5e-2b7d-4c0e-9f4a-6d8e1b2c3a4f"],
    )


class AppSessionCreate(CardAnswer):
    """The card's answer, read by the phone over NFC, for the app's challenge."""

    installation_id: str = Field(pattern=INSTALLATION_ID_PATTERN)


class SessionTokensPublic(BaseModel):
    """RFC 6749 section 5.1, with the refresh token."""

    access_token: str
    token_type: str = "Bearer"  # noqa: S105 - a token type name, not a secret
    expires_in: int
    scope: str
    refresh_token: str = Field(description="Opaque; changes at every use; reuse ends the session")
