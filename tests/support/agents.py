"""Real agent CLIs for the integration suite: Codex (``codex exec``) and Claude Code (``claude -p``).

Both come from npm, pinned in ``tests/clients/node/package.json`` + ``package-lock.json`` and
installed by ``scripts/test.sh`` (``npm ci``); each ships its native binary inside a registry
package, so nothing else is downloaded. Each run gets its own HOME (and CODEX_HOME), no stdin, no
telemetry, and is pointed at one base URL: vLLM directly, or nometer.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx

from gateway.meter.shadow import pico
from tests.support.gateway_server import GatewayServer

NODE_DIR = Path(__file__).resolve().parents[1] / "clients" / "node"
BIN = NODE_DIR / "node_modules" / ".bin"
TIMEOUT_S = 300


def require(name: str) -> Path:
    """The CLI's path; a clear failure (never a skip) when ``npm ci`` has not run."""
    path = BIN / name
    if not path.exists():
        raise AssertionError(f"{path} is missing: run `npm ci` in {NODE_DIR} (scripts/test.sh does)")
    return path


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> Run:
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TMPDIR")}
    p = subprocess.run(
        cmd,
        env={**base, **env},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    return Run(p.returncode, p.stdout, p.stderr)


def codex(base_url: str, home: Path, model: str, headers: dict[str, str] | None = None) -> Run:
    """``codex exec --json`` with a custom provider (Responses API) at ``base_url`` (ending in /v1)."""
    home.mkdir(parents=True, exist_ok=True)
    extra = ""
    if headers:
        extra = "http_headers = { " + ", ".join(f'"{k}" = "{v}"' for k, v in headers.items()) + " }\n"
    (home / "config.toml").write_text(
        f'model = "{model}"\nmodel_provider = "local"\n\n'
        f'[model_providers.local]\nname = "local"\nbase_url = "{base_url}"\n'
        f'env_key = "LOCAL_API_KEY"\nwire_api = "responses"\n{extra}'
    )
    env = {"HOME": str(home), "CODEX_HOME": str(home), "LOCAL_API_KEY": "unused"}
    cmd = [str(require("codex")), "exec", "--skip-git-repo-check", "--json", "Say hello."]
    return _run(cmd, env, home)


def claude(base_url: str, home: Path, model: str, headers: dict[str, str] | None = None) -> Run:
    """Claude Code in print mode (``claude -p --output-format json``) with ANTHROPIC_BASE_URL."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": "unused",
        "ANTHROPIC_MODEL": model,
        "ANTHROPIC_SMALL_FAST_MODEL": model,
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "64",  # the agents' vLLM has a 32k context
        "MAX_THINKING_TOKENS": "0",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    if headers:
        env["ANTHROPIC_CUSTOM_HEADERS"] = "\n".join(f"{k}: {v}" for k, v in headers.items())
    cmd = [str(require("claude")), "-p", "Say hello.", "--output-format", "json"]
    return _run(cmd, env, home)


def receipt_totals(gw: GatewayServer, run: str) -> tuple[int, int, dict[str, int], int]:
    """(requests, failed, cloud pico-dollars per reference, local pico-dollars), summed from the
    receipts of the run's requests (a request without one was not metered: it costs nothing)."""
    rows = gw.rows("WHERE run_id = ?", (run,))
    cloud: dict[str, int] = {}
    local = 0
    for row in rows:
        r = httpx.get(gw.url + f"/v1/nometer/receipts/{row['request_id']}")
        if r.status_code == 404:
            continue
        receipt = r.json()
        local += (pico(receipt["local"]["energy_usd"]) or 0) + (
            pico(receipt["local"]["hardware_share_usd"]) or 0
        )
        for ref in receipt["references"]:
            cloud[ref["model"]] = cloud.get(ref["model"], 0) + (pico(ref["cloud_usd"]) or 0)
    return len(rows), sum(r["outcome"] != "ok" for r in rows), cloud, local


def assert_run_matches_receipts(gw: GatewayServer, run: str) -> dict[str, object]:
    """``GET /v1/nometer/runs/{run}`` equals the sum of the run's receipts, exactly."""
    requests, failed, cloud, local = receipt_totals(gw, run)
    totals: dict[str, object] = httpx.get(gw.url + f"/v1/nometer/runs/{run}").json()
    assert (totals["requests"], totals["failed_requests"]) == (requests, failed)
    assert pico(totals["local"]["total_usd"]) == local  # type: ignore[index]
    assert {r["model"]: pico(r["cloud_usd"]) or 0 for r in totals["references"]} == cloud  # type: ignore[attr-defined]
    return totals
