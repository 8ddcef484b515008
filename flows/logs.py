"""Prefect's logs of a failure churnflow explains itself, kept off the user's terminal.

A ``ChurnflowError`` ends a command in one clear message (``flows/cli.py``). Prefect also logs
the failed task's traceback and a "Finished in state Failed(...)" echo of the message; the filter
here drops those records, in the CLI's process and, on the Dask engine, in the worker process
that runs a flow's task (it prints to the same terminal; ``flows.engine.engine_client`` adds the
filter there, once Prefect has set up the worker's logging). The run's state in
Prefect's API still carries the reason. ``--debug`` shows everything.
"""

from __future__ import annotations

import logging
import os

DEBUG_ENV = "CHURNFLOW_DEBUG"
"""Set by ``churnflow --debug``; worker processes started afterwards inherit it."""


class HideExpectedFailures(logging.Filter):
    """Drops the records about a ``ChurnflowError``: its traceback and the state echo of it."""

    def filter(self, record: logging.LogRecord) -> bool:
        from churnflow.features.errors import ChurnflowError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ChurnflowError):
            return False
        if not exc:  # "Finished in state Failed(...)" echoes (INFO for flows, ERROR for tasks)
            text = record.getMessage()
            return not any(f"{name}: " in text or f"{name}(" in text for name in _error_names(ChurnflowError))
        return True


def _error_names(base: type) -> set[str]:
    names = {base.__name__}
    for sub in base.__subclasses__():
        names |= _error_names(sub)
    return names


def hide_expected_failures() -> None:
    """Add the filter to the handlers of the root logger and Prefect's (unless debugging)."""
    if os.environ.get(DEBUG_ENV):
        return
    quiet = HideExpectedFailures()
    loggers = [logging.getLogger()] + [logging.getLogger(n) for n in list(logging.Logger.manager.loggerDict)
                                       if n.startswith("prefect")]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, HideExpectedFailures) for f in handler.filters):
                handler.addFilter(quiet)

