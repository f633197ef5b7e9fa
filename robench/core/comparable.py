"""Which settings make two runs' rows comparable, and one config.json for the rows of two.

Shared by resume (robench.pipeline.resume: a command that adds to a run folder must match these)
and merging (robench.report.merge: a page of several runs folds only comparable ones), so that
both refuse the same differences in the same words.
"""

from __future__ import annotations

# What must be equal for two commands to write rows into one run folder, and how to name it.
COMPARABLE = {
    "dataset": "--dataset",
    "subset": "--subset",
    "n_images": "number of images in the dataset",
    "split_seed": "--split-seed",
    "split_fingerprint": "split fingerprint (which images are held out)",
    "test_set": "--test-set",
    "test_images": "test images (--test-dir)",
    "backbone": "--backbone",
    "weights": "--weights (sha256)",
    "image_size": "--image-size",
    "attack_samples": "--attack-samples",
    "train_precision": "--train-precision",
    "attack_precision": "--attack-precision",
}
# What a run written before a setting of COMPARABLE existed used: it compares as that value.
BEFORE_RECORDED = {"train_precision": "fp32", "attack_precision": "fp32"}
# Lists that a later command may extend; config.json keeps their union, old entries first.
EXTENDABLE = ("strategies", "attacks", "eps", "seeds", "defenses")


def first_difference(a: dict, b: dict) -> tuple[str, str, object, object] | None:
    """The first thing two ``comparable`` records differ in, as (kind, name, value in a, value in b), kind
    ``setting`` (name: the flag), ``plugin`` (name: the strategy) or ``recipe`` (name: the strategy, the
    values: the differing fields' values, by field); None when their rows can share a run or a page."""
    for field, name in COMPARABLE.items():
        value_a, value_b = (s.get(field, BEFORE_RECORDED.get(field)) for s in (a, b))
        if value_a != value_b:
            return "setting", name, value_a, value_b
    plugins_a, plugins_b = a.get("plugins", {}), b.get("plugins", {})
    for label in sorted(set(plugins_a) & set(plugins_b)):
        if plugins_a[label] != plugins_b[label]:
            return "plugin", label, plugins_a[label], plugins_b[label]
    recipes_a, recipes_b = a.get("recipes", {}), b.get("recipes", {})
    for label in sorted(set(recipes_a) & set(recipes_b)):
        changed = [key for key in recipes_b[label] if recipes_a[label].get(key) != recipes_b[label][key]]
        if changed:
            return "recipe", label, {k: recipes_a[label].get(k) for k in changed}, {k: recipes_b[label][k] for k in changed}
    return None


def budget_text(tuning: dict | None) -> str:
    """A run's tuning budget as --tune-budget writes it, or "none" for a run that did not tune."""
    return "none" if not tuning else f"{tuning['budget']['trials']}x{tuning['budget']['epochs']}"


def merge_configs(old: dict, new: dict) -> dict:
    """One config.json for the rows of two comparable ones (also a merged page's, robench.report.merge)."""
    merged = new | {key: _union(old.get(key, []), new[key]) for key in EXTENDABLE}
    commands = old.get("command", "").splitlines()
    merged["command"] = "\n".join(commands + [c for c in new["command"].splitlines() if c not in commands])
    merged["created"] = old.get("created", new["created"])
    merged["comparable"] = new["comparable"] | {key: old["comparable"].get(key, {}) | new["comparable"][key] for key in ("recipes", "plugins")}
    if old.get("tuning") and new.get("tuning"):  # runs of one budget (checked by both callers): every strategy's search
        merged["tuning"] = new["tuning"] | {"strategies": old["tuning"]["strategies"] | new["tuning"]["strategies"]}
    return merged


def _union(old: list, new: list) -> list:
    return list(old) + [item for item in new if item not in old]


def show(value) -> str:
    return "not set" if value is None else str(value)
