"""Exceptions that carry a message meant for the user.

The CLI prints ``ActrecError`` messages without a traceback and exits non-zero; every other
exception is a bug.
"""


class ActrecError(Exception):
    """An error caused by the user's input (files, options, plugins), with a clear message."""


class ConfigError(ActrecError):
    """An unknown option, a value of the wrong type, or a malformed config file."""


class UnknownOptionError(ConfigError):
    """An option a plugin's config does not have: ``key`` as given, ``owner`` the plugin as
    the message names it (``"model 'gru'"``), so a caller can say where the option came
    from."""

    def __init__(self, message: str, key: str, owner: str) -> None:
        super().__init__(message)
        self.key, self.owner = key, owner


class PluginError(ActrecError):
    """A plugin that is unknown, broken, or registered twice."""


class DataError(ActrecError):
    """A data file (video, annotation, feature store) that is missing or malformed."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM turned into it) during work that resumes; the message says what was
    kept and how to go on. The CLI prints it instead of a bare "Aborted." and exits 130."""
