from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.settings import DEFAULT_PORT, load_settings


def test_defaults_bind_loopback_on_a_free_port() -> None:
    s = load_settings(env={})
    assert s.server.host == "127.0.0.1"
    assert DEFAULT_PORT not in (8000, 4000)
    assert s.ledger.flush_interval_ms <= 100


def test_layers_yaml_then_env_then_cli(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "server: {port: 9000, host: 0.0.0.0}\naliases: {gpt-4.1: qwen}\n"
        "backends: [{url: 'http://a:8000/v1/', api_key_env: KEY}]\n"
    )
    env = {"NOMETER_PORT": "9100", "NOMETER_LEDGER__FLUSH_INTERVAL_MS": "50"}
    s = load_settings(cfg, env=env, overrides={"server": {"host": "127.0.0.2"}})
    assert s.server.port == 9100 and s.server.host == "127.0.0.2"
    assert s.ledger.flush_interval_ms == 50
    assert s.aliases == {"gpt-4.1": "qwen"}
    assert s.backends[0].url == "http://a:8000/v1" and s.backends[0].api_key_env == "KEY"


def test_env_config_path_and_backends(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("routing: {response_model: requested}\n")
    s = load_settings(env={"NOMETER_CONFIG": str(cfg), "NOMETER_BACKENDS": "http://a/v1, http://b/v1"})
    assert s.routing.response_model == "requested"
    assert [b.url for b in s.backends] == ["http://a/v1", "http://b/v1"]


def test_settings_are_frozen_and_strict(tmp_path: Path) -> None:
    s = load_settings(env={})
    with pytest.raises(ValidationError):
        s.server.port = 1
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("server: {prot: 1}\n")
    with pytest.raises(ValidationError):
        load_settings(cfg, env={})


def test_example_config_is_valid() -> None:
    example = Path(__file__).parents[3] / "deploy" / "nometer.example.yaml"
    s = load_settings(example, env={})
    assert s.backends and s.aliases
