"""Decode and resize image files once, then reuse the result from an on-disk cache.

Decoding 10,015 JPEGs takes minutes on a laptop, while every run needs the same pixels: the
decoded uint8 array is saved as one .npy file keyed by the files (path, size, mtime) and the
image size, so a second run with the same set loads it in seconds and a changed file misses.

A cache must never change a run's numbers or stop it: the file is named ``<key>-<checksum>.npy``
(the checksum of its pixels), written atomically, and checked on every load; a file that is
damaged, of another shape or holds other pixels is reported, removed and rebuilt. Where it lives,
its size and how to clear it: docs/caches.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pooch
import torch
from PIL import Image

from robench.core import atomic
from robench.core.progress import progress, say
from robench.errors import DataError

# Bump when the decoding below changes, so that caches written by older code are not reused.
_CACHE_VERSION = 2
_CHUNK = 64 * 2**20  # bytes hashed per task


def cache_dir() -> Path:
    """Where decoded arrays live: $ROBENCH_CACHE_DIR/images, else the per-user cache."""
    root = os.environ.get("ROBENCH_CACHE_DIR") or pooch.os_cache("robench")
    return Path(root) / "images"


def cache_files() -> dict[Path, int]:
    """Every file of the decoded-image cache (finished, or half-written by a killed run) and its size in bytes."""
    folder, found = cache_dir(), {}
    for path in sorted(folder.glob("*")) if folder.is_dir() else []:
        if path.suffix == ".npy" or path.name.endswith(".partial"):
            with contextlib.suppress(OSError):  # deleted meanwhile by a run or another clear
                found[path] = path.stat().st_size
    return found


def decode_image(path: Path, image_size: int) -> np.ndarray:
    """One file as uint8 3 x S x S RGB, resized bilinearly (JPEG draft mode decodes at reduced scale)."""
    try:
        with warnings.catch_warnings():
            # a header claiming more pixels than PIL decodes safely: refused in one line, not PIL's warning
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.draft("RGB", (image_size, image_size))
                rgb = image.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"image {path} claims more than {Image.MAX_IMAGE_PIXELS:,} pixels, more than is safe to decode "
                        "(a decompression bomb, or a huge scan): resize it, or remove it from the dataset") from None
    except (OSError, SyntaxError, ValueError) as error:  # PIL's errors for unreadable files
        raise DataError(
            f"cannot decode image {path} ({' '.join(str(error).split())}): "
            "the file is corrupt or truncated; replace it or download the dataset again"
        ) from None
    return np.asarray(rgb).transpose(2, 0, 1)


def load_images(paths: Sequence[Path], image_size: int) -> torch.Tensor:
    """All files as one uint8 N x 3 x S x S tensor, from the cache when the same set was decoded before."""
    key, shape = _cache_key(paths, image_size), (len(paths), 3, image_size, image_size)
    cached = _read_cache(key, shape)
    if cached is not None:
        return torch.from_numpy(cached)
    pixels = np.empty(shape, dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
        decoded = pool.map(lambda path: decode_image(path, image_size), paths)
        for index, image in enumerate(progress(decoded, total=len(paths), desc="decode images", unit="img")):
            pixels[index] = image
    _write_cache(key, pixels)
    return torch.from_numpy(pixels)


def _cache_key(paths: Sequence[Path], image_size: int) -> str:
    """Hash of what the pixels depend on: each file's resolved path, size and mtime, and the image size."""
    digest = hashlib.sha256(f"v{_CACHE_VERSION} {image_size}\n".encode())
    for path in paths:
        resolved = Path(path).resolve()
        stat = resolved.stat()
        digest.update(f"{resolved}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def _pixels_digest(pixels: np.ndarray) -> str:
    """sha256 of the sha256s of the array's 64 MB chunks, hashed on up to 8 cores (hashlib lets go
    of the GIL): one core hashes about 1 GB/s, and HAM10000 at 224 is 1.5 GB (docs/caches.md)."""
    data = memoryview(np.ascontiguousarray(pixels)).cast("B")
    chunks = [data[start:start + _CHUNK] for start in range(0, len(data), _CHUNK)]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return hashlib.sha256(b"".join(pool.map(lambda chunk: hashlib.sha256(chunk).digest(), chunks))).hexdigest()[:32]


def _read_cache(key: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cached pixels of ``key``, or None. A file that is truncated, empty, not an array, of
    another shape, or whose pixels do not match the digest in its name is reported in one line
    and removed, and the images are decoded again."""
    for path in sorted(cache_dir().glob(f"{key}-*.npy")):
        try:
            mapped = np.lib.format.open_memmap(path, mode="r")  # checks the header and the length, reads no pixels
            found, dtype = mapped.shape, mapped.dtype
            del mapped
            if found != shape or dtype != np.uint8:
                problem = f"it holds {dtype} {found}, not uint8 {shape}"
            else:
                pixels = np.load(path)  # one read(), several times faster than copying the memory map
                problem = None if path.name == f"{key}-{_pixels_digest(pixels)}.npy" else "its pixels do not match its checksum"
        except (OSError, ValueError, EOFError) as exc:
            problem = f"unreadable, damaged or cut short ({type(exc).__name__})"
        if problem is None:
            return pixels
        say(f"image cache {path} not used: {problem}; decoding the images again")
        with contextlib.suppress(OSError):
            path.unlink()
    return None


def _write_cache(key: str, pixels: np.ndarray) -> None:
    """Save the pixels under their key and checksum, atomically; a full disk or a read-only cache
    folder leaves no file and costs only the next run's decoding."""
    target = cache_dir() / f"{key}-{_pixels_digest(pixels)}.npy"
    try:
        with atomic.replacing(target) as partial, open(partial, "wb") as f:
            np.save(f, pixels)
    except OSError as exc:
        say(f"image cache {target} not saved ({exc.strerror or exc}): this run goes on without it; "
            "free disk space or set ROBENCH_CACHE_DIR to keep decoded images")
