"""Prefix routing against two REAL vLLM servers (CPU build, tiny model): vLLM's own prefix-cache
hit counter (``vllm:prefix_cache_hits_total``) must rise more when nometer routes by prefix than
when it routes round-robin, for the same shape of traffic: three tenants, each with its own long
system prompt, four questions each, one after another."""

from __future__ import annotations

from pathlib import Path

import httpx

from gateway.backends.scrape import parse_vllm_metrics
from tests.support.gateway_server import GatewayServer, gateway_settings
from tests.support.vllm import CHAT_NAME, VllmServer


def _counters(servers: list[VllmServer]) -> tuple[float, float]:
    queries = hits = 0.0
    for s in servers:
        load = parse_vllm_metrics(httpx.get(f"{s.url}/metrics", timeout=10).text)
        assert load.prefix_queries is not None and load.prefix_hits is not None, (
            "vLLM exports no prefix counters"
        )
        queries += load.prefix_queries
        hits += load.prefix_hits
    return queries, hits


def _traffic(
    tmp_path: Path, servers: list[VllmServer], policy: str, tag: str
) -> tuple[float, float, set[int]]:
    """(prompt tokens looked up, of which cached, how many backends each tenant saw) over 12
    requests; ``tag`` makes the prompts new to both servers' caches."""
    s = gateway_settings(
        tmp_path / policy, [v.base_url for v in servers], routing={"policy": policy}, timeouts={"read_s": 120}
    )
    before = _counters(servers)
    with GatewayServer(s) as g, httpx.Client(base_url=g.base_url, timeout=120) as c:
        for i in range(4):
            for tenant in range(3):
                system = f"{tag} tenant {tenant}: " + " ".join(f"rule {n} of {tag}." for n in range(150))
                body = {
                    "model": CHAT_NAME,
                    "messages": [{"role": "system", "content": system}, {"role": "user", "content": f"q{i}"}],
                    "max_tokens": 2,
                    "temperature": 0,
                }
                r = c.post("/chat/completions", json=body, headers={"x-request-id": f"{tag}-{tenant}-{i}"})
                assert r.status_code == 200, r.text
        rows = g.wait_rows(12, timeout=60)  # the meter process may be slow to start on a busy box
        assert len(rows) == 12
    after = _counters(servers)
    spread = {
        len({r["backend"] for r in rows if r["request_id"].startswith(f"{tag}-{t}-")}) for t in range(3)
    }
    return after[0] - before[0], after[1] - before[1], spread


def test_prefix_routing_raises_vllms_own_cache_hits(
    tmp_path: Path, vllm_chat: VllmServer, vllm_chat_b: VllmServer
) -> None:
    servers = [vllm_chat, vllm_chat_b]
    rr_queries, rr_hits, rr_spread = _traffic(tmp_path, servers, "round_robin", "alpha")
    px_queries, px_hits, px_spread = _traffic(tmp_path, servers, "prefix", "bravo")
    assert rr_spread == {2} and px_spread == {1}  # round robin puts every tenant on both boxes
    assert rr_queries > 0 and px_queries > 0
    assert px_hits > rr_hits, (px_hits, rr_hits)
    assert px_hits / px_queries > rr_hits / rr_queries
