from __future__ import annotations

from typing import Any

import pytest

from gateway.backends.backend import Backend
from gateway.backends.routing import Router
from gateway.errors import ModelNotFound, NoHealthyBackend


def _b(name: str, models: set[str], healthy: bool = True, outstanding: int = 0) -> Backend:
    up: Any = object()
    return Backend(name=name, upstream=up, models=frozenset(models), healthy=healthy, outstanding=outstanding)


def test_alias_resolves_to_served_model() -> None:
    r = Router([_b("a", {"qwen"})], {"gpt-4.1": "qwen"})
    route = r.resolve("gpt-4.1")
    assert (route.requested, route.served, route.alias) == ("gpt-4.1", "qwen", True)
    assert r.resolve("qwen").alias is False


def test_unknown_model_names_what_exists() -> None:
    r = Router([_b("a", {"qwen"})], {"gpt-4.1": "qwen", "dangling": "nothing"})
    with pytest.raises(ModelNotFound) as exc:
        r.resolve("llama")
    assert (
        "gpt-4.1" in exc.value.message and "qwen" in exc.value.message and "dangling" not in exc.value.message
    )
    with pytest.raises(ModelNotFound):
        r.resolve("dangling")


def test_least_outstanding_wins_and_unhealthy_is_skipped() -> None:
    busy, idle, down = (
        _b("busy", {"m"}, outstanding=5),
        _b("idle", {"m"}, outstanding=1),
        _b("down", {"m"}, False),
    )
    r = Router([busy, idle, down], {})
    assert all(r.pick("m") is idle for _ in range(10))
    assert r.pick("m", {idle}) is busy


def test_ties_rotate() -> None:
    a, b = _b("a", {"m"}), _b("b", {"m"})
    r = Router([a, b], {})
    assert {r.pick("m").name for _ in range(4)} == {"a", "b"}


def test_no_healthy_backend_is_503_with_retry_after() -> None:
    r = Router([_b("a", {"m"}, healthy=False)], {})
    with pytest.raises(NoHealthyBackend) as exc:
        r.pick("m")
    assert exc.value.status == 503 and exc.value.headers["retry-after"]


def test_rebuild_after_discovery() -> None:
    b = _b("a", set())
    r = Router([b], {})
    with pytest.raises(ModelNotFound):
        r.resolve("m")
    b.models = frozenset({"m"})
    r.rebuild()
    assert r.resolve("m").served == "m"
    assert r.model_names() == ["m"]
