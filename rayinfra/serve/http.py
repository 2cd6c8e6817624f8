"""HTTP plumbing for the ingress: the one error envelope, bounded body reads, validation errors.

Every refusal is ``{"error": "...", "fields": [...]}`` with a 4xx/5xx status, and
each status the API can answer is declared in OpenAPI with that body.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError

from rayinfra.serve.schemas import ApiError, ErrorBody

STATUS_TEXT = {
    400: "Malformed JSON body.",
    401: "No API key.",
    403: "Wrong API key, or a key without the scope this route needs.",
    404: "Names something the server does not know (feedback for an unknown request id).",
    409: "Conflicts with what the server already holds (a request id labelled twice).",
    413: "Body or record count over the limit.",
    415: "Not a JSON body, or a compressed one.",
    422: "A record or item is invalid; `fields` names each field at fault.",
    429: "Too many requests from this key; retry after the Retry-After header.",
    500: "Internal error (counted in the metrics; the service keeps running).",
    503: "Overloaded or not ready; retry later.",
    504: "The request took longer than the spec's request_timeout_s.",
}


def declared(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these statuses, each with the error envelope."""
    return {s: {"model": ErrorBody, "description": STATUS_TEXT[s]} for s in statuses}


def error_response(status: int, error: str, fields: list[dict[str, Any]] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:  # fmt: skip
    return JSONResponse({"error": error, "fields": fields or []}, status_code=status, headers=headers)


async def read_json_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 past ``limit`` bytes whether or not it is chunked."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type not in ("application/json", ""):
        raise ApiError(415, f"send the body as application/json, not {content_type}")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":  # never inflated here: a compressed body could be a bomb
        raise ApiError(415, f"compressed bodies are not accepted (Content-Encoding: {encoding})")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ApiError(413, f"request body is larger than the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def validate(adapter: TypeAdapter, body: bytes) -> Any:
    """The body parsed by ``adapter``; ApiError 400 (not JSON) or 422 (naming each field)."""
    try:
        return adapter.validate_json(body)
    except ValidationError as err:
        problems = field_errors(err)
        if any(p["type"] == "json_invalid" for p in problems) or not body.strip():
            raise ApiError(400, "malformed JSON body", problems) from None
        names = sorted({p["field"] for p in problems if p["field"]})
        raise ApiError(422, "invalid request: " + (", ".join(names) or "body"), problems) from None


def field_errors(err: ValidationError | RequestValidationError) -> list[dict[str, Any]]:
    out = []
    errors = (
        err.errors() if isinstance(err, RequestValidationError) else err.errors(include_url=False, include_input=False)
    )
    for e in errors:
        loc = [str(p) for p in e.get("loc", ())]
        record = next((int(p) for p in loc if p.isdigit()), None)
        field = ".".join(p for p in loc if not p.isdigit()) or None
        out.append({"field": field, "record": record, "problem": e.get("msg", ""), "type": e.get("type")})
    return out
