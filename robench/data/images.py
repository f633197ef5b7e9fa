"""Decode and resize image files once, then reuse the result from an on-disk cache.

Decoding 10,015 JPEGs takes minutes on a laptop, while every run needs the same pixels: the
decoded uint8 array is saved as one .npy file keyed by the files (path, size, mtime) and the
image size, so a second run with the same set loads it in seconds and a changed file misses.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pooch
import torch
from PIL import Image

from robench.errors import DataError
from robench.progress import progress

# Bump when the decoding below changes, so that caches written by older code are not reused.
_CACHE_VERSION = 1


def cache_dir() -> Path:
    """Where decoded arrays live: $ROBENCH_CACHE_DIR/images, else the per-user cache."""
    root = os.environ.get("ROBENCH_CACHE_DIR") or pooch.os_cache("robench")
    return Path(root) / "images"


def decode_image(path: Path, image_size: int) -> np.ndarray:
    """One file as uint8 3 x S x S RGB, resized bilinearly (JPEG draft mode decodes at reduced scale)."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (image_size, image_size))
            rgb = image.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
    except (OSError, SyntaxError, ValueError) as error:  # PIL's errors for unreadable files
        raise DataError(
            f"cannot decode image {path} ({' '.join(str(error).split())}): "
            "the file is corrupt or truncated; replace it or download the dataset again"
        ) from None
    return np.asarray(rgb).transpose(2, 0, 1)


def load_images(paths: Sequence[Path], image_size: int) -> torch.Tensor:
    """All files as one uint8 N x 3 x S x S tensor, from the cache when the same set was decoded before."""
    cached = cache_dir() / f"{_cache_key(paths, image_size)}.npy"
    if cached.exists():
        return torch.from_numpy(np.load(cached))
    pixels = np.empty((len(paths), 3, image_size, image_size), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
        decoded = pool.map(lambda path: decode_image(path, image_size), paths)
        for index, image in enumerate(progress(decoded, total=len(paths), desc="decode images", unit="img")):
            pixels[index] = image
    _save_atomically(cached, pixels)
    return torch.from_numpy(pixels)


def _cache_key(paths: Sequence[Path], image_size: int) -> str:
    """Hash of what the pixels depend on: each file's resolved path, size and mtime, and the image size."""
    digest = hashlib.sha256(f"v{_CACHE_VERSION} {image_size}\n".encode())
    for path in paths:
        resolved = Path(path).resolve()
        stat = resolved.stat()
        digest.update(f"{resolved}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def _save_atomically(target: Path, array: np.ndarray) -> None:
    """Write to a temporary name and rename, so a concurrent or killed run never leaves half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.stem}.{os.getpid()}.partial.npy")
    np.save(partial, array)
    os.replace(partial, target)
