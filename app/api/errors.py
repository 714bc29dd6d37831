"""The API's errors: 422 names the field each problem is in, as {"detail": [{field, message}]}
for what FastAPI finds wrong with a request and for what the domain refuses alike."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import HTTPException, Path, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel


class FieldError(BaseModel):
    field: str  # dotted: "delay", "profile.accent_color", "overrides.sv.subject"
    message: str


class ValidationErrors(BaseModel):
    detail: list[FieldError]


class Message(BaseModel):
    detail: str


RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Message, "description": "No valid token or admin session"},
    403: {"model": Message, "description": "A cookie session without X-Rebound-CSRF"},
    422: {"model": ValidationErrors, "description": "What is wrong, by field"},
}


def invalid(field: str, message: str) -> HTTPException:
    """A 422 for one field; raise it before anything is kept."""
    return HTTPException(422, [{"field": field, "message": message}])


def _field(location: tuple[Any, ...]) -> str:
    # ("body", "profile", "accent_color") → "profile.accent_color"; ("query", "days") → "days"
    parts = [str(part) for part in location[1:]] or [str(part) for part in location]
    return ".".join(parts) or "body"


async def request_validation_errors(request: Request, exc: Exception) -> Response:
    """FastAPI's validation errors in the API's shape; other routes keep FastAPI's."""
    assert isinstance(exc, RequestValidationError)
    if not request.url.path.startswith("/api/"):
        return await request_validation_exception_handler(request, exc)
    errors = [
        FieldError(field=_field(tuple(error.get("loc", ()))), message=str(error.get("msg", "")))
        for error in exc.errors()
    ]
    return JSONResponse(ValidationErrors(detail=errors).model_dump(), status_code=422)


@contextmanager
def refused_as(field: str, *kinds: type[Exception]) -> Iterator[None]:
    """Turn a domain refusal (an exception of `kinds`) into a 422 on `field`."""
    try:
        yield
    except kinds as exc:
        raise invalid(field, str(exc)) from exc


# A row id in a path: PostgreSQL's INTEGER ends at 2**31 - 1, and a larger one would be a 500.
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
