"""What the server's routes answer besides success: the error bodies and, per status code, the
OpenAPI ``responses`` entries that document them."""

from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import BaseModel, Field

__all__ = ["ErrorBody", "ValidationErrorBody", "ValidationIssue", "documented"]


class ErrorBody(BaseModel):
    """Every error but a schema violation: what was wrong and how to fix it."""

    error: str = Field(description="what was wrong, naming the field, value or limit")
    error_id: Optional[str] = Field(
        default=None, description="500 only: the id the server logged the traceback under"
    )


class ValidationIssue(BaseModel):
    """One schema violation of a request."""

    loc: list[Union[str, int]] = Field(description="where: ['body', field, index, ...]")
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    """A request that does not match the route's input schema (422)."""

    detail: list[ValidationIssue]


_DESCRIPTIONS = {
    400: "an input the task cannot use (unreadable image, malformed tensor request)",
    404: "no model of that name is served",
    413: "the request body is larger than max_request_bytes, or over one of the endpoint's "
    "per-request limits (max_items_per_request, max_text_chars, max_image_pixels)",
    415: "a content type the route does not take",
    422: "the request does not match the input schema",
    500: "the pipeline failed; the body's error_id is in the server log with the traceback",
    503: "the endpoint cannot take the request now (its max_queue_size is reached, or a replica "
    "died); retry after Retry-After",
    504: "the request was not answered within the endpoint's request_timeout_s",
}

_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
}


def documented(*codes: int) -> dict[Union[int, str], dict[str, Any]]:
    """The OpenAPI ``responses`` of a route that can answer each of ``codes``."""
    out: dict[Union[int, str], dict[str, Any]] = {}
    for code in codes:
        model = ValidationErrorBody if code == 422 else ErrorBody
        entry: dict[str, Any] = {"model": model, "description": _DESCRIPTIONS[code]}
        if code == 503:
            entry["headers"] = _RETRY_AFTER
        out[code] = entry
    return out
