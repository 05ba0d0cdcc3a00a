"""`nometer --help`: every flag of every command says what it does and what its default is."""

from __future__ import annotations

import argparse

import pytest

from gateway.cli import parser
from gateway.cli.options import DB_HELP


def commands(
    p: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[str, argparse.ArgumentParser]]:
    out = [(" ".join(path) or "nometer", p)]
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += commands(sub, (*path, name))
    return out


ALL = commands(parser())


def test_every_command_is_covered() -> None:
    names = {name for name, _ in ALL}
    assert {"serve", "usage", "report", "verify", "prices", "keys create", "keys rotate"} <= names


@pytest.mark.parametrize(("name", "p"), ALL, ids=[n for n, _ in ALL])
def test_every_flag_has_help_and_a_stated_default(name: str, p: argparse.ArgumentParser) -> None:
    text = p.format_help()
    for action in p._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        assert action.help, f"{name} {action.dest}: no help"
        if action.required or action.nargs == 0 or (not action.option_strings and action.nargs is None):
            continue  # required, a flag (off unless given), or a positional that must be given
        rendered = p._get_formatter()._expand_help(action)
        assert "default" in rendered or "required" in rendered, f"{name} {action.option_strings}: no default"
    assert "(default: %(default)s)" not in text


def test_db_is_described_one_way_everywhere() -> None:
    seen = 0
    for name, p in ALL:
        for action in p._actions:
            if "--db" in action.option_strings:
                seen += 1
                assert action.help == DB_HELP, name
                assert action.metavar == "PATH|URL", name
    assert seen >= 9  # serve, usage, report, verify, prices and the four keys commands
    assert "~/.local/share/nometer/ledger.db" in DB_HELP and "postgresql://" in DB_HELP


def test_alias_flag_parses_name_equals_model() -> None:
    args = parser().parse_args(["serve", "--alias", "gpt-4.1=qwen3-32b", "--alias", " o3 = local "])
    assert args.alias == [("gpt-4.1", "qwen3-32b"), ("o3", "local")]
    with pytest.raises(SystemExit):
        parser().parse_args(["serve", "--alias", "gpt-4.1"])
