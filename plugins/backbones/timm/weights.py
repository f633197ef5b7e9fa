"""Which timm model a weights file belongs to, from its name, its metadata and its tensors' shapes.

DeiT-Ti and ViT-Ti have the same tensors but not the same input statistics (ImageNet's mean and
std against 0.5): DeiT's weights loaded as ``vit_tiny_patch16_224`` load without an error and
train on wrongly normalized images. So a file that names a timm model (``deit_tiny_patch16_224.
fb_in1k.safetensors``, timm's old ``deit_tiny_patch16_224-a1311bcf.pth``, an ``architecture``
in its safetensors metadata or in the timm ``config.json`` beside it) must name ``--backbone``'s.
When the shapes do not fit, the tensors themselves say which ViT they are (width, patch, depth).
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import timm
from safetensors import SafetensorError, safe_open
from timm.models import get_deprecated_models, get_pretrained_cfg, split_model_name_tag

from robench.errors import RobenchError
from robench.weights import tensor_shapes

# timm's names for a ViT's embedding width (vit_tiny_..., deit_small_..., eva02_base_...)
SIZES = {192: "tiny", 384: "small", 768: "base", 1024: "large", 1280: "huge", 1408: "giant"}
_SIZE_WORD = re.compile(r"(?<=_)(tiny|small|base|large|huge|giant)(?=_)")


def check_named_model(model: str, weights: Path) -> None:
    """Refuse, naming the right ``--backbone``, a file whose name or metadata names another model."""
    for source, text in _names(weights):
        named = _timm_model_in(text)
        if named is None:
            continue
        fix = f"rename the file if it does hold {model}'s weights" if source == "its file name" else "pass weights of " + model
        # the name to pass: the model without its tag, unless the tag's mean/std differ from the model's default
        backbone = _arch(named) if _statistics(_arch(named)) == _statistics(named) else named
        if _arch(named) != _arch(model):
            raise RobenchError(f"weights {weights.name} are {named}'s ({source} says so), not {model}'s: pass --backbone "
                               f"{backbone} (its input mean/std and shapes are its own), or {fix}")
        if _statistics(named) != _statistics(model):
            raise RobenchError(f"weights {weights.name} are {named}'s ({source} says so), whose input mean/std differ from "
                               f"{model}'s: pass --backbone {named}, or {fix}")
        return


def fitting_models(weights: Path, model: str) -> str:
    """``"the file holds a ViT of width 192, patch 16, 12 blocks: --backbone vit_tiny_patch16_224 fits it"``, or ""."""
    try:
        shapes = tensor_shapes(weights)
    except Exception:  # noqa: BLE001  (only a hint: the load error is reported anyway)
        return ""
    proj = shapes.get("patch_embed.proj.weight", ())
    if len(proj) != 4:
        return ""  # not a ViT-like state dict: the mismatching tensor names are the hint
    width, patch = proj[0], proj[-1]
    depth = len({name.split(".")[1] for name in shapes if name.startswith("blocks.")})
    held = f"the file holds a ViT of width {width}, patch {patch}, {depth} blocks"
    size = SIZES.get(width)
    if size is None:
        return held
    same_family = re.sub(r"patch\d+", f"patch{patch}", _SIZE_WORD.sub(size, _arch(model), count=1))
    if same_family != _arch(model) and timm.is_model(same_family):
        return f"{held} ({size}): --backbone {same_family} fits it"
    others = timm.list_models(f"*_{size}_patch{patch}_*")[:3]
    return f"{held} ({size}): e.g. --backbone {' or '.join(others)}" if others else held


def load_errors(message: str) -> str:
    """torch's load_state_dict error in whole words: ``"size mismatch for cls_token: [1, 1, 192] in
    the file, [1, 1, 384] in the model (and 150 more); 2 keys missing from the file, e.g. head.bias"``."""
    sizes = re.findall(r"size mismatch for (\S+): copying a param with shape torch\.Size\((\[[\d, ]*\])\) from "
                       r"checkpoint, the shape in current model is torch\.Size\((\[[\d, ]*\])\)", message)
    parts = []
    if sizes:
        name, in_file, in_model = sizes[0]
        more = f" (and {len(sizes) - 1} more)" if len(sizes) > 1 else ""
        parts.append(f"size mismatch for {name}: {in_file} in the file, {in_model} in the model{more}")
    for kind, where in (("Missing", "missing from the file"), ("Unexpected", "in the file but not the model")):
        keys = re.findall(r'"([^"]+)"', (re.findall(rf"{kind} key\(s\) in state_dict: (.*)", message) or [""])[0])
        if keys:
            parts.append(f"{len(keys)} key{'s' * (len(keys) > 1)} {where}, e.g. {keys[0]}")
    return "; ".join(parts)


def _names(weights: Path):
    """(where, text) pairs that may name the file's model: its metadata first, then its file name."""
    try:
        with safe_open(str(weights), "pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError):
        metadata = {}  # a torch file: no such metadata
    if isinstance(metadata.get("architecture"), str):
        yield "its safetensors metadata", metadata["architecture"]
    config = weights.parent / "config.json"  # timm's hub layout: model.safetensors beside config.json
    try:
        architecture = json.loads(config.read_text()).get("architecture")
    except (OSError, ValueError, AttributeError):
        architecture = None
    if isinstance(architecture, str):
        yield f"{config} beside it", architecture
    yield "its file name", weights.name


def _timm_model_in(text: str) -> str | None:
    """The longest timm model name ``text`` starts with, up to a ``.``, ``-`` or ``_`` (a tag, a hash, a suffix)."""
    known = _known_models()
    text = text.lower()
    ends = [i for i, char in enumerate(text) if char in "._-"] + [len(text)]
    for end in sorted(ends, reverse=True):
        if text[:end] in known:
            name = text[:end]
            tag = text[end + 1:].split(".")[0] if text[end:end + 1] == "." else ""
            full = f"{name}.{tag}" if tag and tag in _tags(name) else name
            return get_deprecated_models().get(full, full)
    return None


def _arch(model: str) -> str:
    return split_model_name_tag(get_deprecated_models().get(model, model))[0]


def _statistics(model: str) -> tuple:
    cfg = get_pretrained_cfg(model)
    return (tuple(cfg.mean), tuple(cfg.std)) if cfg is not None else ()


def _tags(model: str) -> set[str]:
    return {split_model_name_tag(name)[1] for name in timm.list_pretrained(f"{_arch(model)}.*")}


@cache
def _known_models() -> frozenset[str]:
    return frozenset(timm.list_models()) | frozenset(get_deprecated_models())
