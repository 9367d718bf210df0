"""The README stays true: its test command is CI's, and every flag and variable is documented."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from hopscope.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_test_command() -> None:
    test_command = next(block for block in _bash_blocks(README) if "pytest" in block)
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_readme_has_exactly_two_set_up_commands() -> None:
    set_up = [block for block in _bash_blocks(README) if "python3 -m venv" in block]
    assert len(set_up) == 2


def _flags(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, str]]:
    """(command path, flag) of a parser and of its subcommands, at any depth (``hopscope dlq redrive``)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                found.extend(_flags(command, f"{path} {name}"))
        found.extend((path, flag) for flag in action.option_strings if flag.startswith("--"))
    return [(where, flag) for where, flag in found if flag not in ("--help", "--version")]


def test_every_flag_of_every_command_is_in_the_readme() -> None:
    flags = _flags(build_parser(), "hopscope")
    assert ("hopscope dlq redrive", "--rate") in flags
    for where, flag in flags:
        assert f"`{flag}`" in README, f"{where} {flag} is not documented in README.md"


def test_every_environment_variable_is_in_the_readme() -> None:
    sources = [p for folder in ("cli", "collector", "instrumentation") for p in (ROOT / folder).rglob("*.py")]
    variables = {v for p in sources for v in re.findall(r"\bHOPSCOPE_[A-Z_]+\b", p.read_text())}
    assert variables, "expected at least HOPSCOPE_AUTH_TOKEN"
    for variable in variables:
        assert f"`{variable}`" in README, f"{variable} is not documented in README.md"
