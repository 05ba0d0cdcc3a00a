from __future__ import annotations

from gateway.ledger import runs


def test_queries_filter_by_run_time_and_team() -> None:
    (events, shadows), params = runs.queries("$", run_id="r", since=10.0, team="t")
    assert "e.run_id = $1" in events and "e.ts >= $2" in events and "e.team = $3" in shadows
    assert params == ["r", 10.0, "t"]
    (events, _), params = runs.queries("?")
    assert "e.run_id IS NOT NULL" in events and params == []


def test_build_turns_pico_sums_into_exact_dollars() -> None:
    ev = {
        "run_id": "r",
        "requests": 3,
        "failed_requests": 1,
        "sessions": 1,
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "cached_tokens": 64,
        "estimated_usage": 0,
        "metered_requests": 2,
        "energy_pusd": 1_500_000,
        "hardware_pusd": 2_000_001,
        "hosted_pusd": 0,
        "first_ts": 1.0,
        "last_ts": 2.0,
    }
    sh = {
        "run_id": "r",
        "ref_model": "claude-sonnet-4-5",
        "ref_index": 0,
        "requests": 2,
        "unpriced": 0,
        "input_tokens": 110,
        "cached_tokens": 70,
        "cache_write_tokens": 0,
        "output_tokens": 22,
        "cloud_pusd": 123_456_789,
        "savings_pusd": 119_956_788,
    }
    [run] = runs.build([ev], [sh])
    assert run["local"] == {
        "energy_usd": "0.0000015",
        "hardware_share_usd": "0.000002000001",
        "total_usd": "0.000003500001",
    }
    assert run["references"][0]["cloud_usd"] == "0.000123456789" and run["failed_requests"] == 1
    assert run["tokens"]["total"] == 120
