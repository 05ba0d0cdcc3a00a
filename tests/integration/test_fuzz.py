"""Fuzzing the gateway's routes (hypothesis) and its HTTP parsing (raw sockets), against a gateway
in its own process (``nometer serve``: uvloop, the real protocol) and a fake upstream.

Thousands of cases: JSON bodies of every shape for the proxied routes (non-object messages and
tools, deep nesting, odd types for every field, NaN, invalid UTF-8), the control routes with odd
query values (report dates out of range, limits, teams), the admin API with the admin key, any
method on any path, and raw requests with odd methods, targets, versions, headers, framing,
encodings and Host values. Every answer must be below 500, and every error the gateway made
itself an OpenAI envelope (an answer the upstream made, recognised by the request id it saw,
passes through as it is). At the end the gateway is alive, answers, lost no ledger event, its
meter process never failed, and its RSS grew by a bounded amount.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway import errors
from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_process import GatewayProcess
from tests.support.ports import HOST

pytestmark = pytest.mark.slow

ADMIN_ENV = "FUZZ_ADMIN_KEY"
ADMIN_KEY = "nm-admin-fuzz-secret"
SCALE = float(os.environ.get("NOMETER_FUZZ_SCALE", "1"))  # more cases for a longer local run


def n(cases: int) -> int:
    return max(1, round(cases * SCALE))


CASES = settings(
    max_examples=n(800),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
_ids = itertools.count()


class Rig:
    def __init__(self, fake: FakeUpstream, gw: GatewayProcess, team_key: str):
        self.fake, self.gw, self.team_key = fake, gw, team_key
        self.http = httpx.Client(base_url=gw.url, timeout=15)
        self.rss_start = gw.rss_mb()
        self.cpu_start = gw.cpu_seconds()
        self.cases = 0

    def send(self, method: str, path: str, *, headers: dict[str, str], content: bytes | None = None) -> None:
        rid = f"fuzz-{next(_ids)}"
        seen = len(self.fake.requests)
        # raw_path: as sent on the wire, so "//x" stays a path (httpx would read it as an authority)
        url = self.http.base_url.copy_with(raw_path=path.encode())
        r = self.http.request(method, url, headers={**headers, "x-request-id": rid}, content=content)
        anthropic = errors.is_anthropic(r.request.url.path)
        self.check(r.status_code, r.headers.get("content-type", ""), r.content, rid, seen, method, anthropic)

    def check(
        self,
        status: int,
        ctype: str,
        body: bytes,
        rid: str,
        seen: int,
        method: str = "GET",
        anthropic: bool = False,
    ) -> None:
        self.cases += 1
        assert status < 500, f"{status}: {body[:300]!r}"
        if status < 400 or method == "HEAD" or self.upstream_made(rid, seen):
            return
        assert ctype.startswith("application/json"), f"{status} {ctype}: {body[:200]!r}"
        doc = json.loads(body)
        if anthropic and doc.get("type") == "error":  # Anthropic's envelope on /v1/messages
            assert set(doc["error"]) == {"type", "message"}, doc
            return
        err = doc["error"]  # OpenAI's everywhere else (and before routing, on any path)
        assert set(err) == {"message", "type", "param", "code"}, err
        assert isinstance(err["message"], str) and err["message"]

    def upstream_made(self, rid: str, seen: int) -> bool:
        return any(r.headers.get("x-request-id") == rid for r in self.fake.requests[seen:])


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    with FakeUpstream() as fake:
        config: dict[str, Any] = {
            "backends": [{"url": fake.base_url}],
            "aliases": {"gpt-4.1": "fake-model"},  # an alias: the body is re-serialized
            "server": {
                "header_timeout_s": 1.0,  # a case that leaves a head or body unfinished costs 1 s
                "body_timeout_s": 1.0,
                "keepalive_timeout_s": 60,  # no close-while-the-client-sends race on a loaded box
                "max_body_bytes": 1 << 20,
            },
            "auth": {"mode": "open", "admin_key_env": ADMIN_ENV},
            # token limits, so every request is counted (the estimate path of the admit step)
            "policy": {"limits": {"team": {"rpm": 10**6, "tpm": 10**9}}},
            "teams": {"fuzzers": {"limits": {"key": {"rpm": 10**6, "tpm": 10**9}}}},
        }
        with GatewayProcess(tmp, config, env={ADMIN_ENV: ADMIN_KEY}) as gw:
            r = httpx.post(
                gw.url + "/v1/nometer/admin/keys",
                json={"team": "fuzzers"},
                headers={"authorization": f"Bearer {ADMIN_KEY}"},
            )
            assert r.status_code == 201, r.text
            warm = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "warm up"}]}
            assert httpx.post(gw.base_url + "/chat/completions", json=warm).status_code == 200
            rig = Rig(fake, gw, r.json()["key"])  # RSS measured from here: the tokenizer is loaded
            yield rig
            rig.http.close()


# -- strategies ------------------------------------------------------------------------------------

scalar = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=30)
)
json_value = st.recursive(
    scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=16,
)
model = (
    st.sampled_from(["fake-model", "gpt-4.1", "", "FAKE-MODEL", "fake-model\x00"])
    | st.text(max_size=40).filter(lambda m: not m.startswith("fault-"))
    | json_value
)
part = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "input_text", "refusal", "x"]) | json_value},
    optional={"text": json_value, "image_url": json_value, "refusal": json_value},
)
message = (
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool", "developer"]) | json_value},
        optional={
            "content": st.text(max_size=200) | st.lists(part | json_value, max_size=4) | json_value,
            "name": json_value,
            "tool_calls": st.lists(
                st.fixed_dictionaries(
                    {"function": st.fixed_dictionaries({"name": json_value, "arguments": json_value})}
                )
                | json_value,
                max_size=3,
            ),
        },
    )
    | json_value
)
tool = (
    st.fixed_dictionaries(
        {
            "type": st.just("function") | json_value,
            "function": st.fixed_dictionaries(
                {"name": json_value},
                optional={
                    "description": json_value,
                    "parameters": st.fixed_dictionaries(
                        {"type": st.just("object")},
                        optional={"properties": st.dictionaries(st.text(max_size=8), json_value, max_size=4)},
                    )
                    | json_value,
                },
            )
            | json_value,
        }
    )
    | json_value
)
request_body = st.fixed_dictionaries(
    {"model": model},
    optional={
        "messages": st.lists(message, max_size=5) | json_value,
        "tools": st.lists(tool, max_size=3) | json_value,
        "stream": st.booleans() | json_value,
        "stream_options": st.fixed_dictionaries({"include_usage": json_value}) | json_value,
        "prompt": st.text(max_size=100) | json_value,
        "input": st.text(max_size=100) | st.lists(message, max_size=3) | json_value,
        "instructions": json_value,
        "max_tokens": json_value,
        "n": json_value,
        "response_format": json_value,
        "base_url": json_value,
    },
)


def deep(depth: int, opener: str) -> str:
    return "[" * depth + '"x"' + "]" * depth if opener == "[" else '{"a":' * depth + "1" + "}" * depth


encoded_body = (
    request_body.map(lambda b: json.dumps(b).encode())  # NaN and Infinity included: not JSON
    | st.tuples(st.integers(1, 1100), st.sampled_from(["[", "{"])).map(
        lambda d: ('{"model":"gpt-4.1","messages":' + deep(*d) + "}").encode()
    )
    | st.binary(max_size=300)
    | request_body.map(lambda b: json.dumps(b).encode("utf-16"))
)
proxied_path = st.sampled_from(
    [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/tokenize",
        "/v1/rerank",
        "/v1/audio/transcriptions",
        "/v1/chat/completions/../../metrics",
    ]
) | st.from_regex(r"/[A-Za-z0-9/_.%~-]{0,40}", fullmatch=True)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
caller = st.sampled_from(["none", "team", "admin", "junk"])


def auth(rig: Rig, who: str) -> dict[str, str]:
    key = {"team": rig.team_key, "admin": ADMIN_KEY, "junk": "sk-not-a-key"}.get(who)
    return {"authorization": f"Bearer {key}"} if key else {}


# -- the routes ----------------------------------------------------------------------------------------


@CASES
@given(
    path=proxied_path, body=encoded_body, who=caller, tag=header_text, ctype=st.sampled_from(["json", "none"])
)
def test_proxied_routes_with_any_body(
    rig: Rig, path: str, body: bytes, who: str, tag: str, ctype: str
) -> None:
    headers = {**auth(rig, who), "x-nometer-tag": tag.strip() or "t"}
    if ctype == "json":
        headers["content-type"] = "application/json"
    rig.send("POST", path, headers=headers, content=body)


query_key = st.sampled_from(["since", "from", "to", "by", "compare", "team", "limit", "format", "model", "x"])
query_value = (
    st.sampled_from(
        [
            "7d",
            "99999999999999999999d",
            "1e400",
            "nan",
            "-1",
            "0001-01-01",
            "9999-12-31",
            "2026-13-45",
            "team",
            "tag",
        ]
    )
    | header_text
)
control_path = st.sampled_from(
    [
        "/v1/nometer/report",
        "/v1/nometer/usage",
        "/v1/nometer/receipts/",
        "/v1/models",
        "/v1/models/",
        "/healthz",
        "/readyz",
        "/metrics",
        "/dashboard",
        "/v1/nometer/admin/keys",
        "/v1/nometer/admin/teams",
    ]
)


@settings(CASES, max_examples=n(600))
@given(
    path=control_path,
    suffix=header_text.map(lambda s: s.replace("?", "").replace("#", "")),
    query=st.dictionaries(query_key, query_value, max_size=4),
    who=caller,
)
def test_control_routes_with_any_query(
    rig: Rig, path: str, suffix: str, query: dict[str, str], who: str
) -> None:
    target = path + (httpx.URL(suffix).raw_path.decode() if path.endswith("/") else "")
    rig.send("GET", target + "?" + str(httpx.QueryParams(query)), headers=auth(rig, who))


admin_post = st.sampled_from(
    [
        "/v1/nometer/admin/keys",
        "/v1/nometer/admin/keys/{id}/disable",
        "/v1/nometer/admin/keys/{id}/rotate",
        "/v1/nometer/admin/reload",
    ]
)


@settings(CASES, max_examples=n(200))
@given(
    path=admin_post,
    key_id=header_text.map(lambda s: httpx.URL("/" + s).raw_path.decode()[1:] or "x"),
    body=st.fixed_dictionaries(
        {}, optional={"team": json_value, "name": json_value, "grace_s": json_value}
    ).map(lambda b: json.dumps(b).encode())
    | st.binary(max_size=50),
)
def test_admin_api_with_any_body(rig: Rig, path: str, key_id: str, body: bytes) -> None:
    headers = {**auth(rig, "admin"), "content-type": "application/json"}
    rig.send("POST", path.replace("{id}", key_id), headers=headers, content=body)


@settings(CASES, max_examples=n(400))
@given(
    method=st.sampled_from(
        ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "PROPFIND", "QUERY"]
    ),
    path=proxied_path | control_path,
    origin=st.sampled_from(["", "http://evil.example", "null", "http://127.0.0.1"]),
)
def test_any_method_on_any_path(rig: Rig, method: str, path: str, origin: str) -> None:
    headers = {"content-type": "application/json", **({"origin": origin} if origin else {})}
    rig.send(method, path, headers=headers, content=b"{}" if method not in ("GET", "HEAD") else None)


# -- raw HTTP ------------------------------------------------------------------------------------------

raw_method = st.sampled_from(
    [b"GET", b"POST", b"HEAD", b"OPTIONS", b"CONNECT", b"PRI", b"get", b"TRACE", b"FOO", b"G\x00T"]
) | st.binary(min_size=1, max_size=8)
raw_target = st.sampled_from(
    [
        b"/",
        b"*",
        b"/v1/chat/completions",
        b"/v1/nometer/report?since=1e400",
        b"http://127.0.0.1/v1/models",
        b"127.0.0.1:7878",
        b"/%00",
        b"/%ff%fe",
        b"//",
        b"/../../etc/passwd",
        b"/v1/models/%2e%2e%2f",
        b"/v1/nometer/receipts/%00",
        b"/" + b"a" * 5000,
    ]
) | st.binary(max_size=40)
raw_version = st.sampled_from(
    [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"http/1.1", b"HTTP/9.9", b""]
)
raw_name = st.sampled_from(
    [
        b"Host",
        b"Content-Type",
        b"Content-Length",
        b"Transfer-Encoding",
        b"Content-Encoding",
        b"Origin",
        b"Authorization",
        b"Expect",
        b"Upgrade",
        b"Connection",
        b"Sec-Fetch-Site",
        b" X-Leading-Space",
        b"X:Colon",
    ]
) | st.binary(min_size=1, max_size=12)
raw_value = st.sampled_from(
    [
        b"127.0.0.1",
        b"localhost:7878",
        b"[::1]:7878",
        b"attacker.example",
        b"",
        b"application/json",
        b"text/plain",
        b"multipart/form-data; boundary=x",
        b"0",
        b"-1",
        b"99999999999999999999",
        b"5, 5",
        b"chunked",
        b"gzip, chunked",
        b"gzip",
        b"100-continue",
        b"websocket",
        b"h2c",
        b"Bearer sk-not-a-key",
        b"cross-site",
        b"\xff\xfe",
        b"a\r\n continued",  # obsolete line folding
    ]
) | st.binary(max_size=30)
raw_body = st.sampled_from(
    [
        b"",
        b"{}",
        b'{"model":"fake-model","messages":[{"role":"user","content":"hi"}]}',
        b"5\r\nhello\r\n0\r\n\r\n",
        b"zz\r\n",
    ]
) | st.binary(max_size=100)


def exchange(port: int, request: bytes, timeout: float = 6) -> bytes:
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
        except OSError:
            pass  # refused mid-send: what it answered is still to be read
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except OSError:
            pass
    return data


def parse(data: bytes) -> tuple[int, str, bytes, bytes]:
    """The final response: (status, content-type, body, whole head), skipping 1xx."""
    while True:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
        if status >= 200:
            length = int(headers.get(b"content-length", b"0") or 0)
            return status, headers.get(b"content-type", b"").decode(), rest[:length], head
        data = rest


@settings(CASES, max_examples=n(1200))
@example(method=b"POST", target=b"*", version=b"HTTP/1.1", headers=[], body=b"")  # was relayed: 500
@given(
    method=raw_method,
    target=raw_target,
    version=raw_version,
    headers=st.lists(st.tuples(raw_name, raw_value), max_size=6),
    body=raw_body,
)
def test_raw_requests(
    rig: Rig, method: bytes, target: bytes, version: bytes, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    rid = f"fuzz-raw-{next(_ids)}"
    names = {n.lower() for n, _ in headers}
    lines = [method + b" " + target + b" " + version, b"X-Request-Id: " + rid.encode()]
    lines += [n + b": " + v for n, v in headers]
    if b"content-length" not in names and b"transfer-encoding" not in names:
        lines.append(b"Content-Length: %d" % len(body))
    lines.append(b"Connection: close")
    seen = len(rig.fake.requests)
    data = exchange(rig.gw.port, b"\r\n".join(lines) + b"\r\n\r\n" + body)
    assert data, "the gateway closed the connection without an answer"
    status, ctype, payload, _ = parse(data)
    rig.check(status, ctype, payload, rid, seen, method.decode("latin-1"))


# -- after everything ----------------------------------------------------------------------------------


def test_the_gateway_survived_every_case(rig: Rig) -> None:
    gw = rig.gw
    assert gw.alive and rig.cases >= n(3000), rig.cases
    r = rig.http.post(
        "/v1/chat/completions",
        json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "still there?"}]},
    )
    assert r.status_code == 200
    assert gw.metric("nometer_ledger_dropped_events") == 0
    log = gw.log()
    assert "meter process failed" not in log and "they are lost" not in log, log
    grown = gw.rss_mb() - rig.rss_start
    cpu = gw.cpu_seconds() - rig.cpu_start
    print(
        f"fuzz: {rig.cases} cases, gateway CPU {cpu:.1f} s, RSS {rig.rss_start:.0f} -> {gw.rss_mb():.0f} MB"
    )
    assert grown < 60, f"RSS grew by {grown:.0f} MB over {rig.cases} cases"
