"""What crosses the wire for the e-card QR code."""

from __future__ import annotations

from pydantic import BaseModel, Field


class QrCode(BaseModel):
    qr: str = Field(description="The payload to show as a QR code: an ES256 onecard-qr+jwt")
    expires_in: int = Field(description="Seconds it may be scanned in (at most 60)")
