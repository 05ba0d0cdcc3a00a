"""The fault-injecting TCP proxy used for outages (bench/soak.py): pass, down, freeze, recover."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from tests.support.chaos_proxy import ChaosProxy
from tests.support.ports import HOST


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def proxy() -> Iterator[ChaosProxy]:
    server = socketserver.ThreadingTCPServer((HOST, 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with ChaosProxy(server.server_address[1]) as p:
        yield p
    server.shutdown()
    server.server_close()


def echo(port: int, timeout: float = 2) -> bytes:
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(b"ping")
        return s.recv(10)


def refused(port: int) -> bool:
    try:
        return echo(port) == b""
    except OSError:
        return True


def test_pass_down_freeze_and_back(proxy: ChaosProxy) -> None:
    assert echo(proxy.port) == b"ping"
    held = socket.create_connection((HOST, proxy.port), timeout=2)
    held.sendall(b"a")
    assert held.recv(1) == b"a"
    proxy.set_mode("down")
    assert refused(proxy.port)
    try:
        held.sendall(b"b")
        assert held.recv(1) == b""  # the open connection was cut
    except OSError:
        pass
    held.close()
    proxy.set_mode("freeze")
    with pytest.raises(TimeoutError):
        echo(proxy.port, timeout=0.5)
    proxy.set_mode("pass")
    assert echo(proxy.port) == b"ping"
