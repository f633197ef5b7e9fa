"""The provenance list under a page's headline: what a reader needs to trust or reproduce its numbers
(data, split, backbone, seeds, versions, device, precision, how recipes were chosen, the command)."""

from __future__ import annotations

from collections.abc import Mapping

from robench.core.names import fence
from robench.defense import NONE
from robench.report.board import human_count
from robench.report.summary import DEFAULT_PROTOCOL, UNKNOWN


def header(config: Mapping) -> str:
    """What a reader needs to trust or reproduce the numbers, as a markdown list."""

    def get(*keys):
        value = config
        for key in keys:
            value = value.get(key) if isinstance(value, Mapping) else None
        return UNKNOWN if value is None else value

    def join(values):
        return UNKNOWN if values == UNKNOWN else ", ".join(str(v) for v in values)

    sha = get("backbone", "weights_sha256")
    versions = {"robench": config.get("robench_version"), **(config.get("versions") or {})}
    version_text = ", ".join(
        f"{package} {versions.get(package) or UNKNOWN}"
        for package in ("robench", "torch", "timm", "torchattacks", "peft", "python")
    )
    params = get("backbone", "params")
    lines = [
        f"- **dataset**: {get('dataset', 'name')}: {get('dataset', 'description')}",
        (f"- **split**: seed {get('split', 'seed')}, fingerprint `{get('split', 'fingerprint')}`, "
         f"{get('split', 'n_train')} train / {get('split', 'n_val')} val / {get('split', 'n_test')} test; "
         f"test set: {get('split', 'test_set')}"),
        (f"- **backbone**: {get('backbone', 'name')} "
         f"({params if params == UNKNOWN else human_count(params)} params), "
         f"weights `{get('backbone', 'weights')}` (sha256 {sha if sha == UNKNOWN else sha[:12]}), "
         f"image size {get('backbone', 'image_size')}"),
        f"- **seeds**: {join(get('seeds'))}",
        f"- **versions**: {version_text}",
        f"- **device**: {get('device')}",
        f"- **precision**: training {get('precision', 'train')}, attacks {get('precision', 'attack')}"
        + (" (bf16: autocast, weights fp32)" if "bf16" in f"{get('precision', 'train')},{get('precision', 'attack')}" else ""),
        f"- **created**: {get('created')}",
        f"- **protocol**: {config.get('protocol') or DEFAULT_PROTOCOL}",
    ]
    runs = config.get("runs") or ()
    if len(runs) > 1:
        lines.append(f"- **merged from {len(runs)} runs** (robench.report.merge; their commands below): " + "; ".join(
            f"`{run['name']}` (seeds {join(run.get('seeds') or UNKNOWN)}, created {run.get('created') or UNKNOWN})"
            for run in runs))
    defenses = [defense for defense in config.get("defenses") or () if defense != NONE]
    if defenses:
        lines.append(f"- **defenses** (adversarial training; a row `strategy + defense` trained under it): {', '.join(defenses)}")
    tuned = tuning_line(config.get("tuning"))
    if tuned:
        lines.append(tuned)
    shifts = config.get("corruptions")
    if shifts:
        lines.append(f"- **corruptions** (MedMNIST-C, dermamnist parameters): {', '.join(shifts['names'])} at severities "
                     f"{', '.join(map(str, shifts['severities']))}")
    subset = config.get("attack_samples")
    if subset:
        lines.append(f"- **attacks**: on a class-stratified subset of {subset['n']} of {subset['of']} test images, "
                     f"the same for every strategy and seed; clean acc and balanced acc use all {subset['of']}")
    command = str(get("command"))
    return "\n".join(lines) + f"\n\nCommand:\n\n{fence(command)}\n{command}\n{fence(command)}"


def tuning_line(record: dict | None) -> str | None:
    """The page header's line: how each recipe was chosen (None for a run that did not tune)."""
    if not record:
        return None
    budget = record["budget"]
    parts = []
    for label, found in record["strategies"].items():
        values = ", ".join(f"{name} {value:.3g}" for name, value in found["chosen"].items())
        parts.append(f"{label}: {values} chosen from {len(found['trials'])} trials on validation "
                     f"(balanced accuracy {100 * found['value']:.1f}%)")
    return (f"- **recipes tuned** (`--tune`, the same budget for every strategy: {budget['trials']} trials of at most "
            f"{budget['epochs']} epochs, {record['sampler']} with {record['pruner']}, on the validation split, seed "
            f"{record['seed']}): " + "; ".join(parts))
