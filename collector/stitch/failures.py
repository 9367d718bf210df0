"""Failures of a background task, each distinct one logged once with its traceback: never a spinning log.

The writer thread (storing, stitching, retention), the forwarder's threads and the SQS poller retry what
fails, some of them many times a second; logging every try would bury the one line that matters. Here,
in the lowest room that logs (beside ``guard``'s once-logged skips), because ``ingest/`` and ``aws/`` both
use it and, as siblings, never import each other.
"""

from __future__ import annotations

import logging


def describe(error: BaseException) -> str:
    """``"OperationalError: database or disk is full"``: what tells two failures apart."""
    return f"{type(error).__name__}: {error}"


class Failures:
    """One background task's failures: each distinct one logged once with its traceback, and a backoff.

    A failure is the same as the one last logged when its ``kind`` is (by default its exception's type
    and text): while it persists it is not logged again. The next success logs one line (when given one)
    and forgets it, so the same failure coming back later is logged again. The backoff doubles from 1 s
    to a minute while the task keeps failing, for loops that would otherwise retry at once.
    """

    FIRST_BACKOFF_SECONDS = 1.0
    MAX_BACKOFF_SECONDS = 60.0

    def __init__(self, logger: logging.Logger, level: int = logging.ERROR) -> None:
        self._logger = logger
        self._level = level
        self.current: str | None = None  # the failure now (see describe), until a success
        self.backoff = 0.0
        self._logged: str | None = None

    def failed(self, error: BaseException | None, msg: str, *args: object, kind: str | None = None) -> bool:
        """Note a failure; log ``msg % args`` with ``error``'s traceback unless it is the one last logged.

        ``error`` is None for a failure without an exception (an HTTP status); then ``kind`` is needed.
        Returns whether it was logged.
        """
        self.backoff = min(max(self.backoff * 2, self.FIRST_BACKOFF_SECONDS), self.MAX_BACKOFF_SECONDS)
        self.current = describe(error) if error is not None else kind
        key = kind if kind is not None else self.current
        if key == self._logged:
            return False
        self._logged = key
        self._logger.log(self._level, msg, *args, exc_info=error)
        return True

    def succeeded(self, msg: str | None = None, *args: object) -> None:
        """The task works (again): log ``msg % args`` if it had failed, and forget the failure."""
        if self._logged is not None and msg is not None:
            self._logger.info(msg, *args)
        self.current = None
        self.backoff = 0.0
        self._logged = None
