"""Test support: real servers for integration tests (CPU vLLM, a fault-injecting fake upstream)."""
