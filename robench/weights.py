"""What a weights file holds, read cheaply before a run starts, and the hub when there is no network.

A file that is no weights at all (a Git LFS pointer, an HTML error page saved as ``.pth``, an
archive) is refused by name for what it is: the loaders' own errors say "header too small" or
nothing. Without network, huggingface_hub retries each download for about a minute before it
fails; :func:`offline_unless_reachable` asks the hub once, briefly, and otherwise sends every
hub client to its local cache, so that a missing download fails at once.
"""

from __future__ import annotations

import os
import urllib.request
import warnings
from functools import cache
from pathlib import Path

from robench.errors import RobenchError

FORMATS = ".safetensors, a torch .pth/.bin state dict or timm's JAX .npz"
_ZIP, _GZIP, _PICKLE = b"PK\x03\x04", b"\x1f\x8b", b"\x80"


def check_readable(path: Path) -> None:
    """Refuse in one line a file that no weights loader reads, saying what the file is instead."""
    head = _head(path)
    if _is_safetensors(path, head):
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), "pt"):
                return
        except (SafetensorError, OSError) as exc:
            raise RobenchError(f"weights {path.name} are a damaged safetensors file ({exc}): download them again") from None
    if head.startswith(_ZIP) and (path.suffix == ".npz" or _torch_loads(path, mmap=True)):
        return
    if head.startswith(_PICKLE) and _torch_loads(path, mmap=False):
        return
    raise RobenchError(f"weights {path.name} are not a weights file: {describe(path, head)}; pass {FORMATS}")


def describe(path: Path, head: bytes | None = None) -> str:
    """What a file that is not weights is, in a few words, from its first bytes."""
    head = _head(path) if head is None else head
    text = head.lstrip().lower()
    if not head:
        return "it is empty (a download that did not finish?)"
    if text.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the file it points to (fetch it: git lfs pull)"
    if text.startswith((b"<!doctype html", b"<html")):
        return "it is an HTML page (a download that got an error or a login page?)"
    if head.startswith((_ZIP, _GZIP)) or head[257:262] == b"ustar":
        return "it is an archive torch cannot read (unpack it and pass the weights file inside)"
    if head.startswith(_PICKLE):
        return "it is a Python pickle that torch cannot load as a state dict"
    try:
        first = head.decode("utf-8").strip().splitlines()[0]
    except (UnicodeDecodeError, IndexError):
        return f"its {path.stat().st_size} bytes are in no format robench knows"
    return f"it is a text file beginning {first[:40]!r}"


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's name and shape, read from a safetensors header or a torch file's index (mmap)."""
    if _is_safetensors(path, _head(path)):
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118  (safe_open is not iterable)
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True, mmap=_head(path).startswith(_ZIP))
    for key in ("state_dict", "model", "state_dict_ema"):  # the wrappers timm's loader unwraps too
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return {name.removeprefix("module."): tuple(t.shape) for name, t in state.items() if hasattr(t, "shape")}


@cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub (``HF_ENDPOINT``) answers at all; False when offline mode is set."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=timeout)
    except urllib.error.HTTPError:
        return True  # it answered, if only with an error status
    except (OSError, ValueError):
        return False
    return True


def offline_unless_reachable() -> bool:
    """Send huggingface_hub to its local cache when the hub cannot be reached; return whether it can."""
    if hub_reachable():
        return True
    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"  # for processes started from this one
    constants.HF_HUB_OFFLINE = True  # read at every request, so already imported clients see it
    return False


def no_download(model: str) -> RobenchError:
    """The one line for hub weights that are neither downloadable now nor in the local cache."""
    from huggingface_hub import constants

    return RobenchError(f"cannot get the pretrained weights of {model}: {constants.ENDPOINT} cannot be reached (no network, "
                        f"or HF_HUB_OFFLINE is set) and they are not in the local cache; pass a local weights file with "
                        f"--weights FILE (docs/backbones.md)")


def _head(path: Path, size: int = 512) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


def _is_safetensors(path: Path, head: bytes) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then that many bytes of JSON."""
    length = int.from_bytes(head[:8], "little") if len(head) >= 9 else 0
    return head[8:9] == b"{" and 0 < length <= path.stat().st_size - 8


def _torch_loads(path: Path, mmap: bool) -> bool:
    """Whether torch loads the file as weights: a zip-format file mapped (its index only), a legacy
    pickle whole; garbage that merely starts like one fails."""
    import torch

    try:
        with warnings.catch_warnings():  # a probe: torch's warnings about a pickle's protocol are not the user's business
            warnings.simplefilter("ignore")
            torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception:  # noqa: BLE001  (the unpickler raises anything, KeyError included, on garbage)
        return False
    return True
