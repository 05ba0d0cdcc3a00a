"""The choice function: prefix affinity, bounded load, queue-gap fallback, ejection, policies."""

from __future__ import annotations

from collections import Counter
from typing import Any

from gateway.backends.backend import Backend
from gateway.backends.balance import PrefixTuning, Ring, least_queue, prefix_choice
from gateway.backends.prefix import PrefixTable
from gateway.backends.routing import Router
from gateway.settings import RoutingSettings


def _fleet(n: int = 4) -> list[Backend]:
    up: Any = object()
    return [Backend(f"b{i}", up, models=frozenset({"m"}), healthy=True) for i in range(n)]


def _router(backends: list[Backend], **routing: Any) -> Router:
    return Router(backends, {}, RoutingSettings(**{"policy": "prefix", **routing}))


def test_a_prefix_sticks_to_the_backend_that_served_it() -> None:
    fleet = _fleet()
    r = _router(fleet)
    first = r.pick("m", keys=[11, 12])
    assert all(r.pick("m", keys=[11, 99 + i]) is first for i in range(20))  # key 0 shared


def test_unknown_prefixes_go_to_the_least_loaded() -> None:
    fleet = _fleet()
    r = _router(fleet)
    homes = Counter(r.pick("m", keys=[k * 7919]).name for k in range(400))
    assert len(homes) == 4 and min(homes.values()) > 40  # idle fleet: ties rotate
    fleet[0].outstanding, fleet[1].outstanding, fleet[3].outstanding = 3, 2, 5
    assert r.pick("m", keys=[10**9]) is fleet[2]


def test_the_ring_places_a_key_alike_for_any_fleet_order() -> None:
    fleet = _fleet()
    a, b = Ring(fleet), Ring(list(reversed(fleet)))
    assert all([x.name for x in a.walk(k)] == [x.name for x in b.walk(k)] for k in (1, 2**31, 12345))
    assert sorted(x.name for x in a.walk(5)) == ["b0", "b1", "b2", "b3"]


def test_bounded_load_spills_a_hot_prefix_in_ring_order() -> None:
    """In-flight requests are never released here: one hot prefix keeps arriving."""
    fleet = _fleet()
    tuning = PrefixTuning(load_factor=1.25, queue_gap=1000)  # the bound alone
    table, ring = PrefixTable(), Ring(fleet)
    order = [b.name for b in ring.walk(42)]
    home = next(b for b in fleet if b.name == order[0])
    table.remember([42], home)
    chosen = []
    for i in range(40):
        b = prefix_choice(fleet, [42], table, ring, tuning, i)
        b.outstanding += 1
        chosen.append(b.name)
    counts = Counter(chosen)
    cap = max(counts.values())
    assert cap <= 1.25 * 40 / 4 + 1  # the bound: nobody carries more than its share
    assert chosen[0] == order[0] and counts[order[0]] == cap  # the home takes its share back
    assert chosen.index(order[1]) < chosen.index(order[2])  # the spill follows the ring


def test_a_long_vllm_queue_breaks_affinity_for_the_shortest_queue() -> None:
    fleet = _fleet()
    r = _router(fleet, prefix={"queue_gap": 4, "queue_ratio": 2})
    home = r.pick("m", keys=[7])
    home.waiting = 20.0
    for b in fleet:
        if b is not home:
            b.waiting = 2.0
    fleet[-1 if fleet[-1] is not home else 0].waiting = 0.0
    away = r.pick("m", keys=[7])
    assert away is not home
    home.waiting = 3.0  # the queue drained: the prefix goes home again
    assert r.pick("m", keys=[7]) is home
    assert r.pick("m", keys=[7, 8]) is home
    home.waiting = 20.0
    assert r.pick("m", keys=[7, 9]) is not home  # a new conversation spills...
    home.waiting = 3.0
    assert r.pick("m", keys=[7, 9]) is not home  # ...and stays where its own prefix was computed
    for b in fleet:
        b.waiting = 50.0
    home.waiting = 90.0  # every queue is long (saturation): within the ratio, affinity holds
    assert r.pick("m", keys=[7, 10]) is home


def test_session_key_wins_over_the_prompt() -> None:
    fleet = _fleet()
    r = _router(fleet)
    tenant = r.pick("m", keys=[1])
    other = next(b for b in fleet if b is not tenant)
    r.table.remember([555], other)  # the session was served there before
    assert r.pick("m", keys=[1, 555]) is other


def test_no_keys_and_other_policies() -> None:
    fleet = _fleet(3)
    fleet[0].waiting, fleet[1].waiting, fleet[2].waiting = 5, 0, 3
    fleet[0].outstanding, fleet[1].outstanding = 2, 2
    assert _router(fleet).pick("m") is fleet[2]  # prefix with nothing to key on: least loaded
    fleet[0].outstanding = fleet[1].outstanding = 0
    assert least_queue(fleet, 0) is fleet[1]
    assert _router(fleet, policy="least_queue").pick("m", keys=[1]) is fleet[1]
    rr = _router(fleet, policy="round_robin")
    assert [rr.pick("m").name for _ in range(6)] == ["b0", "b1", "b2"] * 2
    fleet[2].outstanding = 0
    fleet[0].outstanding = fleet[1].outstanding = 4
    assert _router(fleet, policy="least_loaded").pick("m", keys=[1]) is fleet[2]
    per_model = Router(fleet, {}, RoutingSettings(policies={"m": "round_robin"}))
    assert per_model.policy_of("m") == "round_robin" and per_model.policy_of("x") == "least_loaded"
    assert _router(fleet).wants_keys("m") and not per_model.wants_keys("m")
    assert not _router(fleet[:1]).wants_keys("m")  # one backend: nothing to choose, no keys


def test_ejected_backends_are_skipped_until_their_time_is_up() -> None:
    import time

    fleet = _fleet(2)
    r = _router(fleet, policy="round_robin")
    fleet[0].ejected_until = time.monotonic() + 60
    assert {r.pick("m").name for _ in range(4)} == {"b1"}
    fleet[0].ejected_until = time.monotonic() - 1  # served its time: back in rotation
    assert {r.pick("m").name for _ in range(4)} == {"b0", "b1"}


def test_ejection_never_leaves_a_model_without_backends() -> None:
    import time

    fleet = _fleet(2)
    for b in fleet:
        b.ejected_until = time.monotonic() + 60
    r = _router(fleet)
    assert r.pick("m", keys=[3]) in fleet
