"""Errors of the training data, said in the user's words before any tuning starts."""

from __future__ import annotations

from churnflow.features.errors import ChurnflowError


class TrainingDataError(ChurnflowError, ValueError):
    """The data cannot train and test a model as configured (too short, too few churners, ...)."""


class TuningBudgetError(ChurnflowError, RuntimeError):
    """No trial finished within the tuning budget (time, trials, pruning)."""
