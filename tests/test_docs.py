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


def test_every_flag_of_every_command_is_in_the_readme() -> None:
    parser = build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in subcommands.choices.items():
        for action in command._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert f"`{flag}`" in README, f"hopscope {name} {flag} is not documented in README.md"


def test_every_environment_variable_is_in_the_readme() -> None:
    sources = [p for folder in ("cli", "collector", "instrumentation") for p in (ROOT / folder).rglob("*.py")]
    variables = {v for p in sources for v in re.findall(r"\bHOPSCOPE_[A-Z_]+\b", p.read_text())}
    assert variables, "expected at least HOPSCOPE_AUTH_TOKEN"
    for variable in variables:
        assert f"`{variable}`" in README, f"{variable} is not documented in README.md"
