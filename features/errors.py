"""The one base class of every error churnflow expects and explains to its user.

A ``ChurnflowError`` carries a message written for the person running the command: it names
their file, column, settings key or model version and says what to do next. The CLI prints it
without a traceback (``--debug`` shows one); anything else is a bug and keeps its traceback.
Each package defines its specific errors as subclasses, next to the code that raises them.
"""

from __future__ import annotations


class ChurnflowError(Exception):
    """An expected failure with a user-facing message (bad input, settings, missing model)."""
