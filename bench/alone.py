#!/usr/bin/env python3
"""CPU of one request that arrives alone: per thread of the gateway's process tree.

    PYTHONPATH=. .venv/bin/python bench/alone.py [--relay] [-n 30] [--gap 0.3]

Starts the fake upstream (bench/fake_upstream.py) and nometer (or, with --relay, the bare
aiohttp relay of bench/relay_compare.py), sends n one-message chat requests `--gap` seconds
apart (each alone: its ledger batch is a batch of one, every cache cold), and prints each
thread's CPU per request from the kernel's nanosecond run times (/proc/PID/task/TID/schedstat)
minus that thread's idle CPU over as long (measured first, the same n gaps without requests).
Under load the same work costs a fraction of this (docs/benchmarks.md, section 5b): this is the
figure for an agent that sends one step at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tree(pid: int) -> list[int]:
    out = [pid]
    for t in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{t}/children") as f:
            for c in f.read().split():
                out += tree(int(c))
    return out


def snap(pid: int) -> dict[tuple[int, int, str], int]:
    d = {}
    for p in tree(pid):
        for t in os.listdir(f"/proc/{p}/task"):
            try:
                with open(f"/proc/{p}/task/{t}/comm") as f:
                    name = f.read().strip()
                with open(f"/proc/{p}/task/{t}/schedstat") as f:
                    d[(p, int(t), name)] = int(f.read().split()[0])
            except OSError:
                pass
    return d


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--relay", action="store_true", help="the bare aiohttp relay instead of nometer")
    ap.add_argument("-n", type=int, default=30)
    ap.add_argument("--gap", type=float, default=0.3)
    ap.add_argument("--port", type=int, default=19303)
    a = ap.parse_args()
    py, up_port = sys.executable, a.port - 10000
    tmp = tempfile.mkdtemp(prefix="nometer-alone-")
    up = subprocess.Popen(
        [py, "bench/fake_upstream.py", "--port", str(up_port)], cwd=REPO, stdout=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{up_port}/v1"
    if a.relay:
        cmd = [py, "bench/relay_compare.py", "serve", "--variant", "aiohttp-orjson", "--port", str(a.port)]
        cmd += ["--upstream", base]
        ready = f"http://127.0.0.1:{a.port}/v1/models"
    else:
        nometer = os.path.join(os.path.dirname(py), "nometer")
        cmd = [nometer, "serve", "--backend", base, "--port", str(a.port), "--db", f"{tmp}/ledger.db"]
        ready = f"http://127.0.0.1:{a.port}/readyz"
    with open(f"{tmp}/gateway.log", "w") as log:
        gw = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(150):
            try:
                if urllib.request.urlopen(ready).status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        time.sleep(4)  # the meter process is up and warm
        body = json.dumps({"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}).encode()

        def post() -> None:
            req = urllib.request.Request(
                f"http://127.0.0.1:{a.port}/v1/chat/completions",
                data=body,
                headers={"content-type": "application/json"},
            )
            urllib.request.urlopen(req).read()

        for _ in range(5):
            post()
        time.sleep(1)

        def phase(send: bool) -> tuple[dict[tuple[int, int, str], float], float]:
            before, t0 = snap(gw.pid), time.monotonic()
            for _ in range(a.n):
                if send:
                    post()
                time.sleep(a.gap)
            after, wall = snap(gw.pid), time.monotonic() - t0
            return {k: (after[k] - before.get(k, 0)) / 1e6 for k in after}, wall

        idle, idle_wall = phase(False)
        busy, busy_wall = phase(True)
        per = Counter({k: busy[k] - idle.get(k, 0.0) * busy_wall / idle_wall for k in busy})
        print(f"{'relay' if a.relay else 'nometer'}: {a.n} requests {a.gap} s apart")
        for (pid, tid, name), ms in per.most_common():
            if abs(ms) / a.n >= 0.005:
                print(f"  {ms / a.n:7.3f} ms/request  pid {pid} tid {tid} ({name})")
        print(
            f"  {sum(per.values()) / a.n:7.3f} ms/request in all (idle: {sum(idle.values()) / idle_wall:.2f} ms/s)"
        )
    finally:
        gw.send_signal(2)
        try:
            gw.wait(15)
        except subprocess.TimeoutExpired:
            gw.kill()
        up.terminate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
