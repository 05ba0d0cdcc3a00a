from __future__ import annotations

from gateway.backends.pool import parse_vllm_load

VLLM = """# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="tiny"} 3.0
vllm:num_requests_waiting{engine="1",model_name="tiny"} 1.0
vllm:num_requests_running{engine="0",model_name="tiny"} 8.0
vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="tiny"} 0.75
"""


def test_vllm_load_from_metrics() -> None:
    assert parse_vllm_load(VLLM) == (4.0, 0.75)
    assert parse_vllm_load("vllm:gpu_cache_usage_perc 0.5\n") == (None, 0.5)  # vLLM before 0.10
    assert parse_vllm_load("# nothing here\n") == (None, None)
