"""Node clients and agent CLIs through nometer and straight to vLLM (real CPU vLLM).

- the OpenAI Node SDK (``tests/clients/node/openai_client.mjs``): the same results both ways;
- Codex CLI (``codex exec`` with a custom Responses provider) and Claude Code (``claude -p`` with
  ``ANTHROPIC_BASE_URL``): unchanged, the same outcome both ways, every request metered, and the
  run (``X-Nometer-Run`` through each CLI's own custom-header setting) priced exactly as the sum
  of its receipts; Claude Code asking for claude-sonnet-4-5 through an alias is priced as Claude
  first, its cache reads at the cache-read rate.

The agents use ``vllm_agent`` (32k context): their system prompts and tool lists are 6-12k tokens.
Sampling is theirs (not greedy), so texts are not compared; outcomes, event shapes and token
counts are.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.support import agents
from tests.support.gateway_server import GatewayServer, gateway_settings
from tests.support.relay_compare import coalesce
from tests.support.vllm import AGENT_NAME, VllmServer


def node_results(base_url: str, model: str) -> list[Any]:
    p = subprocess.run(
        ["node", str(agents.NODE_DIR / "openai_client.mjs"), base_url, model],
        capture_output=True,
        text=True,
        timeout=agents.TIMEOUT_S,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    return [orjson.loads(line) for line in p.stdout.splitlines()]


def test_openai_node_sdk(vllm_chat: VllmServer, tmp_path: Path) -> None:
    agents.require("codex")  # node_modules installed (the SDK itself is imported by the script)
    s = gateway_settings(tmp_path, [vllm_chat.base_url], timeouts={"connect_s": 2, "read_s": 120})
    direct = node_results(vllm_chat.base_url, "tiny-llama")
    with GatewayServer(s) as gw:
        through = node_results(gw.base_url, "tiny-llama")
        assert [r["name"] for r in through] == [r["name"] for r in direct]
        for a, b in zip(direct, through, strict=True):
            if b != a and a["name"].endswith(("stream", "stream.usage")):
                # how many tokens one delta carries varies with load, straight to vLLM too
                # (tests/support/relay_compare.py): the same events with adjacent text merged
                assert coalesce(b["value"]) == coalesce(a["value"]), a["name"]
            else:
                assert b == a, a["name"]
        rows = gw.wait_rows(7)
    assert {r["endpoint"] for r in rows} >= {"/v1/chat/completions", "/v1/responses"}
    assert all(r["outcome"] == "ok" and r["status"] == 200 for r in rows)


@pytest.fixture(scope="module")
def agent_gw(vllm_agent: VllmServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    s = gateway_settings(
        tmp_path_factory.mktemp("agents"),
        [vllm_agent.base_url],
        aliases={"claude-sonnet-4-5": AGENT_NAME, "gpt-5-codex": AGENT_NAME},
        timeouts={"connect_s": 2, "read_s": 240},
    )
    with GatewayServer(s) as g:
        yield g


def _codex_events(run: agents.Run) -> list[dict[str, Any]]:
    assert run.returncode == 0, run.stderr[-2000:]
    return [orjson.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


def test_codex_exec(agent_gw: GatewayServer, vllm_agent: VllmServer, tmp_path: Path) -> None:
    direct = _codex_events(agents.codex(vllm_agent.base_url, tmp_path / "direct", AGENT_NAME))
    through = _codex_events(
        agents.codex(agent_gw.base_url, tmp_path / "through", AGENT_NAME, {"X-Nometer-Run": "codex-1"})
    )
    shape = [(e["type"], e.get("item", {}).get("type")) for e in through]
    assert shape == [(e["type"], e.get("item", {}).get("type")) for e in direct]
    assert shape[-1] == ("turn.completed", None)
    usage = through[-1]["usage"]
    assert usage["output_tokens"] == direct[-1]["usage"]["output_tokens"] > 0
    assert usage["input_tokens"] == direct[-1]["usage"]["input_tokens"] > 1000
    rows = agent_gw.wait_rows(1, "WHERE run_id = 'codex-1'")
    assert rows and all(r["endpoint"] == "/v1/responses" and r["outcome"] == "ok" for r in rows)
    assert sum(r["prompt_tokens"] for r in rows) == usage["input_tokens"]
    assert all(r["price_table_id"] is not None for r in rows)
    totals = agents.assert_run_matches_receipts(agent_gw, "codex-1")
    assert totals["failed_requests"] == 0
    aliased = _codex_events(
        agents.codex(agent_gw.base_url, tmp_path / "aliased", "gpt-5-codex", {"X-Nometer-Run": "codex-2"})
    )
    assert aliased[-1]["type"] == "turn.completed"
    first = agents.assert_run_matches_receipts(agent_gw, "codex-2")["references"]
    assert first[0]["model"] == "gpt-5-codex"  # type: ignore[index]


def _claude_result(run: agents.Run) -> dict[str, Any]:
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert lines, (run.returncode, run.stdout[-2000:], run.stderr[-2000:])
    result: dict[str, Any] = orjson.loads(lines[-1])
    return result


def test_claude_code_print_mode(agent_gw: GatewayServer, vllm_agent: VllmServer, tmp_path: Path) -> None:
    keys = ("type", "subtype", "is_error", "num_turns", "terminal_reason", "api_error", "api_error_status")
    direct = agents.claude(vllm_agent.url, tmp_path / "direct", AGENT_NAME)
    through = agents.claude(agent_gw.url, tmp_path / "through", AGENT_NAME)
    a, b = _claude_result(direct), _claude_result(through)
    assert through.returncode == direct.returncode
    assert {k: b.get(k) for k in keys} == {k: a.get(k) for k in keys}
    assert b["usage"]["output_tokens"] == a["usage"]["output_tokens"] > 0
    # asked for claude-sonnet-4-5 through an alias: every turn is priced as Claude first
    run = agents.claude(
        agent_gw.url, tmp_path / "aliased", "claude-sonnet-4-5", {"X-Nometer-Run": "claude-1"}
    )
    result = _claude_result(run)
    rows = agent_gw.wait_rows(int(result["num_turns"]), "WHERE run_id = 'claude-1'")
    assert rows and all(r["endpoint"] == "/v1/messages" and r["outcome"] == "ok" for r in rows)
    assert all(r["stream"] == 1 and r["price_table_id"] is not None for r in rows)
    cached = [r for r in rows if r["cached_tokens"]]
    assert cached, "Claude Code resends its system prompt: later turns read vLLM's prefix cache"
    receipt = httpx.get(agent_gw.url + f"/v1/nometer/receipts/{cached[-1]['request_id']}").json()
    first = receipt["references"][0]
    terms = {t["kind"]: t for t in first["terms"]}
    price = agent_gw.runtime.meter.table.models[first["price_key"]]
    assert first["model"] == "claude-sonnet-4-5" and first["price_key"] == "claude-sonnet-4-5"
    assert terms["cache_read"]["tokens"] > 0 and Decimal(terms["cache_read"]["rate"]) == price.cache_read
    totals = agents.assert_run_matches_receipts(agent_gw, "claude-1")
    assert totals["requests"] == len(rows)
