"""Exceptions that the CLI turns into exit codes: user errors (2) versus internal errors (1)."""

from __future__ import annotations


class AvrecError(Exception):
    """Base class of every error avrec raises on purpose."""


class DataError(AvrecError, ValueError):
    """Bad input data: the message names the file, row or field at fault."""


class ConfigError(AvrecError, ValueError):
    """A bad configuration value, file or model name."""


class DataWarning(UserWarning):
    """Input rows that were skipped or repaired; the message carries a count."""


class NotApplicable(ConfigError):
    """A model has nothing to learn from this data (e.g. a metadata model on items without metadata).

    Composite models such as ``hybrid`` leave such a component out of the blend instead of failing.
    """


class ScaleError(ConfigError):
    """A model refuses data too big for it, before allocating: the message says what it would need and which
    model or setting to use instead (``avrec fit`` exits 2 with it)."""


class PerformanceWarning(UserWarning):
    """A setting that works but runs far slower here than the user likely expects (the message says why)."""
