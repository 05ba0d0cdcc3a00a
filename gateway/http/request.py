"""Reading a client request: the bounded body, and the model it names (JSON or multipart)."""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.types import Receive, Scope

from gateway import errors

MAX_JSON_DEPTH = 254  # orjson's serializer refuses deeper values (see json_object)
_MULTIPART_MODEL = re.compile(rb'name="model"\r\n(?:[^\r\n]*\r\n)*\r\n([^\r\n]*)\r\n')


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    for k, v in scope["headers"]:
        if k == b"content-length":
            try:
                declared = int(v)
            except ValueError:
                raise errors.InvalidRequest("invalid Content-Length header") from None
            if declared > limit:
                raise errors.PayloadTooLarge(
                    f"Request body of {declared} bytes exceeds the limit of {limit} bytes."
                )
            break
    msg = await receive()
    body: bytes = msg.get("body", b"")
    if not msg.get("more_body"):
        return body
    parts = [body]
    size = len(body)
    while msg.get("more_body"):
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise errors.InvalidRequest("client disconnected while sending the body")
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise errors.PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes.")
        parts.append(chunk)
    return b"".join(parts)


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or the OpenAI-shaped 400 that says why not.

    Nesting is bounded by ``MAX_JSON_DEPTH``: a deeper body could be parsed (orjson stops at
    1024 levels) but neither re-serialized (the gateway rewrites an aliased ``model``), nor
    pickled for the meter process (about 1000), nor walked by a recursive reader. The check is
    a serialization, not a walk: orjson writes 100 KB in about a tenth of the time it reads it,
    where a Python walk over the same containers costs more than the parse."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise errors.InvalidJSON(f"We could not parse the JSON body of your request: {exc}") from None
    if not isinstance(payload, dict):
        raise errors.InvalidJSON("The request body must be a JSON object.")
    try:
        orjson.dumps(payload)
    except orjson.JSONEncodeError:
        raise errors.InvalidJSON(
            f"The JSON body of your request is nested more than {MAX_JSON_DEPTH} levels deep."
        ) from None
    return payload


def request_model(
    path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> tuple[dict[str, Any] | None, str | None]:
    """Parse the body once; return (JSON payload, or None for multipart and no body; model or None)."""
    ctype = b""
    for k, v in headers:
        if k == b"content-type":
            ctype = v
            break
    if ctype.startswith(b"multipart/form-data"):
        m = _MULTIPART_MODEL.search(body)
        return None, m.group(1).decode("utf-8", "replace") if m else None
    if not body:
        return None, None  # GET, or a body-less POST (`/v1/responses/{id}/cancel`)
    payload = json_object(body)
    model = payload.get("model")
    if model is None:
        return payload, None
    if not isinstance(model, str) or not model:
        raise errors.InvalidRequest("`model` must be a non-empty string", param="model")
    return payload, model
