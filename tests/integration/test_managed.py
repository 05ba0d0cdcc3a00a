"""Managed backends: nometer launches a real CPU vLLM, waits for it, restarts it after a crash,
and stops it on shutdown."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import openai
import pytest

from gateway.backends.cpu_vllm import SERVE_ARGS, ensure_model, ensure_venv
from tests.support.gateway_server import GatewayServer, gateway_settings
from tests.support.ports import free_port

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def _wait_ready(g: GatewayServer, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while httpx.get(g.url + "/readyz").status_code != 200:
        assert time.monotonic() < deadline, httpx.get(g.url + "/readyz").text
        time.sleep(0.5)


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_managed_vllm_is_launched_restarted_and_stopped(tmp_path: Path) -> None:
    if os.environ.get("NOMETER_SKIP_VLLM") == "1":
        pytest.skip("NOMETER_SKIP_VLLM=1")
    python = ensure_venv()
    model = ensure_model(python)
    port = free_port()
    s = gateway_settings(
        tmp_path,
        [],
        managed=[
            {
                "model": str(model),
                "port": port,
                "python": str(python),
                "served_name": "managed-tiny",
                "args": list(SERVE_ARGS),
            }
        ],
        routing={"health_interval_s": 0.5},
    )
    with GatewayServer(s) as g:
        assert httpx.get(g.url + "/readyz").status_code == 503  # starting: not ready yet
        _wait_ready(g)
        c = openai.OpenAI(base_url=g.base_url, api_key="x", max_retries=0, timeout=60)
        usage = c.chat.completions.create(
            model="managed-tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3
        ).usage
        assert usage is not None
        assert usage.completion_tokens == 3
        server = g.runtime.managed[0]
        first = server.proc.pid
        os.killpg(first, signal.SIGKILL)  # crash it
        deadline = time.monotonic() + 10
        while httpx.get(g.url + "/readyz").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        _wait_ready(g)  # restarted by the supervisor
        assert server.restarts == 1 and server.proc.pid != first
        assert c.chat.completions.create(
            model="managed-tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        ).choices
        second = server.proc.pid
    deadline = time.monotonic() + 30
    while _alive(second) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(second)  # stopped with the gateway, engine workers included
