"""Errors a user can fix. The CLI prints them as one line and exits with status 2."""


class RobenchError(Exception):
    """Bad input: the message says what is wrong and what to do about it."""


class DataError(RobenchError):
    """The dataset is missing, incomplete or unreadable."""


class PluginError(RobenchError):
    """A plugin is unknown, misconfigured, clashes with another or failed to load."""


def import_optional(module: str, needed_for: str, install: str):
    """The optional package ``module`` (an extra such as open_clip or medmnist), or one line saying
    what needs it and how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise RobenchError(f"{needed_for} needs the {module} package: {install}") from None
