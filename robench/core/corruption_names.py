"""MedMNIST-C's dermatology corruption names and severities, without torch or MedMNIST-C: what the
command line checks before anything heavy loads (robench.pipeline.corruptions applies them)."""

from __future__ import annotations

from robench.errors import RobenchError, did_you_mean

FAMILY = "corruption"  # the attack_family of a corruption row
SEVERITIES = (1, 2, 3, 4, 5)
# MedMNIST-C 0.1's dermatology corruptions (its registry's "dermamnist" entry), named here so that a
# typo is refused before the package, scikit-image, OpenCV and ImageMagick load
NAMES = ("pixelate", "jpeg_compression", "gaussian_noise", "speckle_noise", "impulse_noise", "shot_noise", "defocus_blur",
         "motion_blur", "zoom_blur", "brightness_up", "brightness_down", "contrast_up", "contrast_down", "black_corner",
         "characters")
ALL = "all"


def expand(text: str | None) -> list[str]:
    """``--corruptions``: names separated by commas, or ``all``."""
    names = list(dict.fromkeys(n.strip() for n in (text or "").split(",") if n.strip()))  # one cell per name
    return list(NAMES) if names == [ALL] else names


def refuse(names: list[str], severities: list[int]) -> None:
    """An unknown corruption or a severity outside 1-5, in one line."""
    for name in names:
        if name not in NAMES:
            raise RobenchError(f"unknown corruption {name!r}: {did_you_mean(name, NAMES)}use {ALL} or some of {', '.join(NAMES)}")
    for severity in severities:
        if severity not in SEVERITIES:
            raise RobenchError(f"severity {severity} is outside 1-5: MedMNIST-C defines five severities, e.g. --severities 1,3,5")
