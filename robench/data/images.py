"""Decode and resize image files once, then reuse the result from an on-disk cache.

Decoding 10,015 JPEGs takes minutes on a laptop, while every run needs the same pixels: the
decoded uint8 array is saved as one .npy file keyed by the files (path, size, mtime) and the
image size, so a second run with the same set loads it in seconds and a changed file misses.

A cache must never change a run's numbers or stop it: the file, ``<key>.npy``, is written
atomically and checked on every load, its header and shape, and a random sample of its images
decoded anew from their files: a file that is damaged, of another shape or holds other pixels
(copied from another set, or forged: a key is computable from the sources, so a name proves
nothing) is reported, removed and rebuilt. The sample is drawn afresh on every load, so a forger
cannot know which images are checked; it replaced a checksum of every pixel (5 s at 224 px for
HAM10000), which anyone able to forge the file could compute too. A folder that other users can
write to is not used at all. Where it lives, its size and how to clear it: docs/caches.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
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
_CACHE_VERSION = 3
SAMPLE = 64  # images decoded anew to check a cache file on each load


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
                found[path] = path.lstat().st_size  # a link's own size: nothing is followed
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
    unsafe = unsafe_folder(cache_dir())
    if unsafe:
        say(f"image cache folder {cache_dir()} not used: {unsafe}; make it private (chmod 700) or set ROBENCH_CACHE_DIR")
    cached = None if unsafe else _read_cache(key, shape, paths, image_size)
    if cached is not None:
        return torch.from_numpy(cached)
    pixels = np.empty(shape, dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
        decoded = pool.map(lambda path: decode_image(path, image_size), paths)
        for index, image in enumerate(progress(decoded, total=len(paths), desc="decode images", unit="img")):
            pixels[index] = image
    if not unsafe:
        _write_cache(key, pixels)
    return torch.from_numpy(pixels)


def unsafe_folder(folder: Path) -> str | None:
    """Why a cache folder may not be trusted (another user owns it, or others can write to it), or None.
    Whoever can write there can plant pixels that a run would train and attack on."""
    try:
        found = folder.stat()
    except OSError:
        return None  # not there yet: robench creates it private
    if hasattr(os, "getuid") and found.st_uid != os.getuid():
        return f"it belongs to another user (uid {found.st_uid})"
    if found.st_mode & 0o022:
        return f"other users can write to it (mode {stat.S_IMODE(found.st_mode):o})"
    return None


def _cache_key(paths: Sequence[Path], image_size: int) -> str:
    """Hash of what the pixels depend on: each file's resolved path, size and mtime, and the image size."""
    digest = hashlib.sha256(f"v{_CACHE_VERSION} {image_size}\n".encode())
    for path in paths:
        resolved = Path(path).resolve()
        stat = resolved.stat()
        digest.update(os.fsencode(resolved) + f"\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())  # any name's bytes
    return digest.hexdigest()[:32]


def _read_cache(key: str, shape: tuple[int, ...], paths: Sequence[Path], image_size: int) -> np.ndarray | None:
    """The cached pixels of ``key``, or None. A file that is truncated, empty, not an array, of
    another shape, or whose sampled images differ from their files decoded anew is reported in one
    line and removed, and the images are decoded again."""
    path = cache_dir() / f"{key}.npy"
    if not path.exists():
        return None
    try:
        mapped = np.lib.format.open_memmap(path, mode="r")  # checks the header and the length, reads no pixels
        found, dtype = mapped.shape, mapped.dtype
        del mapped
        if found != shape or dtype != np.uint8:
            problem = f"it holds {dtype} {found}, not uint8 {shape}"
        else:
            pixels = np.load(path)  # one read(), several times faster than copying the memory map
            problem = _differs(pixels, paths, image_size)
    except (OSError, ValueError, EOFError) as exc:
        problem = f"unreadable, damaged or cut short ({type(exc).__name__})"
    if problem is None:
        return pixels
    say(f"image cache {path} not used: {problem}; decoding the images again")
    with contextlib.suppress(OSError):
        path.unlink()
    return None


def _differs(pixels: np.ndarray, paths: Sequence[Path], image_size: int) -> str | None:
    """How many of a fresh random sample of images differ from their files decoded anew, or None."""
    picked = np.random.default_rng().choice(len(paths), size=min(SAMPLE, len(paths)), replace=False)  # unseeded
    wrong = sum(not np.array_equal(pixels[i], decode_image(paths[i], image_size)) for i in picked)
    return f"{wrong} of {len(picked)} images decoded anew from their files differ from it" if wrong else None


def _write_cache(key: str, pixels: np.ndarray) -> None:
    """Save the pixels under their key and checksum, atomically; a full disk or a read-only cache
    folder leaves no file and costs only the next run's decoding."""
    target = cache_dir() / f"{key}.npy"
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # private: see unsafe_folder
        with atomic.replacing(target) as partial, open(partial, "wb") as f:
            np.save(f, pixels)
    except OSError as exc:
        say(f"image cache {target} not saved ({exc.strerror or exc}): this run goes on without it; "
            "free disk space or set ROBENCH_CACHE_DIR to keep decoded images")
