"""Team policy and fallback decisions: pure functions, no sockets."""

from __future__ import annotations

from typing import Any

from gateway.backends.backend import Backend
from gateway.policy.fallback import (
    all_overloaded,
    candidates,
    context_limit,
    decide,
    requested_max_tokens,
    too_long,
)
from gateway.policy.rules import PolicyBook, TeamRules
from gateway.settings import OverloadSettings, TeamPolicy, load_settings


def rules(**policy: Any) -> TeamRules:
    return TeamRules.build("t", TeamPolicy.model_validate(policy))


def test_default_policy_is_plain() -> None:
    book = PolicyBook(load_settings(env={}))
    assert book.plain and not book.uses_hosted and not book.uses_metrics
    assert book.rules(None).plain and book.rules("any-team").plain
    assert book.rules("any-team").team == "any-team"


def test_allow_list_with_patterns() -> None:
    r = rules(models=["gpt-4.1", "qwen-*"])
    assert not r.plain
    assert (
        r.allows("gpt-4.1") and r.allows("qwen-7b") and not r.allows("llama") and not r.allows("gpt-4.1-mini")
    )
    assert rules().allows("anything")


def test_teams_get_their_own_policy_and_others_the_default() -> None:
    s = load_settings(env={}, overrides={"policy": {"models": ["a"]}, "teams": {"x": {"models": ["b"]}}})
    book = PolicyBook(s)
    assert book.rules("x").allows("b") and not book.rules("x").allows("a")  # no merging
    assert book.rules("y").allows("a") and book.rules(None).allows("a")
    assert book.rules("y") is book.rules("y")  # compiled once


def test_uses_hosted_and_metrics() -> None:
    fb = {"fallback": {"models": ["openai/gpt-4.1-mini"], "triggers": ["overloaded"]}}
    s = load_settings(env={}, overrides={"teams": {"x": fb}})
    assert PolicyBook(s).uses_hosted and not PolicyBook(s).uses_metrics  # no threshold set
    s = load_settings(env={}, overrides={"teams": {"x": fb}, "hosted": {"overload": {"max_waiting": 4}}})
    assert PolicyBook(s).uses_metrics
    s = load_settings(env={}, overrides={"teams": {"x": {**fb, "local_only": True}}})
    book = PolicyBook(s)
    assert not book.uses_hosted and any("local_only" in w for w in book.warnings())


def test_decide() -> None:
    fb = {"models": ["openai/gpt-4.1-mini"], "triggers": ["unavailable", "model_missing"]}
    assert decide(rules(fallback=fb), "unavailable") == "hosted"
    assert decide(rules(fallback=fb), "overloaded") == "no_fallback"  # not a trigger here
    assert decide(rules(fallback=fb, local_only=True), "model_missing") == "local_only"
    assert decide(rules(), "unavailable") == "no_fallback"
    assert decide(rules(local_only=True), "unavailable") == "no_fallback"  # nothing would have left anyway
    assert rules(fallback={"models": ["m"]}).policy.fallback.triggers == (
        "unavailable",
        "overloaded",
        "context_too_long",
    )


def test_candidates_put_the_requested_model_first() -> None:
    r = rules(fallback={"models": ["anthropic/claude-haiku-4-5", "openai/gpt-4.1", "openai/gpt-4.1-mini"]})
    assert candidates(r, "gpt-4.1") == ("openai/gpt-4.1", "anthropic/claude-haiku-4-5", "openai/gpt-4.1-mini")
    assert candidates(r, "local-model")[0] == "anthropic/claude-haiku-4-5"


def _b(
    healthy: bool = True,
    waiting: float | None = None,
    kv: float | None = None,
    lens: dict[str, int] | None = None,
) -> Backend:
    up: Any = object()
    return Backend("b", up, healthy=healthy, waiting=waiting, kv_cache_usage=kv, max_model_len=lens or {})


def test_overload_needs_every_healthy_backend_over_a_threshold() -> None:
    o = OverloadSettings(max_waiting=4, max_kv_cache_usage=0.9)
    assert all_overloaded([_b(waiting=5)], o)
    assert all_overloaded([_b(kv=0.95)], o)
    assert not all_overloaded([_b(waiting=5), _b(waiting=1)], o)
    assert all_overloaded([_b(waiting=5), _b(healthy=False)], o)
    assert not all_overloaded([_b(waiting=None, kv=None)], o)  # unknown is not overloaded
    assert not all_overloaded([], o)


def test_context() -> None:
    backends = [_b(lens={"m": 4096}), _b(lens={"m": 2048}), _b()]
    assert context_limit(backends, "m") == 2048 and context_limit(backends, "x") is None
    assert too_long(2000, 100, 2048) and not too_long(2000, None, 2048) and not too_long(10**6, 1, None)
    assert requested_max_tokens({"max_tokens": 5}) == 5
    assert requested_max_tokens({"max_completion_tokens": 7, "max_tokens": 5}) == 7
    assert requested_max_tokens({"max_tokens": True}) is None and requested_max_tokens({}) is None


def test_the_documented_config_is_valid(tmp_path: Any) -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[4] / "docs" / "policy.md").read_text()
    block = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(block)
    s = load_settings(cfg, env={})
    book = PolicyBook(s)
    assert book.rules("legal").policy.local_only and book.uses_hosted and book.uses_metrics
    assert book.rules("research").falls_back_on("model_missing")
    assert s.hosted.models["azure/my-gpt4o-deployment"].price_as == "gpt-4o"
