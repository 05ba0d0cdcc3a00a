#!/usr/bin/env python3
"""Compare OpenAI-compatible gateways against the same fake upstream, interleaved.

Starts bench/fake_upstream.py, starts every target that has a --start command, then for
each repetition, each mode (nonstream/stream) and each concurrency runs bench/load.py once
against every target (target order rotated per repetition), so that slow drift of the
machine (another job installing packages, say) hits all targets alike. Medians over the
repetitions are printed as a markdown table; every single run is kept as a JSON line.

Targets:
  direct               built in: the fake upstream itself (the baseline)
  --target NAME=URL    any OpenAI-compatible base URL (without /v1)
  --start  NAME=CMD    shell command that starts NAME; it gets $FAKE_UPSTREAM_BASE
                       (http://127.0.0.1:PORT/v1) and $BENCH_PY (this python) in its
                       environment, runs in the current directory, and is pinned to
                       --gateway-cpus with taskset; stopped (its process group) at the end
  --key    NAME=KEY    bearer token for NAME      --model NAME=MODEL  model name for NAME
  --preset nometer     = this repo's gateway (`$NOMETER_VENV/bin/nometer serve`, default <repo>/.venv), port 19003,
                         SQLite ledger in the run's log folder
  --preset litellm     = the LiteLLM proxy from ~/.cache/nometer-bench/litellm-venv with bench/litellm_config.yaml
                         (database off), port 19002
  --n      NAME=N      timed requests per run for NAME (default -n): fast targets need more requests
                       than slow ones for a CPU figure well above the 4 ms tick of /proc

Pinning (2 cores): gateways on CPU 0, load generator + fake upstream on CPU 1, so the
gateway never competes with the client for a core. Before each run it waits (bounded,
--quiet-wait) for the machine to be quiet. Per run it records the gateway's CPU
time per request (cpu_ms_per_req: the least noisy efficiency number when the gateway is
busy), CPU per SSE event for streams (cpu_us_per_event), gateway_runq_wait_s (roughly, time the
gateway was runnable but had no CPU) and foreign_cpu_s (CPU used meanwhile by processes not
started here).

Example (LiteLLM plus our gateway later):
  python bench/run_compare.py --preset litellm \
      --target ours=http://127.0.0.1:19003 --start ours='ourgw --port 19003 --upstream $FAKE_UPSTREAM_BASE' \
      --reps 3 -n 400 --concurrency 1 16 64
"""

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
NOMETER_VENV = os.environ.get("NOMETER_VENV", os.path.join(REPO, ".venv"))
PY = sys.executable  # the interpreter that runs this script also runs load.py / fake_upstream.py
LITELLM_VENV = os.environ.get("LITELLM_VENV", os.path.expanduser("~/.cache/nometer-bench/litellm-venv"))
CLK = os.sysconf("SC_CLK_TCK")


def kv(items):
    return dict(i.split("=", 1) for i in items)


# ---------- /proc helpers (process-tree CPU and RSS, machine busy time) ----------
def children(pid):
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return kids + [g for k in kids for g in children(k)]


def tree_cpu_s(pid):
    """CPU seconds (user+sys) of a process tree, exited threads included (/proc/PID/stat; the
    kernel here samples it per tick, 250 Hz: exact enough for a busy gateway)."""
    tot = 0
    for p in [pid, *children(pid)]:
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read().rsplit(")", 1)[1].split()
            tot += int(st[11]) + int(st[12])  # utime + stime
        except OSError:
            pass
    return tot / CLK


def main_thread_cpu_s(pid):
    """CPU seconds of the process's main thread only (for uvicorn gateways: the event loop, without
    worker threads such as a ledger writer or a thread pool)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/stat") as f:
            st = f.read().rsplit(")", 1)[1].split()
        return (int(st[11]) + int(st[12])) / CLK
    except OSError:
        return 0.0


def tree_runq_s(pid):
    """Seconds the tree's live threads were runnable but not running (/proc/*/task/*/schedstat).
    Approximate: a thread that exits takes its count with it (deltas are clamped at 0)."""
    wait = 0
    for p in [pid, *children(pid)]:
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/schedstat") as f:
                    wait += int(f.read().split()[1])
            except (OSError, ValueError, IndexError):
                pass
    return wait / 1e9


def tree_rss_mb(pid):
    tot = 0
    for p in [pid, *children(pid)]:
        try:
            with open(f"/proc/{p}/status") as f:
                tot += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return round(tot / 1024, 1)


def machine_busy_s():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK  # all but idle and iowait


def wait_quiet(max_wait, max_cores):
    """Wait (<= max_wait s) until the whole machine used < max_cores over 1 s; returns (waited, cores)."""
    t0 = time.monotonic()
    while True:
        b0 = machine_busy_s()
        time.sleep(1)
        cores = machine_busy_s() - b0
        waited = time.monotonic() - t0
        if cores < max_cores or waited >= max_wait:
            return round(waited, 1), round(cores, 2)


# ---------- process management ----------
def start(name, cmd, cpus, env, log_dir):
    full = (
        f"exec taskset -c {cpus} bash -c {shlex.quote(cmd)}" if cpus else cmd
    )  # children inherit the pinning
    with open(os.path.join(log_dir, f"{name}.log"), "w") as log:  # the child keeps its own copy of the fd
        p = subprocess.Popen(
            ["bash", "-c", full], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )  # own process group: stopped as a whole
    print(f"# started {name} pid={p.pid}: {cmd}", file=sys.stderr)
    return p


def stop(p):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def wait_healthy(url, key, proc, timeout):
    """Poll GET url/v1/models until 200; returns seconds since proc start or raises."""
    t0 = time.monotonic()
    req = urllib.request.Request(
        url.rstrip("/") + "/v1/models", headers={"Authorization": f"Bearer {key}"} if key else {}
    )
    while time.monotonic() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not healthy after {timeout}s")


def run_load(a, name, url, key, model, stream, c, pids, n, max_tokens):
    cmd = [
        PY,
        os.path.join(HERE, "load.py"),
        "--url",
        url,
        "-n",
        str(n),
        "-c",
        str(c),
        "--model",
        model,
        "--max-tokens",
        str(max_tokens),
        "--label",
        name,
    ]
    if stream:
        cmd.append("--stream")
    if key:
        cmd += ["--api-key", key]
    if a.client_cpus:
        cmd = ["taskset", "-c", a.client_cpus, *cmd]
    waited, idle_cores = wait_quiet(a.quiet_wait, a.quiet_cores) if a.quiet_wait else (0, None)
    cpu0 = {k: tree_cpu_s(p) for k, p in pids.items()}
    loop0 = main_thread_cpu_s(pids[name]) if name in pids else 0.0
    rq0 = {k: tree_runq_s(p) for k, p in pids.items()}
    busy0, t0 = machine_busy_s(), time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = p.stdout.read()
    _, _status, ru = os.wait4(p.pid, 0)
    busy, proc_wall = machine_busy_s() - busy0, time.monotonic() - t0
    cpu = {k: tree_cpu_s(p) - cpu0[k] for k, p in pids.items()}
    loop = main_thread_cpu_s(pids[name]) - loop0 if name in pids else 0.0
    runq = {k: max(0.0, tree_runq_s(p) - rq0[k]) for k, p in pids.items()}
    r = json.loads(out.strip().splitlines()[-1])
    ours = sum(cpu.values()) + ru.ru_utime + ru.ru_stime
    total_req = n + max(20, 2 * c)  # load.py's warmup is included in the CPU window
    gw_cpu = cpu.get(name, cpu["upstream"])
    r.update(
        target=name,
        model=model,
        max_tokens=max_tokens,
        gateway_cpu_s=round(cpu.get(name, 0), 2),
        gateway_runq_wait_s=round(runq.get(name, 0), 2),
        upstream_cpu_s=round(cpu["upstream"], 2),
        cpu_ms_per_req=round(1000 * gw_cpu / total_req, 3),
        loop_cpu_ms_per_req=round(1000 * loop / total_req, 3) if name in pids else None,
        cpu_us_per_event=(
            round(1e6 * gw_cpu / (total_req * r["sse_events_per_req"]), 2)
            if r.get("sse_events_per_req")
            else None
        ),
        foreign_cpu_s=round(max(0.0, busy - ours), 2),
        quiet_wait_s=waited,
        busy_cores_before=idle_cores,
        proc_wall_s=round(proc_wall, 2),
        loadavg1=os.getloadavg()[0],
    )
    return r


def summarize(rows, targets, baseline, ref):
    """Markdown table of medians over repetitions; overheads are paired within a repetition.

    With streams of two or more lengths (--max-tokens 16 256), a second table gives the marginal
    gateway CPU per relayed SSE chunk: the slope of CPU/request over chunks/request, which removes
    the fixed per-request cost that a plain CPU/chunk figure smears over the chunks."""
    bad = [r for r in rows if r["ok"] < 0.99 * r["n"]]  # failed runs (e.g. a gateway killed mid-run)
    rows = [r for r in rows if r["ok"] >= 0.99 * r["n"]]

    def key(r):
        return (r["stream"], r["c"], r.get("max_tokens", 16))

    cells = sorted({key(r) for r in rows})
    many_lengths = len({c[2] for c in cells}) > 1
    lines = [
        "| mode | c | " + ("tokens | " if many_lengths else "") + "target | req/s | p50 ms | p99 ms | "
        f"TTFT p50 | TTFT p99 | +p50 ms vs {baseline} | req/s ratio vs {baseline} |"
        + (f" req/s ratio vs {ref} |" if ref else "")
        + " gw CPU ms/req | of which main thread | gw CPU us/SSE event | gw runq wait s | foreign CPU s |",
        "|---|---|"
        + ("---|" if many_lengths else "")
        + "---|---|---|---|---|---|---|---|"
        + ("---|" if ref else "")
        + "---|---|---|---|---|",
    ]

    def med(xs):
        return round(statistics.median(xs), 2) if xs else None

    def rmed(xs):
        return float(f"{statistics.median(xs):.3g}") if xs else None

    for cell in cells:
        by = {}  # target -> rep -> row
        for r in rows:
            if key(r) == cell:
                by.setdefault(r["target"], {})[r["rep"]] = r
        for t in targets:
            rs = list(by.get(t, {}).values())
            if not rs:
                continue
            pairs = [(r, by.get(baseline, {}).get(r["rep"])) for r in rs]
            added = [r["lat_p50_ms"] - b["lat_p50_ms"] for r, b in pairs if b and r["lat_p50_ms"] is not None]
            ratio = [r["rps"] / b["rps"] for r, b in pairs if b and b["rps"]]
            rref = [
                r["rps"] / by[ref][r["rep"]]["rps"]
                for r in rs
                if ref and r["rep"] in by.get(ref, {}) and by[ref][r["rep"]]["rps"]
            ]

            def g(k, rs=rs):
                return med([r[k] for r in rs if r.get(k) is not None])

            lines.append(
                f"| {'stream' if cell[0] else 'nonstream'} | {cell[1]} | "
                + (f"{cell[2]} | " if many_lengths else "")
                + f"{t} | {g('rps')} | {g('lat_p50_ms')} | {g('lat_p99_ms')} | "
                f"{g('ttft_p50_ms') or '-'} | {g('ttft_p99_ms') or '-'} | "
                f"{med(added) if t != baseline else '-'} | "
                f"{rmed(ratio) if t != baseline else '-'} |"
                + (f" {rmed(rref) if t != ref else '-'} |" if ref else "")
                + f" {g('cpu_ms_per_req')} | {g('loop_cpu_ms_per_req') or '-'} |"
                f" {g('cpu_us_per_event') or '-'} |"
                f" {g('gateway_runq_wait_s') or '-'} | {g('foreign_cpu_s')} |"
            )
    if many_lengths:
        lines += [
            "",
            (
                "Marginal gateway CPU per relayed SSE chunk (slope between the shortest and the longest "
                "stream, paired per repetition, median):"
            ),
            "",
            "| c | target | tokens | us/chunk (marginal) | us/event (total/events, longest) |",
            "|---|---|---|---|---|",
        ]
        for c in sorted({k[1] for k in cells if k[0]}):
            lens = sorted({k[2] for k in cells if k[0] and k[1] == c})
            if len(lens) < 2:
                continue
            lo, hi = lens[0], lens[-1]
            for t in targets:
                rl = {r["rep"]: r for r in rows if key(r) == (True, c, lo) and r["target"] == t}
                rh = {r["rep"]: r for r in rows if key(r) == (True, c, hi) and r["target"] == t}
                slopes = [
                    1000
                    * (rh[i]["cpu_ms_per_req"] - rl[i]["cpu_ms_per_req"])
                    / (rh[i]["sse_events_per_req"] - rl[i]["sse_events_per_req"])
                    for i in rh
                    if i in rl and rh[i]["sse_events_per_req"] != rl[i]["sse_events_per_req"]
                ]
                per_ev = [r["cpu_us_per_event"] for r in rh.values() if r.get("cpu_us_per_event")]
                if slopes:
                    lines.append(f"| {c} | {t} | {lo}->{hi} | {med(slopes)} | {med(per_ev)} |")
    for r in bad:
        lines.append(
            f"\nexcluded (failed run): rep {r['rep']} {'stream' if r['stream'] else 'nonstream'} "
            f"c={r['c']} {r['target']}: {r['ok']}/{r['n']} ok, errors {r['errors']}"
        )
    return "\n".join(lines)


def presets(names, log_dir):
    """(urls, starts, keys, models) of the built-in gateways."""
    urls, starts, keys, models = {}, {}, {}, {}
    litellm = [p for p in names if p.startswith("litellm")]
    for p in litellm:  # both LiteLLM presets share one process
        urls[p] = "http://127.0.0.1:19002"
        keys[p] = "sk-bench-1234"
        models[p] = "fake-vllm" if p == "litellm-vllm" else "fake-model"
    if litellm:
        starts[litellm[0]] = (
            f"exec {shlex.quote(LITELLM_VENV)}/bin/litellm --config {HERE}/litellm_config.yaml "
            "--host 127.0.0.1 --port 19002 --num_workers 1"
        )
    if "nometer" in names:
        urls["nometer"] = "http://127.0.0.1:19003"
        models["nometer"] = "fake-model"
        db = os.path.join(log_dir, "nometer-ledger.db")
        starts["nometer"] = (
            f'exec {shlex.quote(NOMETER_VENV)}/bin/nometer serve --backend "$FAKE_UPSTREAM_BASE" '
            f"--port 19003 --db {shlex.quote(db)}"
        )
    return urls, starts, keys, models


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", action="append", default=[], metavar="NAME=URL")
    ap.add_argument("--start", action="append", default=[], metavar="NAME=CMD")
    ap.add_argument("--key", action="append", default=[], metavar="NAME=KEY")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=MODEL")
    ap.add_argument(
        "--n",
        dest="target_n",
        action="append",
        default=[],
        metavar="NAME=N",
        help="timed requests per run for one target (default: -n)",
    )
    ap.add_argument(
        "--preset",
        action="append",
        default=[],
        choices=["nometer", "litellm", "litellm-vllm"],
        help="nometer: this repo's gateway; litellm: LiteLLM proxy, openai/ provider; "
        "litellm-vllm: same proxy, hosted_vllm/ provider",
    )
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--modes", nargs="+", default=["nonstream", "stream"], choices=["nonstream", "stream"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("-n", "--requests", type=int, default=400, help="timed requests per run")
    ap.add_argument(
        "--max-tokens",
        type=int,
        nargs="+",
        default=[16],
        help="completion tokens = SSE content chunks; several values: a stream-length sweep "
        "(non-streamed runs use the first)",
    )
    ap.add_argument("--upstream-port", type=int, default=19001)
    ap.add_argument(
        "--upstream-args", default="", help='extra fake_upstream flags, e.g. "--ttft-ms 20 --tpot-ms 5"'
    )
    ap.add_argument("--gateway-cpus", default="0")
    ap.add_argument("--client-cpus", default="1", help="load.py and fake_upstream")
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=15,
        help="before each run wait up to this many s for the machine to be quiet (0: off)",
    )
    ap.add_argument("--quiet-cores", type=float, default=0.25, help="'quiet' = fewer busy cores than this")
    ap.add_argument("--startup-timeout", type=float, default=180)
    ap.add_argument("--baseline", default="direct")
    ap.add_argument("--ref", default=None, help="also print req/s ratio against this target (e.g. litellm)")
    ap.add_argument("--out", default=None, help="JSONL file (default bench/results/<time>.jsonl)")
    ap.add_argument("--summarize", metavar="JSONL", help="only re-print the table of an earlier run")
    a = ap.parse_args()
    # Background jobs of a non-interactive shell start with SIGINT ignored; SIGTERM would skip `finally`.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if a.summarize:
        with open(a.summarize) as f:
            rows = [json.loads(line) for line in f]
        runs = [r for r in rows if "target" in r]
        print("# meta: " + json.dumps([r for r in rows if "meta_end" in r or "meta" in r][-1]))
        print(summarize(runs, list(dict.fromkeys(r["target"] for r in runs)), a.baseline, a.ref))
        return
    if a.no_pin:
        a.gateway_cpus = a.client_cpus = ""

    out = os.path.abspath(a.out or os.path.join(HERE, "results", time.strftime("%Y%m%d-%H%M%S") + ".jsonl"))
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    log_dir = os.path.splitext(out)[0] + "-logs"
    os.makedirs(log_dir, exist_ok=True)

    urls = {"direct": f"http://127.0.0.1:{a.upstream_port}"}
    p_urls, starts, keys, models = presets(a.preset, log_dir)
    urls.update(p_urls)
    urls.update(kv(a.target))
    starts.update(kv(a.start))
    keys.update(kv(a.key))
    models.update(kv(a.model))
    target_n = {k: int(v) for k, v in kv(a.target_n).items()}
    targets = list(urls)

    env = dict(
        os.environ,
        FAKE_UPSTREAM_BASE=f"{urls['direct']}/v1",
        BENCH_PY=PY,
        BENCH_LOG_DIR=log_dir,
        LITELLM_MASTER_KEY="sk-bench-1234",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_LOG="ERROR",
    )

    procs, pids, meta = {}, {}, {}
    try:
        procs["upstream"] = start(
            "upstream",
            f"exec {shlex.quote(PY)} {HERE}/fake_upstream.py --port {a.upstream_port} {a.upstream_args}",
            a.client_cpus,
            env,
            log_dir,
        )
        wait_healthy(urls["direct"], None, procs["upstream"], 30)
        pids["upstream"] = procs["upstream"].pid
        for name, cmd in starts.items():
            procs[name] = start(name, cmd, a.gateway_cpus, env, log_dir)
            t_up = wait_healthy(urls[name], keys.get(name), procs[name], a.startup_timeout)
            cpu_up = tree_cpu_s(procs[name].pid)
            pids[name] = procs[name].pid
            time.sleep(3)
            meta[name] = {
                "startup_to_healthy_s": round(t_up, 2),
                "startup_cpu_s": round(cpu_up, 2),
                "idle_rss_mb": tree_rss_mb(procs[name].pid),
            }
        for t in targets:  # a second LiteLLM preset (or any target without its own process) shares one
            if t not in pids and t != "direct":
                owner = next((s for s in starts if urls[s] == urls[t]), None)
                if owner:
                    pids[t] = pids[owner]
        print(f"# startup: {json.dumps(meta)}", file=sys.stderr)

        plan = []  # (mode, c, max_tokens): non-streamed runs use one length, streams sweep them all
        for mode in a.modes:
            for c in a.concurrency:
                for mt in a.max_tokens if mode == "stream" else a.max_tokens[:1]:
                    plan.append((mode, c, mt))
        rows = []
        with open(out, "w") as f:
            f.write(json.dumps({"meta": meta, "args": vars(a), "targets": urls, "models": models}) + "\n")
            for rep in range(a.reps):
                for mode, c, mt in plan:
                    order = targets[rep % len(targets) :] + targets[: rep % len(targets)]
                    for t in order:
                        owner = next((s for s in starts if pids.get(t) == procs[s].pid), None)
                        if owner and procs[owner].poll() is not None:  # died (or was killed by someone else)
                            print(
                                f"# {owner} exited ({procs[owner].returncode}): restarting", file=sys.stderr
                            )
                            procs[owner] = start(owner, starts[owner], a.gateway_cpus, env, log_dir)
                            wait_healthy(urls[owner], keys.get(owner), procs[owner], a.startup_timeout)
                            meta[owner]["restarts"] = meta[owner].get("restarts", 0) + 1
                            for k in list(pids):
                                if pids[k] == pids[owner] and k != "upstream":
                                    pids[k] = procs[owner].pid
                        r = run_load(
                            a,
                            t,
                            urls[t],
                            keys.get(t),
                            models.get(t, "fake-model"),
                            mode == "stream",
                            c,
                            {k: v for k, v in pids.items() if k in ("upstream", t)},
                            target_n.get(t, a.requests),
                            mt,
                        )
                        r["rep"] = rep
                        rows.append(r)
                        f.write(json.dumps(r) + "\n")
                        f.flush()
                        print(
                            f"rep{rep} {mode:9} c={c:<3} tok={mt:<4} {t:14} rps={r['rps']:<8} "
                            f"p50={r['lat_p50_ms']} p99={r['lat_p99_ms']} ttft50={r.get('ttft_p50_ms')} "
                            f"cpu/req={r['cpu_ms_per_req']}ms err={r['errors']} "
                            f"foreign={r['foreign_cpu_s']}s",
                            file=sys.stderr,
                        )
            for name in starts:
                meta[name]["rss_after_load_mb"] = tree_rss_mb(procs[name].pid)
            f.write(json.dumps({"meta_end": meta}) + "\n")
        print(f"# results: {out}\n# meta: {json.dumps(meta)}")
        print(summarize(rows, targets, a.baseline, a.ref))
    finally:
        for p in procs.values():
            stop(p)


if __name__ == "__main__":
    main()
