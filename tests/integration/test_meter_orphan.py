"""Crash recovery (issue 11, item 10): after a kill -9 of the gateway its meter process (and the
``multiprocessing`` resource tracker that lives as long as the meter holds its pipe) exit too.
A real gateway process (``python -m gateway serve``) against the fake upstream."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx

from tests.support.fake_upstream import FakeUpstream
from tests.support.gateway_process import GatewayProcess
from tests.support.traffic import BODY, wait_until


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[1]) == pid:
            out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_meter_process_exits_when_the_gateway_is_killed(tmp_path: Path) -> None:
    with FakeUpstream() as fake:
        gw = GatewayProcess(tmp_path, {"backends": [{"url": fake.base_url}]}).start()
        try:
            r = httpx.post(gw.base_url + "/chat/completions", json=BODY, timeout=30)
            assert r.status_code == 200
            wait_until(lambda: len(_children(gw.pid)) >= 1, what="the meter process")
            children = _children(gw.pid)
            cmdlines = [Path(f"/proc/{c}/cmdline").read_bytes() for c in children]
            assert any(b"multiprocessing" in c for c in cmdlines)  # the spawned meter worker
            os.kill(gw.pid, signal.SIGKILL)
            assert gw.proc is not None
            gw.proc.wait(30)
            wait_until(lambda: not any(_alive(c) for c in children), timeout=60, what="the orphans to exit")
        finally:
            gw.stop()
