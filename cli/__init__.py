"""The ``hopscope`` command. Imports only the standard library until a subcommand runs."""

from hopscope.cli.main import main

__all__ = ["main"]
