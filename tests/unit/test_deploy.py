"""The shipped deployment files agree with the settings schema and the CLI."""

from __future__ import annotations

from pathlib import Path

import yaml

from gateway.settings import load_settings

DEPLOY = Path(__file__).parents[2] / "deploy"


def test_compose_config_is_valid_settings() -> None:
    s = load_settings(DEPLOY / "compose" / "nometer.yaml", env={})
    assert s.server.host == "0.0.0.0" and s.ledger.path.startswith("/data")
    assert s.auth.mode == "keys"  # off loopback: keys, never open
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    assert set(compose["services"]) == {"vllm", "nometer"}
    assert compose["services"]["nometer"]["environment"]["NOMETER_BACKENDS"].endswith("/v1")


def test_helm_values_config_is_valid_settings() -> None:
    values = yaml.safe_load((DEPLOY / "helm" / "nometer" / "values.yaml").read_text())
    s = load_settings(env={}, overrides=values["config"])
    assert s.backends[0].url == "http://vllm:8000/v1" and s.auth.mode == "keys"
    chart = yaml.safe_load((DEPLOY / "helm" / "nometer" / "Chart.yaml").read_text())
    assert chart["name"] == "nometer"


def test_systemd_unit_runs_the_cli() -> None:
    unit = (DEPLOY / "systemd" / "nometer.service").read_text()
    assert "ExecStart=/opt/nometer/bin/nometer serve" in unit and "KillSignal=SIGTERM" in unit


def test_the_open_files_limit_is_raised_where_a_file_can_say_so() -> None:
    unit = (DEPLOY / "systemd" / "nometer.service").read_text()
    assert "LimitNOFILE=65536" in unit  # systemd's default soft limit is 1024
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    assert compose["services"]["nometer"]["ulimits"]["nofile"] == {"soft": 65536, "hard": 65536}
