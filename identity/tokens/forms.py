"""OAuth 2.0 requests are ``application/x-www-form-urlencoded`` (RFC 6749 section 3.2)."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from services.kit.errors import Problem

# Token requests are a few parameters and one assertion; anything bigger is not one.
MAX_FORM_BYTES = 16 * 1024


class OAuthError(Problem):
    """RFC 6749 section 5.2 error, carried in problem+json with ``error`` and
    ``error_description`` members so OAuth client libraries find what they expect."""

    def __init__(self, error: str, description: str, *, status: int = 400) -> None:
        headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="onecard"'
        super().__init__(
            status, description, headers=headers, error=error, error_description=description
        )


async def read_form(request: Request) -> dict[str, str]:
    """The form parameters; a repeated parameter is an error (RFC 6749 section 3.1)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise OAuthError(
            "invalid_request", "send the parameters as application/x-www-form-urlencoded"
        )
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise OAuthError("invalid_request", f"request body over {MAX_FORM_BYTES} bytes")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=False, strict_parsing=False)
    except UnicodeDecodeError:
        raise OAuthError("invalid_request", "the form is not UTF-8") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise OAuthError("invalid_request", f"parameter {name!r} is repeated")
        form[name] = value
    return form


def required(form: dict[str, str], name: str) -> str:
    value = form.get(name)
    if not value:
        raise OAuthError("invalid_request", f"missing parameter {name!r}")
    return value
