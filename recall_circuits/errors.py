"""One error type for bad input, so scripts can print one line instead of a traceback
(:func:`recall_circuits.cli.script`)."""

from __future__ import annotations


class RecallCircuitsError(ValueError):
    """Bad input given to a recall_circuits function or script (shown to the user as one line)."""
