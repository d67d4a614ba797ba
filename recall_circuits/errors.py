"""One error type for bad input, so scripts can print one line instead of a traceback."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable


class RecallCircuitsError(ValueError):
    """Bad input given to a recall_circuits function or script (shown to the user as one line)."""


def cli_entry(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap a script's ``main``: a :class:`RecallCircuitsError` becomes ``error: ...`` on stderr and exit code 2;
    Ctrl-C ends with one line saying how to resume, and exit code 130."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
        try:
            return main(argv)
        except RecallCircuitsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted: run the same command again to resume (completed stages and checkpoints are kept)",
                  file=sys.stderr)
            return 130

    return wrapped
