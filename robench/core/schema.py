"""The shapes of the files robench reads back, config.json and each row of results.jsonl, and the
one checker both go through.

A file edited by hand or damaged by another tool is refused in one line naming the file, the field
and what to do, instead of failing later with a KeyError deep inside a page. Past their shapes, the
per-image records of a row must hold one value per attacked image of config.json and predictions
that are class indices (``records_problem``), as pages index arrays by them. The shapes list only
what robench reads back; other fields pass (a newer robench may add some), and fields a run of an
older robench lacks are optional unless robench cannot do without them.

A shape is a type (``int`` is never a bool; ``None`` allows null), a tuple of shapes (any of them),
``[shape]`` (a list of such items), a dict of field -> shape (an object; ``Required(shape)`` marks a
field that must be there) or ``Each(shape)`` (an object of any keys whose values have that shape).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from robench.errors import RobenchError


@dataclass(frozen=True)
class Required:
    shape: Any


@dataclass(frozen=True)
class Each:
    shape: Any


@dataclass(frozen=True)
class Within:
    """A finite number from ``low`` to ``high`` (or null where ``null``): a value read back that no run
    can write (an accuracy of 7 or NaN, a negative eps) is refused, never shown as 700 % or nan."""

    low: float
    high: float
    null: bool = False
    nan: bool = False  # NaN is a value robench writes here (a ratio of 0 to 0)

    def fits(self, value) -> bool:
        if value is None and self.null or self.nan and type(value) is float and math.isnan(value):
            return True
        return type(value) in (int, float) and math.isfinite(value) and self.low <= value <= self.high

    def __str__(self) -> str:
        span = f"from {self.low:g} to {self.high:g}" if math.isfinite(self.high) else f"of at least {self.low:g}"
        return f"a finite number {span}{' or null' if self.null else ''}"


NUMBER = (int, float)
FRACTION = Within(0, 1, null=True)  # every accuracy and rate of a row is a fraction in [0, 1]
# Over the clean-correct images: NaN (0 of 0) for a model that got none of the attacked images right.
OVER_CORRECT = Within(0, 1, null=True, nan=True)
TEXT = (str, None)
_NAMES = {int: "a whole number", float: "a number", str: "a string", bool: "true or false", type(None): "null"}

_COMPARABLE = {"recipes": Required(Each(dict)), "plugins": Each(str)}
CONFIG = {
    "format": int, "name": TEXT, "command": str, "created": str, "robench_version": TEXT,
    "protocol": TEXT, "reference": TEXT, "device": TEXT,
    "seeds": [int], "strategies": [str], "defenses": [str], "attacks": [str], "eps": [NUMBER],
    "dataset": {"name": TEXT, "description": TEXT, "classes": ([str], None), "malignant": ([str], None)},
    "split": dict, "backbone": dict, "versions": (Each(TEXT), None), "precision": (dict, None),
    "attack_samples": ({"n": Required(int), "of": Required(int)}, None),
    "escalation": ({"rounds": Required(int)}, None),
    "corruptions": ({"names": Required([str]), "severities": Required([int])}, None),
    "tuning": ({"budget": Required(dict), "strategies": Required(Each(dict))}, None),
    "attacked": ({"ids": Required(list), "labels": Required([int])}, None),
    "comparable": _COMPARABLE,
}
_NUMBER_OR_NULL = (int, float, None)
ROW = {
    "strategy": Required(str), "seed": Required(int), "attack": Required(str), "eps": Required(Within(0, math.inf)),
    "status": Required(str), "error": TEXT, "strategy_name": TEXT, "defense": TEXT, "attack_name": TEXT,
    "attack_family": TEXT, "attack_norm": TEXT, "attack_source": TEXT, "node": TEXT, "device": TEXT,
    **dict.fromkeys(("n_test", "n_attacked", "n_clean_correct", "epochs", "best_epoch", "escalated", "escalation_fooled",
                     "escalation_rounds"), _NUMBER_OR_NULL),
    **dict.fromkeys(("clean_acc", "clean_bacc", "majority_acc", "attack_clean_acc", "robust_acc", "robust_bacc"), FRACTION),
    **dict.fromkeys(("acc_on_correct", "attack_success_rate"), OVER_CORRECT),
    "eps_max": Within(0, math.inf, null=True),
    "ece": Within(0, 1, null=True), "nll": Within(0, math.inf, null=True),
    "reliability": ({"counts": Required([int]), "accuracy": Required([_NUMBER_OR_NULL]),
                     "confidence": Required([_NUMBER_OR_NULL])}, None),
    "clean_pred": ([int], None), "adv_pred": ([int], None), "min_eps": ([_NUMBER_OR_NULL], None),
}
RECORDS = ("clean_pred", "adv_pred", "min_eps")  # per-image lists, in config.json's attacked order


def sizes(config: dict) -> tuple[int | None, int | None]:
    """How many images a run attacked and how many classes it has, as its config.json (already checked
    against CONFIG) records them; None for what a run of an older robench did not record."""
    attacked, classes = config.get("attacked"), (config.get("dataset") or {}).get("classes")
    return (len(attacked["labels"]) if attacked else None), (len(classes) if classes else None)


def attacked_problem(config: dict) -> str | None:
    """What is wrong with a config.json's attacked images (one that fits CONFIG): ids and labels of
    other lengths, a label that is no class index, or a malignant class that is no class; None when they fit."""
    dataset = config.get("dataset") or {}
    unknown = sorted(set(dataset.get("malignant") or ()) - set(dataset.get("classes") or ())) if dataset.get("classes") else []
    if unknown:
        return f"field dataset.malignant names {', '.join(map(repr, unknown))}, not a class of dataset.classes"
    n_images, n_classes = sizes(config)
    if n_images is None:
        return None
    if len(config["attacked"]["ids"]) != n_images:
        return f"field attacked.ids holds {len(config['attacked']['ids'])} ids for {n_images} attacked.labels"
    return _class_problem("attacked.labels", config["attacked"]["labels"], n_classes, "dataset.classes")


def records_problem(row: dict, n_images: int | None, n_classes: int | None) -> str | None:
    """What is wrong with a row's per-image records (a row that fits ROW) against its run's ``sizes``:
    a list of another length than the attacked images, or a prediction that is no class index. Pages
    index by these numbers: unchecked, a 99 ends in an IndexError and a short list drops columns."""
    for field in RECORDS:
        values = row.get(field)
        if not isinstance(values, list):
            continue
        if n_images is not None and len(values) != n_images:
            return f"field {field} holds {len(values)} values, not one per attacked image ({n_images} in config.json)"
        if field != "min_eps" and (found := _class_problem(field, values, n_classes, "config.json")):
            return found
    return None


def _class_problem(field: str, values: list[int], n_classes: int | None, source: str) -> str | None:
    if n_classes is None or not values or 0 <= min(values) <= max(values) < n_classes:
        return None
    bad = next(i for i, value in enumerate(values) if not 0 <= value < n_classes)
    return f"field {field}[{bad}] must be a class index from 0 to {n_classes - 1} ({source} lists {n_classes} classes), got {values[bad]}"


def check(value, shape, source: str, advice: str) -> None:
    """Raise one line, ``<source>: field F must be ..., got ...: <advice>``, if ``value`` does not fit ``shape``."""
    found = problem(value, shape)
    if found is not None:
        raise RobenchError(f"{source}: {found}: {advice}")


def problem(value, shape, path: str = "") -> str | None:
    """What is wrong with ``value`` against ``shape``, naming the field; None when it fits."""
    if isinstance(shape, Within):
        return None if shape.fits(value) else _wrong(value, shape, path)
    if isinstance(shape, tuple) and not _is_scalar(shape):
        scalars = tuple(s for s in shape if _is_scalar(s))
        if scalars and _is(value, scalars):
            return None
        # the alternative of the value's own kind (an object, a list) says what is wrong inside it
        inner = next((s for s in shape if not _is_scalar(s) and _kind(s) is type(value)), None)
        return _wrong(value, shape, path) if inner is None else problem(value, inner, path)
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return _wrong(value, shape, path)
        for key, inner in shape.items():
            required = isinstance(inner, Required)
            if key not in value:
                if required:
                    return f"field {_join(path, key)} is missing"
                continue
            if (found := problem(value[key], inner.shape if required else inner, _join(path, key))) is not None:
                return found
        return None
    if isinstance(shape, Each):
        if not isinstance(value, dict):
            return _wrong(value, shape, path)
        return next((f for key, item in value.items() if (f := problem(item, shape.shape, _join(path, key)))), None)
    if isinstance(shape, list):
        if not isinstance(value, list):
            return _wrong(value, shape, path)
        if _is_scalar(shape[0]):  # per-image records: thousands of items, checked by their exact type
            allowed = _types(shape[0])
            if allowed.issuperset(map(type, value)):
                return None
            bad = next(i for i, item in enumerate(value) if type(item) not in allowed)
            return _wrong(value[bad], shape[0], f"{path}[{bad}]")
        return next((f for i, item in enumerate(value) if (f := problem(item, shape[0], f"{path}[{i}]"))), None)
    return None if _is(value, shape) else _wrong(value, shape, path)


def _kind(shape) -> type | None:
    """The JSON container a shape describes: dict, list or None (a scalar)."""
    return dict if isinstance(shape, (dict, Each)) or shape is dict else list if isinstance(shape, list) or shape is list else None


def _is_scalar(shape) -> bool:
    return all(isinstance(s, type) or s is None for s in (shape if isinstance(shape, tuple) else (shape,)))


def _types(shape) -> frozenset:
    """The exact types of JSON values a scalar shape allows (a bool is not an int here)."""
    return frozenset(type(None) if t is None else t for t in (shape if isinstance(shape, tuple) else (shape,)))


def _is(value, shape) -> bool:
    return type(value) in _types(shape) or (shape in (dict, list) and isinstance(value, shape))


def _wrong(value, shape, path: str) -> str:
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    where = f"field {path}" if path else "it"
    return f"{where} must be {describe(shape)}, got {shown}"


def describe(shape) -> str:
    """A shape in words: ``([int], None)`` -> "a list of whole numbers or null"."""
    if isinstance(shape, Required):
        return describe(shape.shape)
    if isinstance(shape, Within):
        return str(shape)
    if isinstance(shape, tuple):
        number = int in shape and float in shape  # int is a number already
        return " or ".join(dict.fromkeys(describe(s) for s in shape if not (number and s is int)))
    if isinstance(shape, list):
        items = (part.removeprefix("a ").removeprefix("an ") for part in describe(shape[0]).split(" or "))
        return "a list of " + " or ".join(f"{item}s" for item in items)
    if isinstance(shape, (dict, Each)) or shape is dict:
        return "an object"
    if shape is list:
        return "a list"
    return _NAMES.get(type(None) if shape is None else shape, getattr(shape, "__name__", str(shape)))


def _join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)
