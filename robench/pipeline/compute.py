"""How a model computes on its device: numeric precision, memory layout, compilation, data placement.

Precision changes the numbers, so it is recorded in config.json and must match for a run to be
resumed; channels-last and compilation only change float rounding, and keeping the data on the
GPU changes nothing but time. bf16 runs on CUDA and on CPUs that compute it natively
(AVX512-BF16 or AMX, as torch reports); elsewhere a CPU falls back to fp32, says so, and records
fp32. Channels-last and compilation work on a CPU too (compiling there is slow: it pays only for
long runs).
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from robench.core.names import BF16_TWIN
from robench.errors import RobenchError

PRECISIONS = ("fp32", "bf16")
# Keep the uint8 training data on the GPU when it takes at most this share of the free memory;
# the rest is for the model, its activations and the optimizer.
DATA_SHARE_OF_FREE_MEMORY = 0.25


def fast_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: CUDA, or a CPU with AVX512-BF16 or AMX (asked of
    torch, not guessed: elsewhere bf16 is emulated and slower than fp32)."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


def resolve_precision(name: str, device: torch.device, flag: str) -> str:
    """``auto`` -> bf16 on CUDA, fp32 on a CPU; ``bf16`` -> bf16 where the device computes it
    natively, else fp32 with a note. The result is what the run records and uses.

    ``auto`` stays fp32 on a CPU even with native bf16: bf16 pays on ViT-Ti and larger
    (``python bench/bf16_cpu.py``) but made the offline demo's 0.2M-parameter micro ViT slower
    (the README's first command with ``--train-precision bf16`` against ``fp32``, run alternately:
    45.8 and 48.1 s against 31.0 and 36.4 s), and its accuracy parity is measured per model, not assumed."""
    if name not in (*PRECISIONS, "auto"):
        raise RobenchError(f"{flag} {name!r}: use auto, {', '.join(PRECISIONS)}")
    if name == "fp32" or (name == "auto" and device.type != "cuda"):
        return "fp32"
    if fast_bf16(device):
        return "bf16"
    if name == "bf16":
        print(f"robench: {flag} bf16: this {device.type} has no native bf16 (AVX512-BF16 or AMX), so the run uses fp32 "
              "and records it", file=sys.stderr)  # also with --quiet: the run is not what was asked
    return "fp32"


def resolve_attack_precisions(text: str, device: torch.device) -> str:
    """``--attack-precision``: one precision, or ``fp32,bf16`` to run every attack in both. Each is
    resolved as :func:`resolve_precision` does; the result has no repeats (``fp32,bf16`` is
    ``fp32`` where bf16 falls back)."""
    names = [name.strip() for name in str(text).split(",") if name.strip()]
    if not names or not set(names) <= set(PRECISIONS):  # no auto: attacks stay fp32 unless asked (gradient masking)
        raise RobenchError(f"--attack-precision {text!r}: use fp32, bf16, or fp32,bf16 to check bf16 against fp32")
    resolved = [resolve_precision(name, device, "--attack-precision") for name in names]
    return ",".join(dict.fromkeys(resolved))


def attack_label(label: str, precision: str, precisions: str) -> str:
    """An attack's label in rows: its spec's own, with ``[bf16]`` added to the bf16 twin of an fp32
    attack when a run computes both (``--attack-precision fp32,bf16``)."""
    return f"{label}{BF16_TWIN}" if precision == "bf16" and "fp32" in precisions.split(",") else label




def autocast(device: torch.device | str, precision: str) -> AbstractContextManager:
    """bf16 autocast on the device for ``precision == "bf16"``; a context that does nothing otherwise.

    Autocast runs matmuls and convolutions in bf16 and keeps reductions such as the loss in
    fp32; the parameters, their gradients and the optimizer's state stay fp32 (bf16 has fp32's
    exponent range, so no loss scaling is needed).
    """
    device_type = torch.device(device).type
    if precision == "bf16" and device_type in ("cuda", "cpu"):
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return nullcontext()


def use_channels_last(model: nn.Module) -> nn.Module:
    """Store 4-D weights (a ViT's patch embedding) channels-last and feed the model channels-last
    images; in place, so the module tree and state_dict keys stay as they were."""
    model.to(memory_format=torch.channels_last)
    model.register_forward_pre_hook(_channels_last_input)
    return model


def _channels_last_input(module: nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])


def compile_in_place(model: nn.Module) -> nn.Module:
    """Compile the model's forward with torch.compile, keeping the model itself.

    ``torch.compile(model)`` returns a wrapper whose state_dict keys start with ``_orig_mod.``,
    so checkpoints written from it would not load into an uncompiled model. ``Module.compile``
    compiles the module's call in place: the same object, the same keys, the same submodules
    (a VPT or LoRA model inside stays reachable for the optimizer and the checkpoint).
    """
    if not hasattr(model, "compile"):
        raise RobenchError(f"--compile needs torch 2.2 or later (this is torch {torch.__version__}): upgrade torch or drop --compile")
    model.compile()
    return model


def on_device_if_fits(tensors: tuple[torch.Tensor, ...], device: torch.device | str) -> tuple[torch.Tensor, ...]:
    """Move ``tensors`` to the GPU at once when they fit in a share of its free memory, so that
    training reads batches from GPU memory instead of copying each batch from the host every
    epoch; leave them where they are otherwise (and always on a CPU)."""
    device = torch.device(device)
    if device.type != "cuda":
        return tensors
    size = sum(t.numel() * t.element_size() for t in tensors)
    free, _ = torch.cuda.mem_get_info(device)
    if size > DATA_SHARE_OF_FREE_MEMORY * free:
        return tensors
    return tuple(t.to(device) for t in tensors)


def device_bytes(tensors: tuple[torch.Tensor, ...]) -> int:
    """Bytes of ``tensors`` that sit in GPU memory (what on_device_if_fits moved there)."""
    return sum(t.numel() * t.element_size() for t in tensors if t.is_cuda)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RobenchError("--device cuda asked for, but torch sees no CUDA GPU: use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise RobenchError(f"unknown device {name!r}: use auto, cpu or cuda")
    return torch.device(name)
