"""A managed vLLM's port must be its own: a server already there (or one that takes the port while
ours starts) is never health-checked nor sent a request, `nometer serve` refuses a taken port, and
"ready" is logged once a backend can serve, not when the socket opens.

The managed "vLLM" here is ``tests.support.lookalike`` started by the gateway through a stand-in
interpreter (the real CPU vLLM is in test_managed.py): what is under test is whose process answers.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.backends import listeners
from tests.support.gateway_server import GatewayServer, gateway_settings
from tests.support.lookalike import Lookalike
from tests.support.ports import free_port

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads listeners from /proc")

NAME = "managed-tiny"


def interpreter(tmp_path: Path, listens: bool) -> Path:
    """What the gateway runs as the vLLM venv's python: a look-alike that serves the port it is
    given (``listens``), or a process that never opens it."""
    script = tmp_path / ("python-listens" if listens else "python-silent")
    # the gateway runs `PYTHON -m vllm.entrypoints.openai.api_server --model ... --port N ...`
    body = (
        f'shift 2\nexec {sys.executable} -m tests.support.lookalike "$@"\n' if listens else "exec sleep 600\n"
    )
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


def managed(tmp_path: Path, port: int, python: Path) -> Any:
    return gateway_settings(
        tmp_path,
        [],
        managed=[
            {"model": str(tmp_path / "model"), "port": port, "python": str(python), "served_name": NAME}
        ],
        routing={"health_interval_s": 0.2},
    )


def wait_for(check: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def backend_error(g: GatewayServer) -> str:
    r = httpx.get(g.url + "/readyz")
    return str(r.json()["backends"][0]["error"]) if r.status_code == 503 else ""


def chat(g: GatewayServer) -> httpx.Response:
    body = {"model": NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    return httpx.post(g.base_url + "/chat/completions", json=body, timeout=10)


def test_listeners_name_the_process_holding_a_port() -> None:
    port = free_port()
    assert listeners.port_free(port) and listeners.holders(port) == set()
    with Lookalike(port, ["x"]):
        assert not listeners.port_free(port)
        assert listeners.holders(port) == {os.getpid()}
        assert listeners.holders(port, [os.getpid() + 10_000_000]) == set()  # not among these
        assert f"pid {os.getpid()} (" in listeners.who_holds(port)
    assert listeners.port_free(port) and listeners.holders(port) == set()


def test_a_server_already_on_the_port_is_never_used(tmp_path: Path) -> None:
    port = free_port()
    with (
        Lookalike(port, [NAME]) as other,
        GatewayServer(managed(tmp_path, port, interpreter(tmp_path, True))) as g,
    ):
        wait_for(lambda: "already in use" in backend_error(g), "the backend names the taken port")
        assert f"port {port} is already in use by pid {os.getpid()}" in backend_error(g)
        assert g.runtime.managed[0].proc is None  # nothing was started on a taken port
        assert chat(g).status_code in (404, 503)
        time.sleep(0.5)  # a few health rounds
        assert other.paths == []  # never health-checked, never sent a request
    assert g.rows() == [] or all(r["backend"] is None for r in g.rows())


def test_a_server_that_takes_the_port_while_ours_starts_is_not_trusted(tmp_path: Path) -> None:
    port = free_port()
    with GatewayServer(managed(tmp_path, port, interpreter(tmp_path, False))) as g:
        wait_for(lambda: g.runtime.managed[0].proc is not None, "the managed process is started")
        ours = g.runtime.managed[0].proc.pid
        with Lookalike(port, [NAME]) as other:  # it wins the race for the port
            wait_for(lambda: "not by the vLLM nometer started" in backend_error(g), "the impostor is named")
            assert f"answered by pid {os.getpid()}" in backend_error(g) and f"(pid {ours})" in backend_error(
                g
            )
            assert chat(g).status_code in (404, 503)
            assert other.paths == []


def test_our_own_server_is_verified_and_ready_is_logged_only_then(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    caplog.set_level(logging.INFO, logger="nometer")
    with GatewayServer(managed(tmp_path, port, interpreter(tmp_path, True))) as g:
        wait_for(lambda: httpx.get(g.url + "/readyz").status_code == 200, "the managed look-alike is healthy")
        server = g.runtime.managed[0]
        assert server._verified == server.proc.pid
        r = chat(g)
        assert (
            r.status_code == 200
            and r.json()["choices"][0]["message"]["content"] == "from the managed look-alike"
        )
        wait_for(lambda: any("nometer ready" in m for m in caplog.messages), "ready is logged")
    said = [m for m in caplog.messages if m.startswith("nometer ")]
    waiting = next(i for i, m in enumerate(said) if "not ready until a backend is healthy" in m)
    ready = next(i for i, m in enumerate(said) if m.startswith("nometer ready"))
    assert waiting < ready and f"models: {NAME}" in said[ready]


def test_no_backend_at_all_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nometer")
    with GatewayServer(gateway_settings(tmp_path, [])):
        wait_for(lambda: any("has no backend" in m for m in caplog.messages), "the warning")
    (record,) = [r for r in caplog.records if "has no backend" in r.getMessage()]
    assert record.levelno == logging.WARNING and "--demo" in record.getMessage()
    assert not any("nometer ready" in m for m in caplog.messages)


def test_serve_refuses_a_taken_managed_port(tmp_path: Path) -> None:
    port = free_port()
    with Lookalike(port, [NAME]) as other:
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "--managed-model", str(tmp_path / "m"),
             "--managed-port", str(port), "--db", str(tmp_path / "l.db")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert f"port {port} of the managed vLLM is already in use by pid {os.getpid()}" in done.stderr
        assert "Traceback" not in done.stderr and other.paths == []
