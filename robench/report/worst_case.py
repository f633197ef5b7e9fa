"""The worst case over attacks, per image: the number a leaderboard ranks by.

An image counts as robust at an eps only if it survives *every* attack of one norm run at that
eps on that model, as AutoAttack reports its ensemble (Croce & Hein 2020). This is not the minimum
of the attack columns: two attacks that each leave 10% correct may leave different images correct,
and the worst case is then below both. It is computed from the per-image predictions every attacked
row carries (``adv_pred``, robench.pipeline.evaluate.attack_sweep) and the attacked images' labels in
config.json (``attacked``), so it needs no attack of its own and costs nothing to add.

Attacks of different norms are never combined: eps 0.5 is a small ball in L2 but, in L-inf, one
that reaches the same uniform grey image from every image, so "survives both at eps 0.5" means
nothing. Each norm gets its own worst case, labelled
``worst case`` for L-inf (as pages always have) and ``worst case (L2)`` for L2.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from robench.attack import CLEAN, LEGACY_NORM, NORMS
from robench.core.metrics import robust_metrics
from robench.core.results import attack_norms

WORST = "worst case"  # the attack label of the derived L-inf rows
MIN_ATTACKS = 2  # with one attack at an eps, the worst case is that attack's column


def worst_label(norm: str) -> str:
    """The attack label of the worst case over the attacks of ``norm``."""
    return WORST if norm == "Linf" else f"{WORST} ({norm})"


WORST_LABELS = {worst_label(norm): norm for norm in NORMS}  # label -> its norm, L-inf's first


def norm_of(frame: pd.DataFrame, attack: str) -> str:
    """The norm of an attack label of ``frame``, a worst-case one included ("Linf" for old rows)."""
    if attack in WORST_LABELS:
        return WORST_LABELS[attack]
    norms = attack_norms(frame)[frame["attack"] == attack]
    return norms.iloc[0] if len(norms) else LEGACY_NORM


def survived(frame: pd.DataFrame, labels, column: str = "adv_pred") -> pd.Series:
    """Per row: a boolean array, True where the image is classified correctly after the attack (or,
    with ``column="clean_pred"``, before it); None for a row without records of these images."""
    labels = np.asarray(labels)

    def one(preds):
        if not isinstance(preds, list | np.ndarray) or len(preds) != len(labels):
            return None
        return np.asarray(preds) == labels

    return frame[column].map(one) if column in frame else pd.Series([None] * len(frame), index=frame.index)


def worst_case_rows(frame: pd.DataFrame, labels) -> pd.DataFrame:
    """One row per (strategy, seed, eps, norm) with at least MIN_ATTACKS ok attacked rows of that norm
    that carry per-image predictions; its metrics are those of the per-image worst case over them."""
    if labels is None or frame.empty:
        return frame.iloc[0:0]
    ok = frame[(frame["status"] == "ok") & (frame["attack"] != CLEAN) & ~frame["attack"].isin(WORST_LABELS)]
    ok = ok.drop_duplicates(["strategy", "seed", "attack", "eps"], keep="last")
    ok = ok.assign(_survived=survived(ok, labels), _norm=attack_norms(ok))
    ok = ok[ok["_survived"].notna()]
    label_tensor = np.asarray(labels)
    rows = []
    for (_, _, _, norm), group in ok.groupby(["strategy", "seed", "eps", "_norm"], sort=False):
        if group["attack"].nunique() < MIN_ATTACKS:
            continue
        alive = np.logical_and.reduce(list(group["_survived"]))
        preds = np.stack([np.asarray(p) for p in group["adv_pred"]])
        # per image: the true class where it survived every attack, else the first attack's wrong answer
        worst_pred = np.where(alive, label_tensor, preds[np.argmax(preds != label_tensor, axis=0), np.arange(len(alive))])
        first = group.iloc[0].drop(["_survived", "_norm"]).to_dict()
        metrics = robust_metrics(torch.as_tensor(label_tensor), torch.as_tensor(alive), int(first["n_clean_correct"]))
        label = worst_label(norm)
        rows.append(first | metrics | {
            "attack": label, "attack_name": label, "attack_family": None, "attack_black_box": None,
            "attack_norm": norm, "attack_seconds": float(group["attack_seconds"].sum()),
            "adv_pred": worst_pred.tolist(),
            "ece": None, "nll": None,  # per image a different attack's answer: no one model output to calibrate
        })
    return pd.DataFrame(rows, columns=frame.columns) if rows else frame.iloc[0:0]


def with_worst_case(frame: pd.DataFrame, labels) -> pd.DataFrame:
    """``frame`` with the worst-case rows appended (none when no eps has two attacks of a norm with records)."""
    extra = worst_case_rows(frame, labels)
    return pd.concat([frame, extra], ignore_index=True) if len(extra) else frame
