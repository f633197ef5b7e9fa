"""robench: how robust does a pretrained ViT stay under attack, depending on how it was fine-tuned."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("robench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

from robench.hookspecs import hookimpl  # noqa: E402  (the one name a plugin needs)

__all__ = ["__version__", "hookimpl"]
