"""Reading a request body: bounded in size, UTF-8, one JSON object; anything else is a clear 4xx."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from router.errors import InvalidRequestError, RequestTooLargeError


async def read_json(request: Request, limit: int) -> Any:
    """The request body as JSON, bounded in size; malformed input is a 4xx, never a 500."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLargeError(f"request body is {declared} bytes; the limit is {limit}", code="body_too_large")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise RequestTooLargeError(f"request body exceeds the {limit}-byte limit", code="body_too_large")
    if not body:
        raise InvalidRequestError("request body is empty; expected a JSON object", code="invalid_json")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InvalidRequestError(f"request body is not valid UTF-8 (byte {err.start})", code="invalid_utf8") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise InvalidRequestError("request body is nested too deeply", code="invalid_json") from None
    except json.JSONDecodeError as err:
        raise InvalidRequestError(f"request body is not valid JSON: {err.msg} at line {err.lineno} "
                                  f"column {err.colno}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("request body must be a JSON object", code="invalid_json")
    return data
