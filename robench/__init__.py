"""robench: how robust does a pretrained ViT stay under attack, depending on how it was fine-tuned."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("robench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

from robench.hookspecs import hookimpl  # the one name a plugin needs

# The Python API (robench.api). Loaded when first used, not on `import robench`: a plugin that needs
# only hookimpl does not pay for torch, and the engine's modules, which import robench, are never
# imported by it while it is itself being imported.
_API = ("run", "benchmark", "load_run", "list_plugins", "Results")
__all__ = ["Results", "__version__", "benchmark", "hookimpl", "list_plugins", "load_run", "run"]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module("robench.api"), name)
    raise AttributeError(f"module 'robench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
