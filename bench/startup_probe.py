#!/usr/bin/env python3
"""Start-up cost of a gateway: import time, time to healthy, CPU burnt until healthy, idle RSS.

For each repetition (targets interleaved) the fake upstream is up first, then the start command
runs pinned to --cpus; the probe polls GET URL+HEALTH every 20 ms from the moment of the exec.

  time to healthy   exec -> first 200 on the health path (what a supervisor or a test waits for)
  CPU to healthy    user+sys of the process tree at that moment (on a loaded machine this, not
                    wall time, is what start-up really costs)
  idle RSS          resident memory of the tree --settle seconds after healthy, no traffic yet
  idle CPU          CPU ms per second burnt while idle over the settle window after the first
                    second (health checks, timers, background samplers): at low load it adds to
                    every request's and every stream chunk's share
  import            wall and CPU of `--import-cmd` alone (python -c "import ..."), a lower bound
                    for the start; --importtime lists the slowest top-level imports

  python bench/startup_probe.py --preset nometer --preset litellm --reps 3 [--importtime]
  python bench/startup_probe.py --start 'mygw --port 19009 --upstream "$FAKE_UPSTREAM_BASE"' \
      --url http://127.0.0.1:19009 --name mygw
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from run_compare import HERE, LITELLM_VENV, NOMETER_VENV, PY, start, stop, tree_cpu_s, tree_rss_mb

PRESETS = {  # name -> (start command, url, health path, bearer key, import command)
    "nometer": (
        (
            f'exec {shlex.quote(NOMETER_VENV)}/bin/nometer serve --backend "$FAKE_UPSTREAM_BASE" '
            '--port 19003 --db "$BENCH_LOG_DIR/nometer-ledger.db"'
        ),
        "http://127.0.0.1:19003",
        "/v1/models",
        None,
        f"{shlex.quote(NOMETER_VENV)}/bin/python -c 'import gateway.cli, gateway.app, uvicorn'",
    ),
    "litellm": (
        (
            f"exec {shlex.quote(LITELLM_VENV)}/bin/litellm --config {HERE}/litellm_config.yaml "
            "--host 127.0.0.1 --port 19002 --num_workers 1"
        ),
        "http://127.0.0.1:19002",
        "/v1/models",
        "sk-bench-1234",
        f"{shlex.quote(LITELLM_VENV)}/bin/python -c 'import litellm.proxy.proxy_server'",
    ),
}


def poll_healthy(url, key, proc, timeout):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before healthy")
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"not healthy after {timeout}s")


def timed_cmd(cmd, cpus):
    """(wall s, CPU s) of a shell command, children included."""
    full = f"taskset -c {cpus} bash -c {shlex.quote(cmd)}" if cpus else cmd
    t0 = time.monotonic()
    p = subprocess.Popen(["bash", "-c", full], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    if status:
        raise RuntimeError(f"{cmd}: exit status {status}: {p.stderr.read().decode()[-500:]}")
    return time.monotonic() - t0, ru.ru_utime + ru.ru_stime


def importtime_top(cmd, k=8):
    """The k slowest top-level imports (cumulative us) from python -X importtime."""
    out = subprocess.run(
        ["bash", "-c", cmd],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, PYTHONPROFILEIMPORTTIME="1"),
    ).stderr
    tops = []
    for line in out.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m.group(3)) == 1:  # depth 0: imported by the command itself
            tops.append((int(m.group(2)), m.group(4)))
    return [f"{name} {us / 1000:.0f} ms" for us, name in sorted(tops, reverse=True)[:k]]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", action="append", default=[], choices=list(PRESETS))
    ap.add_argument("--start", help="start command of a custom target (gets $FAKE_UPSTREAM_BASE)")
    ap.add_argument("--url", help="custom target base URL")
    ap.add_argument("--name", default="custom")
    ap.add_argument("--health", default="/v1/models")
    ap.add_argument("--import-cmd", help="custom target: a python -c 'import ...' command")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--settle",
        type=float,
        default=6.0,
        help="s after healthy before reading idle RSS (idle CPU: over all but the first second)",
    )
    ap.add_argument("--cpus", default="0", help="pin the gateway here ('' = no pinning)")
    ap.add_argument("--client-cpus", default="1", help="fake upstream")
    ap.add_argument("--upstream-port", type=int, default=19001)
    ap.add_argument("--timeout", type=float, default=180)
    ap.add_argument("--importtime", action="store_true", help="also list the slowest top-level imports")
    a = ap.parse_args()
    targets = {p: PRESETS[p] for p in a.preset}
    if a.start:
        targets[a.name] = (a.start, a.url, a.health, None, a.import_cmd)
    if not targets:
        ap.error("give --preset and/or --start/--url")

    log_dir = tempfile.mkdtemp(prefix="startup-probe-")
    env = dict(
        os.environ,
        FAKE_UPSTREAM_BASE=f"http://127.0.0.1:{a.upstream_port}/v1",
        BENCH_PY=PY,
        BENCH_LOG_DIR=log_dir,
        LITELLM_MASTER_KEY="sk-bench-1234",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_LOG="ERROR",
    )
    res = {
        t: {
            "healthy_s": [],
            "cpu_to_healthy_s": [],
            "idle_rss_mb": [],
            "idle_cpu_ms_per_s": [],
            "import_s": [],
            "import_cpu_s": [],
        }
        for t in targets
    }
    up = start(
        "upstream",
        f"exec {shlex.quote(PY)} {HERE}/fake_upstream.py --port {a.upstream_port}",
        a.client_cpus,
        env,
        log_dir,
    )
    try:
        poll_healthy(f"http://127.0.0.1:{a.upstream_port}/health", None, up, 30)
        names = list(targets)
        for rep in range(a.reps):
            for t in names[rep % len(names) :] + names[: rep % len(names)]:
                cmd, url, health, key, imp = targets[t]
                if imp:
                    w, c = timed_cmd(imp, a.cpus)
                    res[t]["import_s"].append(w)
                    res[t]["import_cpu_s"].append(c)
                t0 = time.monotonic()
                p = start(t, cmd, a.cpus, env, log_dir)
                try:
                    poll_healthy(url + health, key, p, a.timeout)
                    res[t]["healthy_s"].append(time.monotonic() - t0)
                    res[t]["cpu_to_healthy_s"].append(tree_cpu_s(p.pid))
                    time.sleep(1)
                    c0, w0 = tree_cpu_s(p.pid), time.monotonic()
                    time.sleep(max(0.5, a.settle - 1))
                    res[t]["idle_cpu_ms_per_s"].append(
                        1000 * (tree_cpu_s(p.pid) - c0) / (time.monotonic() - w0)
                    )
                    res[t]["idle_rss_mb"].append(tree_rss_mb(p.pid))
                finally:
                    stop(p)
                print(
                    f"rep{rep} {t}: " + json.dumps({k: round(v[-1], 3) for k, v in res[t].items() if v}),
                    file=sys.stderr,
                )
    finally:
        stop(up)
    print(
        "| target | time to healthy s | CPU to healthy s | idle RSS MB | idle CPU ms/s | import wall s | import CPU s |"
    )
    print("|---|---|---|---|---|---|---|")
    for t, r in res.items():

        def m(k, r=r):
            return f"{statistics.median(r[k]):.2f}" if r[k] else "-"

        def rng(k, r=r):
            return f" ({min(r[k]):.2f}-{max(r[k]):.2f})" if len(r[k]) > 1 else ""

        print(
            f"| {t} | {m('healthy_s')}{rng('healthy_s')} | {m('cpu_to_healthy_s')} | "
            f"{m('idle_rss_mb')}{rng('idle_rss_mb')} | {m('idle_cpu_ms_per_s')} | {m('import_s')} | "
            f"{m('import_cpu_s')} |"
        )
    print(f"# medians of {a.reps} interleaved starts; logs in {log_dir}")
    if a.importtime:
        for t, (_, _, _, _, imp) in targets.items():
            if imp:
                print(f"# {t} slowest imports: " + ", ".join(importtime_top(imp)))


if __name__ == "__main__":
    sys.exit(main())
