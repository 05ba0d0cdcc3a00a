"""`nometer serve`'s settings: flags over config, --alias, --db, and --demo's decision on the
merged settings (the CPU vLLM install and the port probe are replaced: unit tests open no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.backends import cpu_vllm, listeners
from gateway.cli import demo, parser
from gateway.cli.options import Refusal
from gateway.cli.serve import prepare
from gateway.settings import Settings


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for var in ("NOMETER_CONFIG", "NOMETER_BACKENDS", "NOMETER_DB"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setattr(demo, "has_gpu", lambda: False)
    return tmp_path


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """The CPU vLLM venv and model as already built (the real build takes minutes)."""
    calls: list[str] = []

    def venv() -> Path:
        calls.append("venv")
        return tmp_path / "venv" / "bin" / "python"

    def model(python: Path | None = None) -> Path:
        calls.append("model")
        return tmp_path / "model"

    monkeypatch.setattr(cpu_vllm, "ensure_venv", venv)
    monkeypatch.setattr(cpu_vllm, "ensure_model", model)
    return calls


def settings(*argv: str) -> Settings:
    return prepare(parser().parse_args(["serve", *argv]))


def test_flags_override_the_config(no_env: Path) -> None:
    cfg = no_env / "c.yaml"
    cfg.write_text("aliases: {gpt-4o: a}\nbackends: [{url: 'http://127.0.0.1:9/v1'}]\n")
    s = settings("--config", str(cfg), "--alias", "gpt-4.1=b", "--port", "7001", "--log-format", "json")
    assert s.aliases == {"gpt-4o": "a", "gpt-4.1": "b"}
    assert s.server.port == 7001 and s.server.log_format == "json"
    assert settings("--db", "postgresql://u@h/db").ledger.url == "postgresql://u@h/db"
    assert settings("--db", str(no_env / "x.db")).ledger.path == str(no_env / "x.db")


def test_the_ledger_defaults_to_the_per_user_data_dir(no_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings().ledger.path == str(no_env / "data" / "nometer" / "ledger.db")
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")  # the XDG rule: only absolute paths count
    assert settings().ledger.path == str(Path.home() / ".local" / "share" / "nometer" / "ledger.db")
    monkeypatch.setenv("NOMETER_DB", str(no_env / "env.db"))
    assert settings().ledger.path == str(no_env / "env.db")


def test_demo_with_no_backend_serves_the_readme_aliases(
    no_env: Path, built: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listeners, "port_free", lambda port, host="127.0.0.1": True)
    s = settings("--demo")
    assert built == ["venv", "model"]
    (m,) = s.managed
    assert m.served_name == "tiny-llama" and m.port == 8011 and m.model == str(no_env / "model")
    assert m.args == cpu_vllm.SERVE_ARGS
    assert s.aliases == {"gpt-4.1": "tiny-llama", "gpt-4.1-mini": "tiny-llama"}


def test_demo_keeps_a_config_without_backends_and_its_aliases(
    no_env: Path, built: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listeners, "port_free", lambda port, host="127.0.0.1": True)
    cfg = no_env / "c.yaml"
    cfg.write_text("aliases: {gpt-4.1: mine}\nteams: {research: {local_only: true}}\n")
    s = settings("--config", str(cfg), "--demo")
    assert s.managed and "research" in s.teams  # --config no longer drops the demo vLLM
    assert s.aliases == {"gpt-4.1": "mine", "gpt-4.1-mini": "tiny-llama"}  # the config's alias wins


def test_demo_steps_aside_for_configured_backends(
    no_env: Path, built: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    s = settings("--demo", "--backend", "http://127.0.0.1:9/v1")
    assert not s.managed and built == []
    assert "no CPU demo, backends are configured: http://127.0.0.1:9/v1" in capsys.readouterr().err


def test_demo_takes_another_port_when_8011_is_taken(
    no_env: Path, built: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listeners, "port_free", lambda port, host="127.0.0.1": port != 8011)
    monkeypatch.setattr(listeners, "who_holds", lambda port: "pid 1 (init)")
    monkeypatch.setattr(demo, "_os_port", lambda: 45678)
    (m,) = settings("--demo").managed
    assert m.port == 45678


def test_demo_refuses_on_a_gpu_machine(
    no_env: Path, built: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo, "has_gpu", lambda: True)
    with pytest.raises(Refusal, match="a GPU is present"):
        settings("--demo")
    assert built == []


def test_a_taken_managed_port_refuses_to_start(no_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listeners, "port_free", lambda port, host="127.0.0.1": port != 8011)
    monkeypatch.setattr(listeners, "who_holds", lambda port: "pid 42 (python3 -m http.server 8011)")
    with pytest.raises(Refusal, match=r"port 8011 .* in use by pid 42 \(python3 -m http.server 8011\)"):
        settings("--managed-model", "/models/x")
    assert settings("--managed-model", "/models/x", "--managed-port", "8012").managed[0].port == 8012


def test_bad_configuration_is_a_refusal_not_a_traceback(no_env: Path) -> None:
    cfg = no_env / "bad.yaml"
    cfg.write_text("server: {prot: 1}\n")
    with pytest.raises(Refusal, match="bad configuration") as exc:
        settings("--config", str(cfg))
    assert exc.value.code == 2
