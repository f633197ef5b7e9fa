"""Trained weights kept per model, so that extending or resuming a run never trains twice.

A checkpoint holds only what a strategy trained: its parameters with ``requires_grad`` and any
buffer the strategy added to the backbone. The rest is rebuilt exactly as training started
(same seed, same backbone weights, same ``adapt``), so a VPT checkpoint is kilobytes and a full
fine-tuning one is the size of the backbone. The training facts (best epoch, seconds, ...) are
stored in the file's metadata, so rows of a model loaded from disk are as complete as those of
a model just trained.

Files live in ``<out>/checkpoints/``, named by a hash of everything the trained weights depend
on (robench.pipeline.fingerprint.model_key: strategy, options and recipe, the defense it trained under,
backbone and its weights' sha256, the data of the split, image size, seed, plugin versions). They stay with the results they produced: a run never picks up weights
from another run's folder, and deleting a run deletes its weights. Loading uses safetensors,
which never unpickles; a file that does not fit the model is ignored and the model retrained.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import cache
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from robench.core import atomic
from robench.core.progress import say
from robench.pipeline.models import file_sha256

FOLDER = "checkpoints"
FORMAT = "1"  # bump when what a checkpoint holds changes


def path_for(out: Path, key_fields: dict) -> Path:
    """``<out>/checkpoints/<strategy>-seed<seed>-<hash>.safetensors``: readable, and unique per key."""
    return Path(out) / FOLDER / f"{file_stem(key_fields['strategy'])}-seed{key_fields['seed']}-{digest(key_fields)}.safetensors"


def file_stem(label: str) -> str:
    """A model label made safe for a file name, still readable."""
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", label).strip("_")[:60]


def digest(key_fields: dict) -> str:
    """A short hash of a key: equal keys, equal names; any changed field, another name."""
    return hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:16]


def base_buffers(backbone: nn.Module) -> set[int]:
    """Identities of the backbone's own buffers, taken before a strategy adapts it."""
    return {id(buffer) for buffer in backbone.buffers()}


def trained_state(adapted: nn.Module, backbone_buffers: set[int]) -> dict[str, torch.Tensor]:
    """What the strategy trained: parameters that require grad, and persistent buffers it added."""
    state = adapted.state_dict(keep_vars=True)
    return {
        name: value
        for name, value in state.items()
        if (value.requires_grad if isinstance(value, nn.Parameter) else id(value) not in backbone_buffers)
    }


def save(path: Path, adapted: nn.Module, backbone_buffers: set[int], key_fields: dict, info: dict) -> None:
    """Write the trained tensors and the training facts; atomic, so a kill leaves no half file.

    A checkpoint that cannot be written (disk full) costs a retraining later, not this model's
    rows: it is reported and the run goes on.
    """
    tensors = trained_state(adapted, backbone_buffers)
    metadata = {"robench_checkpoint": FORMAT, "key": json.dumps(key_fields, sort_keys=True), "train_info": json.dumps(info)}
    try:
        write_tensors(path, tensors, metadata)
    except OSError as exc:
        say(f"checkpoint {path} not saved ({exc.strerror or exc}): a resumed run will train this model again")


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write a safetensors file atomically (a partial file, fsync, rename): a kill leaves no half file."""
    with atomic.replacing(path) as partial:
        save_file({name: t.detach().to("cpu", copy=True).contiguous() for name, t in tensors.items()}, str(partial), metadata=metadata)


def load(path: Path, adapted: nn.Module, backbone_buffers: set[int], key_fields: dict) -> dict | None:
    """Load a checkpoint into ``adapted`` and return its training facts; None if there is none that fits.

    A file that exists but does not fit (other key, other tensor names or shapes, unreadable) is
    reported in one line and ignored: the model is trained again and the file replaced.
    """
    if not path.exists():
        return None
    expected = trained_state(adapted, backbone_buffers)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
        problem = _mismatch(metadata, tensors, expected, key_fields)
    except (SafetensorError, OSError, ValueError) as exc:
        problem = f"unreadable ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
    if problem:
        say(f"checkpoint {path} not used: {problem}; training again")
        return None
    with torch.no_grad():
        for name, tensor in tensors.items():
            expected[name].copy_(tensor)
    return json.loads(metadata["train_info"])


def _mismatch(metadata: dict, tensors: dict, expected: dict, key_fields: dict) -> str | None:
    if metadata.get("robench_checkpoint") != FORMAT or "train_info" not in metadata:
        return "not a robench checkpoint of this version"
    if json.loads(metadata.get("key", "{}")) != key_fields:
        return "written for another model"
    if set(tensors) != set(expected):
        return f"holds {sorted(set(tensors) ^ set(expected))[:3]} where the model differs"
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape or tensor.dtype != expected[name].dtype:
            return f"{name} has shape {tuple(tensor.shape)} {tensor.dtype}, the model {tuple(expected[name].shape)} {expected[name].dtype}"
    return None


def weights_sha256(path: Path) -> str:
    """A weights file's sha256, hashed once per process while the file is unchanged."""
    stat = path.stat()
    return _sha256_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@cache
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(Path(path))
