"""Exceptions that carry a message meant for the user.

The CLI prints ``ActrecError`` messages without a traceback and exits non-zero; every other
exception is a bug.
"""


class ActrecError(Exception):
    """An error caused by the user's input (files, options, plugins), with a clear message."""


class ConfigError(ActrecError):
    """An unknown option, a value of the wrong type, or a malformed config file."""


class PluginError(ActrecError):
    """A plugin that is unknown, broken, or registered twice."""


class DataError(ActrecError):
    """A data file (video, annotation, feature store) that is missing or malformed."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM turned into it) during work that resumes; the message says what was
    kept and how to go on. The CLI prints it instead of a bare "Aborted." and exits 130."""
