"""Integration fixtures: real servers on 127.0.0.1.

- ``vllm_chat`` / ``vllm_chat_b`` / ``vllm_embed`` / ``vllm_agent`` (session): real CPU vLLM
  servers (``tests.support.vllm``), started once per session, together, by the first test that
  needs one. Tests that use them, directly or through another fixture, get
  ``@pytest.mark.vllm`` automatically. If vLLM cannot be installed or
  started they ERROR, never skip; ``NOMETER_SKIP_VLLM=1`` skips them (quick local runs only).
- ``fake_upstream`` (function): the fault-injecting fake OpenAI upstream
  (``tests.support.fake_upstream``), shared by the session and reset before each test.
- ``proof_fake`` / ``proof_sqlite`` (session): the ledger-proof tests' own fake upstream and the
  SQLite ledger a real gateway wrote through it (``tests.support.proof``), built once; every test
  works on a copy.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.backends.cpu_vllm import VllmError
from tests.support.fake_upstream import FakeUpstream
from tests.support.proof import build_ledger
from tests.support.vllm import VllmServer
from tests.support.vllm_fleet import SPECS, VllmFleet

SKIP_VLLM = os.environ.get("NOMETER_SKIP_VLLM") == "1"
SKIP_REASON = "NOMETER_SKIP_VLLM=1: real-vLLM tests skipped (CI never sets it)"


def _uses_vllm(item: pytest.Item) -> set[str]:
    return set(SPECS) & set(getattr(item, "fixturenames", ()))


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects, so `-m "not vllm"` sees the marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SKIP_VLLM and os.environ.get("CI") == "true":
        raise pytest.UsageError("NOMETER_SKIP_VLLM=1 is refused in CI: nothing is skipped there")
    for item in items:
        if _uses_vllm(item):
            item.add_marker(pytest.mark.vllm)
            if SKIP_VLLM:
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


# -- real vLLM ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def vllm_fleet() -> Iterator[VllmFleet]:
    fleet = VllmFleet()
    yield fleet
    fleet.stop()


def _server(request: pytest.FixtureRequest, fleet: VllmFleet, name: str) -> VllmServer:
    if SKIP_VLLM:
        pytest.skip(SKIP_REASON)
    wanted = set().union(*(_uses_vllm(item) for item in request.session.items))
    try:
        return fleet.get(name, wanted)
    except VllmError as exc:
        pytest.fail(f"{name}: {exc}\n(NOMETER_SKIP_VLLM=1 skips real-vLLM tests locally)", pytrace=False)


@pytest.fixture(scope="session")
def vllm_chat(request: pytest.FixtureRequest, vllm_fleet: VllmFleet) -> VllmServer:
    """``tiny-llama``: chat and text completions, with cached-token details in usage."""
    return _server(request, vllm_fleet, "vllm_chat")


@pytest.fixture(scope="session")
def vllm_chat_b(request: pytest.FixtureRequest, vllm_fleet: VllmFleet) -> VllmServer:
    """A second ``tiny-llama`` server: two boxes serving one model, for the routing tests."""
    return _server(request, vllm_fleet, "vllm_chat_b")


@pytest.fixture(scope="session")
def vllm_agent(request: pytest.FixtureRequest, vllm_fleet: VllmFleet) -> VllmServer:
    """``tiny-agent``: the chat model with a 32k context, for Claude Code and Codex (see AGENT_ARGS)."""
    return _server(request, vllm_fleet, "vllm_agent")


@pytest.fixture(scope="session")
def vllm_embed(request: pytest.FixtureRequest, vllm_fleet: VllmFleet) -> VllmServer:
    """``tiny-embed``: embeddings (pooling runner) from the same tiny model."""
    return _server(request, vllm_fleet, "vllm_embed")


# -- fake upstream ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def fake_upstream_server() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake_upstream(fake_upstream_server: FakeUpstream) -> FakeUpstream:
    """The session's fake upstream, with its request log cleared and its config at defaults."""
    fake_upstream_server.reset()
    return fake_upstream_server


# -- gateway fixtures (owned by the gateway; add below) ----------------------------------------


@pytest.fixture(scope="session")
def proof_fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture(scope="session")
def proof_sqlite(tmp_path_factory: pytest.TempPathFactory, proof_fake: FakeUpstream) -> Path:
    tmp = tmp_path_factory.mktemp("proof-sqlite")
    build_ledger(tmp, proof_fake, None)
    return tmp
