"""Response-id affinity: which backend holds a stored Responses-API response.

vLLM keeps a response (``store``, the default) in the memory of the server that created it, so
``previous_response_id``, ``GET /v1/responses/{id}`` and ``POST /v1/responses/{id}/cancel`` only
work on that server. With several backends the proxy remembers, for each response id it relayed,
the backend that answered, in a bounded map (least recently used ids are forgotten first): an id
that fell out, or was created before a restart, is routed like any other request and that server
answers (a 404 from vLLM when it is not there).

The id is found with a bytes search in the first bytes of the answer (``"id":"resp_...`` is the
first field of a response object and of the ``response.created`` event), never a JSON parse.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

from gateway.backends.backend import Backend

_ID = re.compile(rb'"id":\s*"(resp_[A-Za-z0-9_-]{1,200})"')
_PATH = re.compile(r"^/v1/responses/(resp_[A-Za-z0-9_-]{1,200})(?:/|$)")
SCAN_BYTES = 4096  # the id comes first; never scan a whole long answer


@dataclass(frozen=True, slots=True)
class Holder:
    backend: Backend
    served: str  # the served model that created it (routing and policy need a model)


def response_id_in(data: bytes) -> str | None:
    """The first response id in an answer's first bytes (body or first SSE chunk), if any."""
    m = _ID.search(data, 0, SCAN_BYTES)
    return m.group(1).decode() if m else None


def response_id_of_path(path: str) -> str | None:
    """``resp_...`` of ``/v1/responses/resp_.../...`` (retrieve, cancel, input_items, delete)."""
    m = _PATH.match(path)
    return m.group(1) if m else None


class ResponseAffinity:
    def __init__(self, max_entries: int = 100_000):
        self.max_entries = max_entries
        self._held: OrderedDict[str, Holder] = OrderedDict()

    def __len__(self) -> int:
        return len(self._held)

    def remember(self, response_id: str, backend: Backend, served: str) -> None:
        self._held[response_id] = Holder(backend, served)
        self._held.move_to_end(response_id)
        while len(self._held) > self.max_entries:
            self._held.popitem(last=False)

    def holder(self, response_id: str) -> Holder | None:
        held = self._held.get(response_id)
        if held is not None:
            self._held.move_to_end(response_id)
        return held
