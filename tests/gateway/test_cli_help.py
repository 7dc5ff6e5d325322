"""`billing --help` explains every command, subcommand and argument: an
operator finds what to type without reading the source."""

from __future__ import annotations

import argparse

from gateway.cli import build_parser


def _missing_help(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> list[str]:
    missing: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                if not helps.get(name):
                    missing.append(" ".join((*path, name)))
                missing += _missing_help(sub, (*path, name))
        elif not action.help or action.help == argparse.SUPPRESS:
            missing.append(" ".join((*path, action.dest)))
    return missing


def test_every_command_subcommand_and_argument_has_help() -> None:
    assert _missing_help(build_parser(), ("billing",)) == []


def test_the_operator_listing_commands_exist() -> None:
    parser = build_parser()
    for argv in (["customers", "list"], ["customers", "get", "cus_1"], ["keys", "list", "cus_1"]):
        assert callable(parser.parse_args(argv).handler), argv
