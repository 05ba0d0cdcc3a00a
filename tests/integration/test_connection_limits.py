"""What one connection may cost before any key is checked (gateway/http/protocol.py), against a
gateway in its own process (uvloop, as ``nometer serve`` runs it): oversized heads refused while
they arrive and in bounded CPU, header and body timeouts, 1,000 idle connections at a 1024 file
limit, and every refusal an OpenAI envelope."""

from __future__ import annotations

import resource
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_process import GatewayProcess
from tests.support.ports import HOST

CHAT = b'{"model":"fake-model","messages":[{"role":"user","content":"hi"}]}'


def chat_request(extra: bytes = b"", close: bool = False) -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + (b"Connection: close\r\n" if close else b"")
        + extra
        + b"Content-Length: %d\r\n\r\n%s" % (len(CHAT), CHAT)
    )


def read_response(sock: socket.socket, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response (status, headers, body by content-length)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response head: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return int(lines[0].split()[1]), headers, rest[:length]


def assert_envelope(body: bytes, code: str) -> None:
    err = orjson.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == code, err


def closed_within(sock: socket.socket, timeout: float) -> bool:
    """True when the peer closes the connection within ``timeout`` (whatever it sent first)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as f:
        yield f


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream) -> Iterator[GatewayProcess]:
    config = {
        "backends": [{"url": fake.base_url}],
        "server": {"header_timeout_s": 1.0, "body_timeout_s": 1.0, "max_header_bytes": 16384},
    }
    with GatewayProcess(tmp_path_factory.mktemp("limits"), config) as g:
        yield g


def connect(gw: GatewayProcess) -> socket.socket:
    return socket.create_connection((HOST, gw.port), timeout=10)


def test_a_64_mib_header_is_refused_while_it_arrives_in_bounded_cpu(gw: GatewayProcess) -> None:
    total = 64 * 1024 * 1024
    piece = b"a" * 65536
    cpu0 = gw.cpu_seconds()
    with connect(gw) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        sock.setblocking(False)
        sent = 0
        while sent < total:
            readable, writable, _ = select.select([sock], [sock], [], 10)
            if readable:
                break  # the gateway answered before the header was complete
            if writable:
                try:
                    sent += sock.send(piece)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    break
        sock.setblocking(True)
        status, headers, body = read_response(sock)
    assert status == 431 and headers["content-type"] == "application/json"
    assert_envelope(body, "request_header_too_large")
    # refused after about max_header_bytes, not after 64 MiB (the kernel buffers a few MiB)
    assert sent < total // 4, f"{sent} bytes were sent before the refusal"
    # the quadratic join in httptools made this 8 s of CPU; a generous bound for a loaded box
    assert gw.cpu_seconds() - cpu0 < 2.0
    assert httpx.get(gw.url + "/healthz").status_code == 200


def test_too_many_headers_and_a_too_long_url_are_refused(gw: GatewayProcess) -> None:
    with connect(gw) as sock:
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(101)) + b"\r\n"
        )
        status, _, body = read_response(sock)
        assert status == 431
        assert_envelope(body, "request_header_too_large")
    with connect(gw) as sock:
        sock.sendall(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, _, body = read_response(sock)
        assert status == 414
        assert_envelope(body, "uri_too_long")


def test_a_head_sent_a_byte_at_a_time_is_served_and_pipelining_works(gw: GatewayProcess) -> None:
    request = chat_request()
    with connect(gw) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(request)):  # every split of the blank line that ends the head, too
            sock.send(request[i : i + 1])
        status, _, body = read_response(sock)
        assert status == 200 and orjson.loads(body)["object"] == "chat.completion"
        sock.sendall(chat_request() + chat_request())  # two requests in one packet
        assert read_response(sock)[0] == 200
        assert read_response(sock)[0] == 200


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(gw: GatewayProcess) -> None:
    with connect(gw) as sock:
        assert closed_within(sock, 5)


def test_a_slow_head_gets_408(gw: GatewayProcess) -> None:
    with connect(gw) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        started = time.monotonic()
        status = 0
        while time.monotonic() - started < 5:
            try:
                sock.send(b"a")  # slowloris: always a byte more, never the end of the head
            except OSError:
                break
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable:
                status, _, body = read_response(sock)
                break
        assert status == 408
        assert_envelope(body, "request_timeout")


def test_a_body_that_stops_coming_gets_408(gw: GatewayProcess) -> None:
    with connect(gw) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        status, _, body = read_response(sock, timeout=5)
        assert status == 408
        assert_envelope(body, "request_timeout")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /\x01 HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\nHost: x\n\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
        b"GET /%ff%fe HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
)
def test_malformed_http_gets_an_openai_envelope(gw: GatewayProcess, request_bytes: bytes) -> None:
    with connect(gw) as sock:
        sock.sendall(request_bytes)
        status, headers, body = read_response(sock)
    assert 400 <= status < 500 and headers["content-type"] == "application/json"
    assert set(orjson.loads(body)["error"]) == {"message", "type", "param", "code"}


def test_1100_idle_connections_do_not_stop_service_at_a_1024_file_limit(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200 and hard >= 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))  # the test's own side
    # a long header timeout: what keeps the gateway serving is the connection cap, not the timeout
    config = {"backends": [{"url": fake.base_url}], "server": {"header_timeout_s": 300}}
    with GatewayProcess(tmp_path, config, rlimit_nofile=(1024, 1024)) as gw:
        idle = [connect(gw) for _ in range(1100)]  # more than the limit itself
        try:
            with httpx.Client(timeout=10) as client:
                for _ in range(20):
                    r = client.post(
                        gw.base_url + "/chat/completions",
                        content=CHAT,
                        headers={"content-type": "application/json", "connection": "close"},
                    )
                    assert r.status_code == 200, r.text
            assert gw.alive
            # the longest-idle connections made room: they were closed, not the newcomers
            assert closed_within(idle[0], 2)
        finally:
            for s in idle:
                s.close()


def test_the_soft_open_files_limit_is_raised_to_the_hard_limit(tmp_path: Path, fake: FakeUpstream) -> None:
    config = {"backends": [{"url": fake.base_url}]}
    with GatewayProcess(tmp_path, config, rlimit_nofile=(1024, 4096)) as gw:
        assert gw.open_files_limit() == (4096, 4096)
