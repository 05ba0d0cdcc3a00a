from __future__ import annotations

from typing import Any

from gateway.backends.backend import Backend
from gateway.policy.fallback import all_overloaded, is_overloaded
from gateway.settings import OverloadSettings


def _b(name: str, waiting: float | None, healthy: bool = True) -> Backend:
    up: Any = object()
    return Backend(name, up, healthy=healthy, waiting=waiting)


def test_a_queue_far_longer_than_the_shortest_is_overload() -> None:
    gap = OverloadSettings(max_queue_gap=10)
    short, long_, down = _b("a", 2), _b("b", 13), _b("c", 0, healthy=False)
    fleet = [short, long_, down]
    assert is_overloaded(long_, gap, shortest=2) and not is_overloaded(short, gap, shortest=2)
    assert not is_overloaded(long_, OverloadSettings(), shortest=2)  # no threshold set: never
    assert not all_overloaded(fleet, gap)  # the shortest queue is never far longer than itself
    assert all_overloaded(fleet, gap, pinned=long_)  # a request that must go there: overloaded
    assert not all_overloaded(fleet, gap, pinned=short)
    assert not all_overloaded(fleet, gap, pinned=down)  # unhealthy pin: judged like any request
    assert not all_overloaded([_b("x", None), _b("y", None)], gap)  # no /metrics: unknown


def test_absolute_thresholds_still_need_every_backend() -> None:
    limit = OverloadSettings(max_waiting=5)
    fleet = [_b("a", 6), _b("b", 7)]
    assert all_overloaded(fleet, limit)
    fleet.append(_b("c", 1))
    assert not all_overloaded(fleet, limit)
    assert all_overloaded(fleet, limit, pinned=fleet[0])
