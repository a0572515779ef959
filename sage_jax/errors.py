"""Errors the ``sage-jax`` command reports as a message (exit status 2), without a
traceback. Kept free of heavy imports so the command can name them cheaply."""


class RunStopped(RuntimeError):
    """A training run stopped for a reason the user must act on (non-finite loss,
    checkpoint not writable); the message says what happened and what was kept."""


class EvaluationError(ValueError):
    """A problem with the inputs, found before any metric is computed."""


class UsageError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""
