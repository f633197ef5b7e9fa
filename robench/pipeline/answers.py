"""What the model answered, during an attack, to each exact input it was given.

robench never takes an attack's word for a result: after the attack, the sweep passes every
adversarial example through the model itself. An attack that stops early (PGD, AutoAttack) has
just done that for each example it found fooled, so the sweep's check would be a second forward
pass of the same model on the same tensor, a quarter of the cost of an image fooled in one
gradient step (bench/pgd_cost.py). A forward hook of the sweep's, on the model it hands the
attack, records the answer to every float32 input the model computed in the sweep's own setting;
the sweep then reads the answer for an example whose bits it has seen and computes the rest. The
answer is the engine's forward pass on those bits, not the attack's claim. It was computed in
the batch the attack formed, as the sweep's own check was always computed in some batch: other
images in a batch can move a ViT's logits by about 1e-7, which changes an answer only where two
classes tie to that precision.

An answer is recorded only from a forward pass in the setting the sweep checks in, as it was
when the sweep began: the same parameters and buffers (objects, storage and version counters:
an attack that swaps or edits weights, even to restore them, is not trusted), the same hooks on
every submodule, eval mode, the same autocast state and dtype, TF32 setting and subnormal
handling, and no functorch transform. Anything else is left unrecorded and checked afresh, and
a failure inside the hook never reaches the attack. Inputs are told apart by two 64-bit integer
hashes of their bits (exact, and independent of the order of the sum); a miss only costs the
forward pass the sweep made anyway.
"""

from __future__ import annotations

import torch
from torch import nn

from robench.attack import flushing_subnormals

_HASHES = 2


class Answers:
    """A context that records the model's answers to its inputs; :meth:`predict` checks examples."""

    def __init__(self, model: nn.Module, autocast_on: bool):
        self.model = model
        self.autocast_on = autocast_on
        self.seen: dict[tuple[int, ...], tuple[int, list[float]]] = {}  # bits -> (class, probabilities)
        self.reused = 0
        self._weights: dict[tuple[int, str], torch.Tensor] = {}

    def __enter__(self) -> Answers:
        self._handle = self.model.register_forward_hook(self._record)
        self._setting = self._current_setting()  # with the hook itself among the hooks
        if _autocast_state(self._device())[0] != self.autocast_on:
            self._setting = None  # not the arithmetic the sweep checks in: record nothing
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The model's predicted class for each image: recorded where these exact bits were seen
        in the sweep's setting, computed (and then recorded) for the rest."""
        return self.answer(images)[0]

    @torch.no_grad()
    def answer(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's predicted class and softmax probabilities (float32, on the CPU) for each image,
        as :meth:`predict` finds them; the probabilities are what calibration is measured on."""
        keys = self._keys(images) if self._current_setting() == self._setting else None
        known = [None] * len(images) if keys is None else [self.seen.get(key) for key in keys]
        missing = [i for i, answer in enumerate(known) if answer is None]
        preds = torch.tensor([-1 if answer is None else answer[0] for answer in known], dtype=torch.long)
        probs = [None if answer is None else answer[1] for answer in known]
        if missing:
            logits = self.model(images[missing])
            preds[missing] = logits.argmax(1).cpu()
            for i, row in zip(missing, _probabilities(logits).tolist(), strict=True):
                probs[i] = row
        self.reused += len(images) - len(missing)
        return preds, (torch.tensor(probs, dtype=torch.float32) if probs else torch.zeros(0, 0))

    def _record(self, module: nn.Module, args: tuple, output) -> None:
        try:
            if (not args or not isinstance(args[0], torch.Tensor) or not isinstance(output, torch.Tensor)
                    or torch._C._functorch.is_functorch_wrapped_tensor(args[0])
                    or self._current_setting() != self._setting):
                return
            keys = self._keys(args[0])
            if keys is not None:
                answers = zip(output.detach().argmax(1).tolist(), _probabilities(output).tolist(), strict=True)
                self.seen.update(zip(keys, answers, strict=True))
        except Exception:  # noqa: BLE001  (an answer not recorded is checked again: never break the attack)
            return

    def _current_setting(self) -> tuple:
        """Everything an answer depends on besides the input, as it is now."""
        tensors = tuple((name, id(t), t.data_ptr(), t._version) for name, t in
                        [*self.model.named_parameters(), *self.model.named_buffers()])
        hooks = tuple((len(m._forward_hooks), len(m._forward_pre_hooks), m.training) for m in self.model.modules())
        global_hooks = (len(nn.modules.module._global_forward_hooks), len(nn.modules.module._global_forward_pre_hooks))
        return (tensors, hooks, global_hooks, _autocast_state(self._device()), torch.get_float32_matmul_precision(),
                flushing_subnormals())

    def _device(self) -> str:
        return next((p.device.type for p in self.model.parameters()), "cpu")

    def _keys(self, images: torch.Tensor) -> list[tuple[int, ...]] | None:
        """Per image, hashes of its float32 bits (None for another dtype): sums of the bits times
        odd random 64-bit weights, wrapping, so the order of the sum does not matter."""
        if images.dtype != torch.float32 or images.dim() < 2:
            return None
        bits = images.detach().contiguous().view(torch.int32).reshape(len(images), -1).long()
        size = (bits.shape[1], str(bits.device))
        if size not in self._weights:
            generator = torch.Generator().manual_seed(0)  # its own generator: the attacks' random draws stay as they were
            weights = torch.randint(-(2**62), 2**62, (bits.shape[1], _HASHES), generator=generator) * 2 + 1
            self._weights[size] = weights.to(bits.device)
        hashes = torch.stack([(bits * weights).sum(1) for weights in self._weights[size].T], 1)
        return [tuple(row) for row in hashes.tolist()]


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities of a batch of logits, in float32 on the CPU (bf16 logits included)."""
    return torch.softmax(logits.detach().float(), dim=1).cpu()


def _autocast_state(device: str) -> tuple[bool, torch.dtype | None]:
    """Whether autocast is on for the device type, and its dtype (torch >= 2.4 names, else the older ones)."""
    try:
        return torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)
    except (TypeError, AttributeError, RuntimeError):
        if device == "cuda":
            return torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()
        return torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
