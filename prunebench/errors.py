"""The errors a user can cause, each with a one-line message naming the bad value and the choices."""


class PrunebenchError(Exception):
    """Base class: ``run.py`` prints these as one line and exits with status 2."""


class ConfigError(PrunebenchError):
    """A configuration value is outside what the suite accepts."""


class DataError(PrunebenchError):
    """A dataset root is missing or does not have the expected layout."""


class RecordError(PrunebenchError):
    """A run record does not match the schema."""
