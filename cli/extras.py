"""Tell a user which extra to install instead of showing an ImportError traceback."""

from __future__ import annotations

import importlib.util


class MissingExtraError(SystemExit):
    """Exits with one line that names the extra to install."""

    def __init__(self, command: str, extra: str, module: str) -> None:
        super().__init__(
            f"hopscope {command} needs the '{extra}' extra (missing module {module!r}): "
            f"pip install 'hopscope[{extra}]'"
        )


def require_extra(command: str, extra: str, modules: tuple[str, ...]) -> None:
    """Fail before any import when one of ``modules`` is not installed."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(command, extra, module)
