"""The one base class of every error churnflow expects and explains to its user.

A ``ChurnflowError`` carries a message written for the person running the command: it names
their file, column, settings key or model version and says what to do next. The CLI prints it
without a traceback (``--debug`` shows one); anything else is a bug and keeps its traceback.
Each package defines its specific errors as subclasses, next to the code that raises them.
"""

from __future__ import annotations


class ChurnflowError(Exception):
    """An expected failure with a user-facing message (bad input, settings, missing model)."""

    def __reduce__(self) -> tuple[object, ...]:
        """Sent between processes as it is (a task on a Dask worker fails, the client explains
        it): by default an exception is rebuilt by calling its class with its message, which a
        subclass taking other arguments (``DataValidationError``'s problems) turns into nonsense."""
        return _rebuilt, (type(self), self.args, dict(self.__dict__))


def _rebuilt(cls: type[ChurnflowError], args: tuple[object, ...], state: dict[str, object]) -> ChurnflowError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error
