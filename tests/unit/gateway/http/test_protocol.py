"""The connection protocol's configuration, and the uvicorn hooks it relies on (behaviour over
real sockets: tests/integration/test_connection_limits.py)."""

from __future__ import annotations

import resource

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from gateway.http.protocol import FD_RESERVE, ConnectionLimits, GuardedHttpToolsProtocol, server_options
from gateway.settings import ServerSettings

HOOKS = (
    "data_received",
    "connection_made",
    "connection_lost",
    "on_message_begin",
    "on_url",
    "on_header",
    "on_headers_complete",
    "on_body",
    "on_message_complete",
    "on_response_complete",
    "_start_asgi_task",
    "_unset_keepalive_if_required",
)


def test_the_uvicorn_hooks_it_overrides_exist() -> None:
    for name in HOOKS:
        assert callable(getattr(HttpToolsProtocol, name, None)), f"uvicorn no longer has {name}"
    assert callable(getattr(RequestResponseCycle, "send_500_response", None))


def test_the_connection_cap_leaves_descriptors_for_upstreams() -> None:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert ConnectionLimits.from_settings(ServerSettings()).max_connections == max(
        16, (soft - FD_RESERVE) // 2
    )
    assert ConnectionLimits.from_settings(ServerSettings(max_connections=7)).max_connections == 7


def test_each_server_gets_its_own_protocol_class_and_registry() -> None:
    a, b = server_options(ServerSettings())["http"], server_options(ServerSettings(max_headers=10))["http"]
    assert issubclass(a, GuardedHttpToolsProtocol) and a is not b
    assert a.registry is not b.registry and b.limits.max_headers == 10
    assert server_options(ServerSettings())["ws"] == "none"


def test_the_sweep_runs_often_enough_for_the_shortest_timeout() -> None:
    limits = ConnectionLimits.from_settings(ServerSettings(header_timeout_s=0.4, body_timeout_s=30))
    assert limits.sweep_s == 0.1
    assert ConnectionLimits.from_settings(ServerSettings()).sweep_s == 1.0
