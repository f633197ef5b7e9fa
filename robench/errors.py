"""Errors a user can fix. The CLI prints them as one line and exits with status 2."""


class RobenchError(Exception):
    """Bad input: the message says what is wrong and what to do about it."""


class DataError(RobenchError):
    """The dataset is missing, incomplete or unreadable."""


class PluginError(RobenchError):
    """A plugin is unknown, misconfigured, clashes with another or failed to load."""
