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


def _fake_wheel(folder: Path, version: str) -> None:
    """A wheel named like PyTorch's CPU build, with just enough metadata for pip to resolve it."""
    import zipfile

    info = f"torch-{version}.dist-info"
    with zipfile.ZipFile(folder / f"torch-{version}-py3-none-any.whl", "w") as whl:
        whl.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
        whl.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        whl.writestr(f"{info}/RECORD", "")


def test_cpu_torch_comes_from_a_local_wheel_else_from_pytorchs_index(tmp_path: Path) -> None:
    """install.sh takes torch==2.13.0+cpu from wherever pip already finds it, and only otherwise
    adds PyTorch's CPU index (an ordinary machine: PyPI has no +cpu builds). No network: the
    index here is an empty local folder."""
    import os
    import subprocess
    import sys

    pin = next(
        line.split("==", 1)[1]
        for line in (DEPLOY / "vllm-cpu" / "requirements-lock.txt").read_text().splitlines()
        if line.startswith("torch==")
    )
    (tmp_path / "index").mkdir()
    (tmp_path / "wheels").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL=(tmp_path / "index").as_uri(), PYTHON=sys.executable)

    def source(**extra: str) -> str:
        done = subprocess.run(
            ["bash", str(DEPLOY / "vllm-cpu" / "install.sh"), "--which-torch"],
            env={**env, **extra}, capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        return done.stdout.strip()

    assert source() == "https://download.pytorch.org/whl/cpu"
    assert source(TORCH_INDEX_URL="https://mirror.example/cpu") == "https://mirror.example/cpu"
    _fake_wheel(tmp_path / "wheels", pin)
    assert source(TORCH_WHEELS=str(tmp_path / "wheels")) == "pip"
    assert source(PIP_FIND_LINKS=str(tmp_path / "wheels")) == "pip"  # a pip config's folder, as here
