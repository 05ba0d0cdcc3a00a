from __future__ import annotations

from typing import cast

from adapters.base import Upstream
from gateway.backends.affinity import ResponseAffinity, response_id_in, response_id_of_path
from gateway.backends.backend import Backend


def _backend(name: str) -> Backend:
    return Backend(name=name, upstream=cast(Upstream, object()))


def test_the_id_is_found_in_a_body_and_in_the_first_stream_event() -> None:
    assert response_id_in(b'{"id":"resp_abc123","object":"response"}') == "resp_abc123"
    event = b'event: response.created\ndata: {"response":{"id":"resp_9f_x-1","created_at":1}}\n\n'
    assert response_id_in(event) == "resp_9f_x-1"
    assert response_id_in(b'{"id":"chatcmpl-1"}') is None
    assert response_id_in(b" " * 5000 + b'{"id":"resp_late"}') is None  # only the first bytes are read


def test_paths_that_name_a_response() -> None:
    assert response_id_of_path("/v1/responses/resp_1") == "resp_1"
    assert response_id_of_path("/v1/responses/resp_1/cancel") == "resp_1"
    assert response_id_of_path("/v1/responses/resp_1/input_items") == "resp_1"
    assert response_id_of_path("/v1/responses") is None
    assert response_id_of_path("/v1/responses/other") is None


def test_the_map_is_bounded_and_forgets_the_least_recently_used() -> None:
    a, b = _backend("a"), _backend("b")
    aff = ResponseAffinity(max_entries=2)
    aff.remember("resp_1", a, "m")
    aff.remember("resp_2", b, "m")
    held = aff.holder("resp_1")  # used: now the most recent
    assert held is not None and held.backend is a and held.served == "m"
    aff.remember("resp_3", b, "m")
    assert len(aff) == 2 and aff.holder("resp_2") is None and aff.holder("resp_1") is not None
