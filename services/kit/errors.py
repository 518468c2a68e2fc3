"""Errors leave as RFC 9457 ``application/problem+json``; never a stack trace, never a bare 500.

A service whose routes speak another error dialect (the FHIR store answers OperationOutcome,
FHIR R4 operationoutcome.html) registers a renderer for its path prefix with
:func:`register_renderer`; everything else gets problem+json.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from services.kit.context import current_request_id

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """Raise to answer with a problem; ``detail`` must say what was wrong, for the caller."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        type: str = "about:blank",
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.type = type
        self.headers = headers or {}
        self.extensions = extensions


Renderer = Callable[[Request, Problem], Response]


def problem_doc(description: str) -> dict[str, Any]:
    """An OpenAPI ``responses`` entry for a refusal answered as problem+json (RFC 9457)."""
    return {"description": description, "content": {PROBLEM_JSON: {}}}


def problem_response(problem: Problem, *, instance: str | None = None) -> Response:
    body: dict[str, Any] = {
        "type": problem.type,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
    }
    if instance:
        body["instance"] = instance
    request_id = current_request_id()
    if request_id:
        body["request_id"] = request_id
    body.update(problem.extensions)
    return Response(
        orjson.dumps(body),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=problem.headers,
    )


def _render_problem(request: Request, problem: Problem) -> Response:
    return problem_response(problem, instance=request.url.path)


def register_renderer(app: FastAPI, prefix: str, renderer: Renderer) -> None:
    """Errors under ``prefix`` are rendered by ``renderer`` instead of problem+json."""
    app.state.error_renderers = [*getattr(app.state, "error_renderers", []), (prefix, renderer)]


def render(request: Request, problem: Problem) -> Response:
    """The response for ``problem``; a refusal (401, 403) is also handed to the app's
    ``on_refused`` hook, which records it in the audit ledger (``services.kit.app``)."""
    if problem.status in (401, 403):
        on_refused = getattr(request.app.state, "on_refused", None)
        if on_refused is not None:
            on_refused(request, problem)
    path = request.url.path
    for prefix, renderer in getattr(request.app.state, "error_renderers", []):
        if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
            response: Response = renderer(request, problem)
            return response
    return _render_problem(request, problem)


def describe_validation_errors(errors: Any) -> tuple[int, str]:
    """Turn FastAPI's validation errors into one status and a readable sentence."""
    parts: list[str] = []
    status = 422
    for err in errors:
        if err.get("type") == "json_invalid":
            # A body that is not JSON at all is a malformed request, not a semantic error.
            status = 400
            ctx = err.get("ctx") or {}
            parts.append(f"body is not valid JSON: {ctx.get('error', 'parse error')}")
            continue
        location = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{location}: {err.get('msg', 'invalid')}")
    return status, "; ".join(parts) or "invalid request"


def install_handlers(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return render(request, exc)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route matches {request.method} {request.url.path}"
        elif exc.status_code == 405:
            detail = f"method {request.method} is not allowed on {request.url.path}"
        return render(request, Problem(exc.status_code, detail, headers=dict(exc.headers or {})))

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        status, detail = describe_validation_errors(exc.errors())
        return render(request, Problem(status, detail))

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    # Unexpected exceptions are answered by the kit's RequestContextMiddleware (see there).
