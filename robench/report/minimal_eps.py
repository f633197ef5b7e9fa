"""What a minimal-perturbation attack's records say: per image eps*, and the numbers a page derives.

A minimal attack (robench.attack.MinimalAttack) records, for each attacked image, eps*: the radius,
in the attack's norm, of the smallest adversarial example it found (0 for an image the model already gets
wrong, None, read here as inf, where it found none up to eps_max). From them, per strategy:

- **median eps*** over the attacked images the model got right before the attack (eps* > 0),
  mean over seeds: how far a typical correct decision is from a flip. Over all images it would
  be 0 for any model below 50% clean accuracy and rank nothing;
- **AUC**: the area under the robust-accuracy curve acc(eps) = share of images with eps* > eps,
  from 0 to eps_max, divided by eps_max, i.e. the mean of min(eps*, eps_max) / eps_max;
- a 95% interval for each: the same two-level bootstrap as every robust accuracy (seeds and
  images drawn with replacement, B = 2000, percentile), robench.report.uncertainty.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from robench.attack import MINIMAL
from robench.core.names import markdown_table
from robench.report.uncertainty import LEVEL, REPLICATES, SEED
from robench.report.worst_case import norm_of


def eps_star(frame: pd.DataFrame, strategy: str, attack: str) -> tuple[np.ndarray, float] | None:
    """(seeds x images matrix of eps*, inf where none was found; eps_max) of one strategy's minimal
    attack, from one ok row per seed (they all carry the same records); None without records."""
    rows = frame[(frame["strategy"] == strategy) & (frame["attack"] == attack) & (frame["status"] == "ok")]
    if "min_eps" not in rows:
        return None
    rows = rows[rows["min_eps"].map(lambda v: isinstance(v, list | np.ndarray))].drop_duplicates("seed", keep="last")
    if rows.empty or len({len(v) for v in rows["min_eps"]}) != 1:
        return None
    matrix = np.array([[math.inf if e is None or (isinstance(e, float) and math.isnan(e)) else e for e in v]
                       for v in rows["min_eps"]], dtype=float)
    return matrix, float(rows["eps_max"].iloc[0])


def curve(matrix: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """Robust accuracy at each eps, mean over seeds: the share of images with eps* > eps."""
    return (matrix[:, :, None] > eps[None, None, :]).mean(1).mean(0)


def median_and_auc(matrix: np.ndarray, eps_max: float) -> dict[str, tuple[float, float, float]]:
    """{"median": (value, low, high), "auc": (...)}; the median may be inf (most images survive eps_max)."""
    capped = np.minimum(matrix, 2 * eps_max)  # above eps_max the exact value is unknown; any stand-in above it
    rng = np.random.default_rng(SEED)
    n_seeds, n_images = matrix.shape
    images = rng.integers(n_images, size=(REPLICATES, n_images))
    seeds = rng.integers(n_seeds, size=(REPLICATES, n_seeds))
    drawn = capped[:, images]  # (S, B, N)
    correct = np.where(drawn > 0, drawn, np.nan)  # eps* = 0: wrong before the attack
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a draw without a correct image: NaN, left out
        medians = np.nanmedian(correct, axis=2)  # (S, B)
        point_median = np.nanmedian(np.where(capped > 0, capped, np.nan), axis=1).mean()
    aucs = (np.minimum(drawn, eps_max) / eps_max).mean(2)
    out = {}
    for key, per_seed, point in (("median", medians, point_median),
                                 ("auc", aucs, (np.minimum(capped, eps_max) / eps_max).mean())):
        replicates = per_seed[seeds.T, np.arange(REPLICATES)].mean(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # no correct image in any draw: undefined, NaN
            low, high = np.nanquantile(replicates, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
        values = tuple(float(v) for v in (point, low, high))
        out[key] = tuple(math.inf if v > eps_max else v for v in values) if key == "median" else values
    return out


def minimal_attacks(frame: pd.DataFrame) -> list[str]:
    """The attack labels of the frame's minimal attacks, in order of appearance."""
    if "attack_family" not in frame:
        return []
    return list(dict.fromkeys(frame.loc[frame["attack_family"] == MINIMAL, "attack"]))


def section(frame: pd.DataFrame, strategies: Sequence[str]) -> str:
    """The page's minimal-perturbation table, one per minimal attack; "" without one."""
    parts = []
    for attack in minimal_attacks(frame):
        lines = []
        for strategy in strategies:
            found = eps_star(frame, strategy, attack)
            if found is None:
                continue
            matrix, eps_max = found
            stats = median_and_auc(matrix, eps_max)
            lines.append({"strategy": strategy, "median eps* of clean-correct images (×255)": median_text(stats["median"], eps_max),
                          f"AUC to {255 * eps_max:g}/255 (%)": _pct(stats["auc"]),
                          "not fooled up to eps_max (%)": f"{100 * np.isinf(matrix).mean():.1f}",
                          "seeds × images": f"{matrix.shape[0]} × {matrix.shape[1]}"})
        if lines:
            norm = norm_of(frame, attack)
            named = f"`{attack}`" + ("" if norm == "Linf" else f" (eps* in {norm})")
            parts.append(f"Under {named}:\n\n" + markdown_table(pd.DataFrame(lines)))
    if not parts:
        return ""
    return ("## Minimal perturbation\n\nPer image, eps* is the L∞ radius (unless another norm is named) of the "
            "smallest adversarial example the minimal attack found (0 for an image wrong before the attack); the "
            "robust accuracy at any eps is the share of images with eps* > eps, drawn as a curve in the attack's "
            "plot. Median eps* (in /255, mean over seeds of the per-seed median over the attacked images the model "
            "got right before the attack) and AUC (area under that curve from 0 to eps_max, over eps_max) with 95% intervals from the two-level bootstrap over seeds and images "
            "(docs/protocol.md). `>eps_max`: more than half of them survived eps_max.\n\n" + "\n\n".join(parts))


def median_text(stat: tuple[float, float, float], eps_max: float) -> str:
    if math.isnan(stat[0]):
        return "n/a (no image right before the attack)"

    def show(v):
        return f">{255 * eps_max:g}" if math.isinf(v) else f"{255 * v:.3f}"
    value, low, high = stat
    return f"{show(value)} [{show(low)}, {show(high)}]"


def _pct(stat: tuple[float, float, float]) -> str:
    value, low, high = stat
    return f"{100 * value:.1f} [{100 * low:.1f}, {100 * high:.1f}]"
