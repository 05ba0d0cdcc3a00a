"""CPU per agent step, gateway and meter together, over a 100-step transcript whose history grows
to about 60k tokens: with the meter's count cache (pricing/count_cache.py) and without it.

    PYTHONPATH=. .venv/bin/python bench/agent_steps.py [--steps 100] [--tokens-per-step 700] [--repeat 3]

Each step is what the two processes do for one chat request, run in this process and timed with
`time.process_time` (CPU, not wall): the gateway's part (parse the body once, with orjson, as
`gateway/http/request.py` does, and pickle the request record for the meter process, as the
recorder's `ProcessPoolExecutor` does) and the meter's part (unpickle the batch, then
`make_finalizer`: usage, answer, re-count for the three default references, prefix tracking,
pricing, ledger rows). The HTTP relay itself is not in it (it does not depend on the history).
The transcript is an agent's: a user turn, an assistant tool call and a tool result per step, the
whole history resent every step; the answer carries usage but no cached-token count, so the
meter's own prefix tracking runs (the costlier, default path with vLLM).

Each variant runs the whole transcript `--repeat` times (a fresh meter each time) and keeps, per
step, the least CPU of the runs: other processes on a shared machine only ever add to a figure.
`--e2e` measures the same transcript through a real gateway process (and its meter process)
in front of the fake upstream (tests/support): each of the last 10 steps alone, as an agent
sends them (the next step only after this one's ledger row is written), CPU of the process tree
from the kernel's nanosecond per-thread run times (`/proc/PID/task/TID/schedstat`; the 4 ms
ticks of /proc/PID/stat are too coarse for one step), minus the tree's idle CPU for as long
(health checks, timers), measured just before. `tiny_request` is the same for a one-message
request: what any request costs when it comes alone, the figure to set a long step against
(alone, nothing is amortised: the recorder wakes, the batch of one crosses to the meter process
and back and is written in its own transaction, all with cold caches).

Prints one JSON object: per variant, CPU ms per step (mean over all steps, and median and max of
the last 10 steps, whose history is the longest: ~60k tokens), the count cache's hits and misses
over a run, and the history's size at the last step.
"""

from __future__ import annotations

import argparse
import os
import pickle
import random
import statistics
import time
from typing import Any

import orjson

from gateway.ledger.events import RequestRecord
from gateway.meter.rows import estimate_prompt_tokens, make_finalizer
from gateway.meter.shadow import ShadowMeter
from gateway.settings import MeterSettings
from pricing.tables import shipped_table
from pricing.tokens import count_chat_prompt, tokenizer_for

WORDS = (
    "def return self import from class if else for in while try except with as yield lambda "
    "value result error config request response token model cache path file line test assert "
    "None True False list dict str int float len range print open read write json data index"
).split()


def transcript(steps: int, tokens_per_step: int, seed: int = 9) -> list[list[dict[str, Any]]]:
    """The messages sent at each step (each step's list is the previous one plus three turns)."""
    rnd = random.Random(seed)
    history: list[dict[str, Any]] = [{"role": "system", "content": "You are a coding agent. " * 20}]
    out = []
    for i in range(steps):
        words = " ".join(rnd.choice(WORDS) for _ in range(int(tokens_per_step * 0.8)))
        history = [
            *history,
            {"role": "user", "content": f"Step {i}: look at src/module_{i}.py and fix the failing test."},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{i}",
                        "type": "function",
                        "function": {"name": "read_file", "arguments": f'{{"path": "src/module_{i}.py"}}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": f"call_{i}", "content": words},
        ]
        out.append(history)
    return out


def run(steps: list[list[dict[str, Any]]], entries: int) -> tuple[list[float], ShadowMeter]:
    meter = ShadowMeter(MeterSettings(count_cache_entries=entries), shipped_table(), {})
    finalize = make_finalizer(estimate_prompt_tokens, meter)
    answer = {"role": "assistant", "content": "I will edit the file now."}
    cpu = []
    for i, messages in enumerate(steps):
        body = orjson.dumps({"model": "local-model", "messages": messages})
        usage = {"prompt_tokens": 0, "completion_tokens": 8, "total_tokens": 8}
        response = orjson.dumps({"choices": [{"index": 0, "message": answer}], "usage": usage})
        t = time.process_time()
        # the gateway: one parse of the body, the record handed to the meter process
        payload = orjson.loads(body)
        rec = RequestRecord(f"r{i}", "/v1/chat/completions", "local-model", 1_767_000_000.0 + i, 0.0)
        rec.served_model, rec.backend, rec.status, rec.busy_s = "local-model", "b", 200, 0.5
        rec.request, rec.response = payload, response
        wire = pickle.dumps([rec], protocol=pickle.HIGHEST_PROTOCOL)
        # the meter process
        finalize(pickle.loads(wire))
        cpu.append((time.process_time() - t) * 1000)
    return cpu, meter


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its children: the sum over their threads of the kernel's
    nanosecond run time (``/proc/PID/task/TID/schedstat``), or of user + sys ticks (4 ms on this
    kernel: too coarse for a few milliseconds per step) where schedstat is missing."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                try:
                    with open(f"/proc/{p}/task/{tid}/schedstat") as f:
                        total += int(f.read().split()[0]) / 1e9
                except (OSError, ValueError, IndexError):
                    with open(f"/proc/{p}/task/{tid}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(x) for x in f.read().split()]
        except OSError:
            continue
    return total


def e2e(steps: list[list[dict[str, Any]]], entries: int) -> dict[str, Any]:
    """CPU per step of the last 10 steps, through a real gateway and meter process."""
    import sqlite3
    import tempfile
    from pathlib import Path

    import httpx

    from tests.support.fake_upstream import FakeUpstream
    from tests.support.gateway_process import GatewayProcess

    with tempfile.TemporaryDirectory() as tmp, FakeUpstream() as fake:
        config = {"backends": [{"url": fake.base_url}], "meter": {"count_cache_entries": entries}}
        with GatewayProcess(Path(tmp), config) as g, httpx.Client(timeout=60) as client:
            db = Path(tmp) / "ledger.db"

            def rows() -> int:
                with sqlite3.connect(db) as c:
                    return int(c.execute("SELECT COUNT(*) FROM usage_events").fetchone()[0])

            def settle(n: int) -> None:
                while rows() < n:
                    time.sleep(0.05)

            def post(messages: list[dict[str, Any]]) -> None:
                body = orjson.dumps({"model": "fake-model", "messages": messages})
                r = client.post(
                    g.base_url + "/chat/completions",
                    content=body,
                    headers={"content-type": "application/json"},
                )
                r.raise_for_status()

            for messages in steps[:-10]:
                post(messages)
            settle(len(steps) - 10)
            time.sleep(1)
            idle0, w0 = tree_cpu_s(g.pid), time.monotonic()
            time.sleep(3)
            idle_rate = (tree_cpu_s(g.pid) - idle0) / (time.monotonic() - w0)
            per_step = []
            for i, messages in enumerate(steps[-10:]):
                cpu0, w0 = tree_cpu_s(g.pid), time.monotonic()
                post(messages)
                settle(len(steps) - 9 + i)  # this step's row is written: its metering is done
                cpu, wall = tree_cpu_s(g.pid) - cpu0, time.monotonic() - w0
                per_step.append((cpu - idle_rate * wall) * 1000)
    return {
        "cpu_ms_per_step_last10": round(statistics.median(per_step), 2),
        "cpu_ms_per_step_last10_mean": round(statistics.fmean(per_step), 2),
        "cpu_ms_per_step_last10_max": round(max(per_step), 2),
        "idle_cpu_ms_per_s": round(idle_rate * 1000, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--tokens-per-step", type=int, default=700)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--e2e", action="store_true", help="through a real gateway and meter process")
    args = ap.parse_args()
    steps = transcript(args.steps, args.tokens_per_step)
    shipped_table().lookup("gpt-4.1")  # warm: table parse and encodings are per process, not per step
    count_chat_prompt(steps[0], None, tokenizer_for("gpt-4.1"))
    out: dict[str, Any] = {
        "steps": args.steps,
        "last_history_tokens_o200k": count_chat_prompt(steps[-1], None, tokenizer_for("gpt-4.1")),
        "last_body_bytes": len(orjson.dumps({"messages": steps[-1]})),
    }
    if args.e2e:  # the same measure for a one-message request: what any request costs this way
        out["tiny_request"] = e2e([steps[0][:2]] * len(steps), 65_536)
    for name, entries in (("without_cache", 0), ("with_cache", 65_536)):
        if args.e2e:
            out[name] = e2e(steps, entries)
            continue
        runs = [run(steps, entries) for _ in range(args.repeat)]
        cpu = [min(r[0][i] for r in runs) for i in range(len(steps))]
        tail = cpu[-10:]
        counts = runs[0][1].counts
        out[name] = {
            "cpu_ms_per_step_mean": round(statistics.fmean(cpu), 2),
            "cpu_ms_last10_median": round(statistics.median(tail), 2),
            "cpu_ms_last10_max": round(max(tail), 2),
            "cache_hits": None if counts is None else counts.hits,
            "cache_misses": None if counts is None else counts.misses,
        }
    print(orjson.dumps(out).decode())


if __name__ == "__main__":
    main()
