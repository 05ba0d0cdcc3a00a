from __future__ import annotations

import time
from typing import Any

import pytest

from gateway.backends.backend import Backend
from gateway.backends.energy import EnergySampler


def _b(name: str) -> Backend:
    up: Any = object()
    return Backend(name=name, upstream=up, models=frozenset({"m"}), healthy=True)


def test_power_is_split_by_requests_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    perf = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: perf[0])
    energy = [0.0]
    a, b = _b("a"), _b("b")
    s = EnergySampler([a, b], lambda: energy[0])
    for x in (a, b):
        x.power_w = 0.0
    s.sample()
    r1 = a.acquire()  # three requests: two on a, one on b
    r2 = a.acquire()
    r3 = b.acquire()
    clock[0], energy[0] = 101.0, 300.0  # 300 W over the last second
    assert s.sample() == 300.0
    assert (a.power_w, b.power_w) == (200.0, 100.0)
    perf[0] = 2.0  # two seconds at 300 W shared by three requests: 200 J each
    end1 = a.release()
    end2 = a.release()
    end3 = b.release()
    assert [round(e[1] - r[1], 6) for e, r in ((end1, r1), (end2, r2), (end3, r3))] == [200.0, 200.0, 200.0]
    assert [round(e[0] - r[0], 6) for e, r in ((end1, r1), (end2, r2), (end3, r3))] == [1.0, 1.0, 2.0]


def test_busy_share_without_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    perf = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: perf[0])
    a = _b("a")
    s1 = a.acquire()
    perf[0] = 1.0
    s2 = a.acquire()  # overlaps the second half
    perf[0] = 3.0
    e1 = a.release()
    perf[0] = 4.0
    e2 = a.release()
    # request 1: 1 s alone + 2 s shared (1 s); request 2: 2 s shared (1 s) + 1 s alone
    assert (e1[0] - s1[0], e2[0] - s2[0]) == (2.0, 2.0)
    assert a.power_w is None and e1[1] == 0.0  # nothing measured
