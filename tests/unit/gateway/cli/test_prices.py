"""`nometer prices update --from litellm` installs the price map shipped inside litellm."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.cli.meter import LITELLM_PRICES


def test_from_litellm_installs_the_installed_packages_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.find_spec("litellm")
    assert spec is not None and spec.origin is not None  # a test dependency
    shipped = Path(spec.origin).parent / LITELLM_PRICES
    db = str(tmp_path / "ledger.db")
    assert main(["prices", "update", "--from", "litellm", "--db", db]) == 0
    out = capsys.readouterr().out
    assert f"into {tmp_path / 'prices'}" in out
    (installed,) = (tmp_path / "prices").glob("*.json")
    assert installed.read_bytes() == shipped.read_bytes()
    assert main(["prices", "show", "--db", db]) == 0
    assert installed.stem in capsys.readouterr().out


def test_without_litellm_it_says_where_the_file_comes_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match=r"pip install litellm.*github.com/BerriAI/litellm"):
        main(["prices", "update", "--from", "litellm", "--db", str(tmp_path / "l.db")])
    with pytest.raises(SystemExit, match=r"github\.com/BerriAI/litellm"):
        main(["prices", "update", "--db", str(tmp_path / "l.db")])
