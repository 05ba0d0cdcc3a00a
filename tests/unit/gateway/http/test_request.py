"""Reading a request body: JSON objects only, nesting bounded."""

from __future__ import annotations

import pickle

import orjson
import pytest

from gateway import errors
from gateway.http.request import MAX_JSON_DEPTH, json_object


def nested(depth: int) -> bytes:
    return b'{"model":"m","x":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


def test_the_deepest_allowed_body_can_be_reserialized_and_pickled() -> None:
    payload = json_object(nested(MAX_JSON_DEPTH))
    assert orjson.loads(orjson.dumps(payload)) == payload
    assert pickle.loads(pickle.dumps(payload)) == payload


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 300, 1000, 1024, 5000])
def test_a_deeper_body_is_a_clear_400(depth: int) -> None:
    with pytest.raises(errors.InvalidJSON) as err:
        json_object(nested(depth))
    assert err.value.status == 400 and ("nested" in err.value.message or "depth" in err.value.message)


@pytest.mark.parametrize("body", [b"[1,2]", b'"text"', b"null", b"{", b"\xff", b"1e400"])
def test_anything_but_an_object_is_a_400(body: bytes) -> None:
    with pytest.raises(errors.InvalidJSON):
        json_object(body)
