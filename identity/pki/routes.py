"""Public status of the card PKI over HTTP: CA certificates, CRLs, OCSP. No authentication.

Anyone must be able to check a card's status (RFC 5280 section 4.2.1.13, RFC 6960 appendix A),
so these routes are public by design. Issuing and status changes are service functions, wired
by the card lifecycle routes behind authentication.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from cryptography.x509 import ocsp
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from starlette.responses import Response

from identity.pki import UnknownIssuer
from identity.pki.certificates import PKI_PATH
from identity.pki.service import PkiService
from identity.pki.status import MAX_OCSP_REQUEST_BYTES, ocsp_error
from identity.settings import IdentitySettings
from services.kit.app import Runtime
from services.kit.deps import SessionDep
from services.kit.errors import Problem

PEM_CHAIN = "application/pem-certificate-chain"  # RFC 8555 section 9.1
PKIX_CRL = "application/pkix-crl"  # RFC 2585 section 4.2
OCSP_REQUEST = "application/ocsp-request"  # RFC 6960 appendix C.1
OCSP_RESPONSE = "application/ocsp-response"  # RFC 6960 appendix C.2
# Status changes must be seen at once: caches revalidate every time.
NO_CACHE = {"Cache-Control": "no-cache"}
KID_PATTERN = r"^[0-9a-f]{40}$"

router = APIRouter(prefix=PKI_PATH, tags=["pki"])


async def install_pki(app: FastAPI, *, pki: PkiService | None = None) -> PkiService:
    """Start-up hook: create or load the CAs and make the service available to routes."""
    runtime: Runtime = app.state.runtime
    if not isinstance(runtime.settings, IdentitySettings):
        raise TypeError("the card PKI runs in the identity service")
    if runtime.db is None:
        raise RuntimeError("the card PKI needs the identity database")
    pki = pki or PkiService(runtime.settings)
    await pki.start(db=runtime.db)
    app.state.pki = pki
    return pki


def get_pki(request: Request) -> PkiService:
    pki: PkiService | None = getattr(request.app.state, "pki", None)
    if pki is None:
        # The kit answers this as a 500 carrying only the request id: a wiring mistake.
        raise RuntimeError("install_pki was not run at start-up")
    return pki


async def _pki(request: Request) -> PkiService:
    # async: a sync dependency would cost a thread-pool hop per request.
    return get_pki(request)


PkiDep = Annotated[PkiService, Depends(_pki)]
IssuerParam = Annotated[
    str | None,
    Query(
        description="Key id (hex Subject Key Identifier) of an issuing CA; default: the current",
        pattern=KID_PATTERN,
    ),
]


def _crl_response(der: bytes) -> Response:
    return Response(der, media_type=PKIX_CRL, headers=NO_CACHE)


def _ocsp_response(der: bytes) -> Response:
    return Response(der, media_type=OCSP_RESPONSE, headers=NO_CACHE)


@router.get(
    "/ca",
    summary="The CA certificates: issuing CAs (current, next, retired), then the root",
    response_class=Response,
    responses={200: {"content": {PEM_CHAIN: {}}}},
)
async def ca_certificates(session: SessionDep, pki: PkiDep) -> Response:
    return Response(await pki.ca_chain_pem(session=session), media_type=PEM_CHAIN)


@router.get(
    "/crl",
    summary="The full CRL of an issuing CA (RFC 5280 section 5), DER",
    response_class=Response,
    responses={200: {"content": {PKIX_CRL: {}}}, 404: {"description": "No such issuing CA"}},
)
async def full_crl(session: SessionDep, pki: PkiDep, issuer: IssuerParam = None) -> Response:
    try:
        return _crl_response(await pki.crl(session=session, issuer=issuer))
    except UnknownIssuer as exc:
        raise Problem(404, str(exc)) from None


@router.get(
    "/crl/delta",
    summary="The delta CRL of an issuing CA (RFC 5280 section 5.2.4), DER",
    response_class=Response,
    responses={200: {"content": {PKIX_CRL: {}}}, 404: {"description": "No such issuing CA"}},
)
async def delta_crl(session: SessionDep, pki: PkiDep, issuer: IssuerParam = None) -> Response:
    try:
        return _crl_response(await pki.crl(session=session, issuer=issuer, delta=True))
    except UnknownIssuer as exc:
        raise Problem(404, str(exc)) from None


@router.post(
    "/ocsp",
    summary="OCSP responder (RFC 6960), POST of a DER OCSPRequest",
    response_class=Response,
    responses={
        200: {"content": {OCSP_RESPONSE: {}}},
        413: {"description": "Request body too large"},
        415: {"description": "Body is not application/ocsp-request"},
    },
    openapi_extra={
        "requestBody": {"required": True, "content": {OCSP_REQUEST: {"schema": {}}}},
    },
)
async def ocsp_post(request: Request, session: SessionDep, pki: PkiDep) -> Response:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != OCSP_REQUEST:
        raise Problem(415, f"the body must be {OCSP_REQUEST}, not {content_type or 'unset'}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_OCSP_REQUEST_BYTES:
            raise Problem(413, f"an OCSP request is at most {MAX_OCSP_REQUEST_BYTES} bytes")
    return _ocsp_response(await pki.ocsp(bytes(body), session=session))


@router.get(
    "/ocsp/{encoded:path}",
    summary="OCSP responder (RFC 6960 appendix A.1), GET of a base64 DER OCSPRequest",
    response_class=Response,
    responses={200: {"content": {OCSP_RESPONSE: {}}}},
)
async def ocsp_get(
    session: SessionDep,
    pki: PkiDep,
    encoded: Annotated[str, Path(description="base64 of the DER OCSPRequest, URL-encoded")],
) -> Response:
    # RFC 6960 A.1: the path is the URL-encoded base64 (RFC 4648 section 4); the URL-safe
    # alphabet (section 5) is accepted too, as some clients send it.
    text = encoded.strip().replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        der = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return _ocsp_response(ocsp_error(ocsp.OCSPResponseStatus.MALFORMED_REQUEST))
    return _ocsp_response(await pki.ocsp(der, session=session))
