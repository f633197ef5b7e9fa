"""`robench run`: flags (and a config file or preset) turned into a RunConfig, then run."""

from __future__ import annotations

import argparse
import shlex
import sys
from datetime import datetime
from pathlib import Path

from robench.cli.parser import DEFAULT_BACKBONE, _run_parser, build_parser
from robench.core import corruption_names
from robench.errors import RobenchError


def cmd_run(args, argv) -> int:
    from robench.cli.listing import refuse_unknown

    if args.preset == "list":
        return cmd_presets(argparse.Namespace(preset=None), argv)
    # a mistyped name is answered from the cached listing, before torch and the plugins load
    refuse_unknown({"strategy": args.strategies, "attack": args.attacks, "defense": args.defenses, "dataset": args.dataset})
    corruption_names.refuse(corruption_names.expand(args.corruptions), parse_severities(args.severities))
    from robench.pipeline.runner import run

    config = config_from_args(args, argv)
    try:
        path, failed = run(config)
    except KeyboardInterrupt:
        print(f"robench: interrupted; finished cells are kept in {config.out}. To resume, type: {resume_command(argv, config.out)}",
              file=sys.stderr)
        return 130
    from robench.core.metrics import eps_label
    from robench.core.progress import shown, silenced

    for row in failed:  # also with --quiet: failures are not progress
        print(f"failed: {row['strategy']} seed {row['seed']} {row['attack']}@{eps_label(row['eps'])}: {row['error']}", file=sys.stderr)
    print(f"results: {config.out / 'results.jsonl'}")
    if silenced():  # otherwise the run's summary line names the page
        print(f"leaderboard: {shown(path)}")
    if failed:
        print(f"robench: {len(failed)} cells failed (listed above and in the leaderboard)", file=sys.stderr)
        return 1
    return 0


def _model_as_strategy(args, argv) -> None:
    """``--model FILE`` (what `robench eval` needs) is the ``given`` strategy with that file, alone."""
    if args.model is None:
        if getattr(args, "command", None) == "eval":
            raise RobenchError("robench eval needs --model FILE, the checkpoint of the model to attack (a state dict of "
                               "--backbone); to train models and attack them, use robench run")
        return
    if any(arg.split("=")[0] == "--strategies" for arg in argv):
        raise RobenchError("--model attacks one model trained elsewhere; it replaces --strategies: drop one of the two")
    if not args.model.is_file():
        raise RobenchError(f"--model {args.model} not found: pass the checkpoint file of the model to attack")
    if any(sep in str(args.model) for sep in ",:"):
        raise RobenchError(f"--model {args.model}: a path with ',' or ':' cannot be written in a strategy spec; "
                           "copy or link the file to a path without them")
    args.strategies = f"given:file={args.model}"


def resume_command(argv: list[str], out: Path) -> str:
    """The command that resumes a run: the one typed, with --out added where it was left to a
    folder named after the time, which the same command typed again would not find."""
    named = any(arg == "--out" or arg.startswith("--out=") for arg in argv)
    return shlex.join(["robench", *argv, *([] if named else ["--out", str(out)])])


def config_from_args(args, argv):
    """The RunConfig of `robench run`'s flags, with a --config file's or --preset's settings filled in;
    ``argv``, the command as typed, is recorded with the results. robench.run's keyword arguments
    arrive here as the same flags (robench.cli.keywords), so the command and the API check alike."""
    from robench.backbone import BackboneSpec
    from robench.core.names import check_name, name_from
    from robench.core.progress import set_quiet
    from robench.pipeline.models import parse_backbone
    from robench.pipeline.options import parse_specs
    from robench.pipeline.prepare import resolve_dataset
    from robench.pipeline.registry import load_registry
    from robench.pipeline.runner import RunConfig
    from robench.pipeline.tuning import parse_budget, parse_tune
    from robench.report.export import parse_formats

    if args.config is not None or args.preset is not None:
        args, argv = _with_run_file(args, argv)
    _model_as_strategy(args, argv)
    set_quiet(args.quiet)
    _positive(args, "subset", "epochs", "batch_size", "attack_batch_size", "attack_samples", "image_size")
    dataset = resolve_dataset(args.dataset)
    backbone = args.backbone or dataset.default_backbone or DEFAULT_BACKBONE
    provider, model = parse_backbone(backbone)
    image_size = args.image_size or dataset.image_size or load_registry().get("backbone", provider).factory().default_image_size(model)
    # Named after --out when given, so that running the command again (to resume) keeps one leaderboard.
    name = check_name(args.name, "--name") if args.name else name_from(
        args.out.resolve().name if args.out else f"{args.dataset}-{backbone}-{datetime.now():%Y%m%d-%H%M%S}")
    return RunConfig(
        dataset=args.dataset,
        dataset_plugin=dataset,  # resolved once, here: the plan uses it
        data_dir=args.data_dir,
        subset=args.subset,
        split_seed=args.split_seed,
        test_set=args.test_set,
        test_dir=args.test_dir,
        backbone=BackboneSpec(model, image_size, args.weights, pretrained=not dataset.offline, provider=provider),
        strategies=parse_specs(args.strategies, "strategy"),
        defenses=parse_specs(args.defenses, "defense"),
        attacks=parse_specs(args.attacks, "attack") if args.attacks.strip() else [],
        eps=parse_eps(args.eps),
        seeds=parse_seeds(args.seeds),
        corruptions=corruption_names.expand(args.corruptions),
        severities=parse_severities(args.severities),
        recipe_overrides={"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr},
        attack_batch_size=args.attack_batch_size,
        attack_samples=args.attack_samples,
        escalation=parse_escalation(args.escalation),
        tune=None if args.tune is None else parse_tune(args.tune),
        tune_budget=parse_budget(args.tune_budget),
        track=args.track,
        device=args.device,
        train_precision=args.train_precision,
        attack_precision=args.attack_precision,
        channels_last=args.channels_last,
        compile=args.compile,
        executor=args.executor,
        ray_address=args.ray_address,
        ray_gpus_per_task=args.ray_gpus_per_task,
        protocol=args.protocol,
        reference=args.reference,
        out=args.out or Path("runs") / name,
        leaderboard_dir=args.leaderboard_dir,
        force=args.force,
        formats=parse_formats(args.format),
        name=name,
        command=shlex.join(["robench", *argv]),
        threads=args.threads,
        log_json=args.log_json,
    )


def cmd_presets(args, argv) -> int:
    from robench.cli import config_file

    if args.preset is not None:
        print(config_file.preset_text(args.preset), end="")
        return 0
    found = config_file.presets()
    print("Presets shipped with robench (run one: robench run --preset NAME):")
    for name, entry in found.items():
        print(f"  {name:<22} {config_file.summary(entry.read_text())}")
    print("Copy one to edit it: robench presets NAME > my-run.toml, then: robench run --config my-run.toml")
    return 0


def _with_run_file(args, argv) -> tuple[argparse.Namespace, list[str]]:
    """Fill in the settings of --config FILE or --preset NAME that the user did not type as flags.

    Returns the arguments and the equivalent command line without the file, which is the one
    recorded in the results: a reader can re-run it without the file.
    """
    from robench.cli import config_file

    if args.config is not None and args.preset is not None:
        raise RobenchError("give --config FILE or --preset NAME, not both")
    actions = {a.dest: a for a in _run_parser()._actions if a.dest not in ("help", "config", "preset")}
    table = config_file.read_preset(args.preset) if args.preset else config_file.read_file(args.config)
    source = f"preset {args.preset}" if args.preset else f"config file {args.config}"
    from_file = config_file.flag_values(table, actions, source)
    typed = _typed_run_flags(argv)
    for dest, value in from_file.items():
        if dest not in typed:
            setattr(args, dest, value)
    command = ["run"]
    for dest, action in actions.items():
        if dest not in typed and dest not in from_file:
            continue
        value, flag = getattr(args, dest), action.option_strings[-1]
        if action.nargs != 0:
            command += [flag, str(value)]
        elif value:
            command.append(flag)
    return args, command


def _typed_run_flags(argv: list[str]) -> set[str]:
    """The dests of the run flags in ``argv``: parsed again with every default left out, so that
    argparse's defaults never pass for what the user asked."""
    parser = build_parser()
    for action in _run_parser(parser)._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def parse_eps(text: str) -> list[float]:
    """``"0.01,2/255"`` -> ``[0.01, 0.00784...]``, each checked to lie in [0, 1]."""
    from robench.pipeline.options import coerce

    values = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            value = coerce(part, float, "--eps")
        except RobenchError:
            raise RobenchError(f"--eps: {part!r} is not a number: write eps in [0, 1] like 0.01 or 2/255") from None
        if not 0 <= value <= 1:
            raise RobenchError(f"--eps: {part} is outside [0, 1]: eps is in pixel units of [0, 1] images, e.g. 0.01 or 2/255")
        values.append(value)
    if not values:
        raise RobenchError("--eps is empty: give at least one value, e.g. --eps 0.01,0.02")
    return values


def parse_severities(text) -> list[int]:
    """``--severities``: whole numbers separated by commas (checked against 1-5 when the run is planned)."""
    try:
        found = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise RobenchError(f"--severities {text!r}: give whole numbers from 1 to 5 separated by commas, e.g. 1,3,5") from None
    if not found:
        raise RobenchError("--severities is empty: give some of 1,2,3,4,5")
    return list(dict.fromkeys(found))


def parse_escalation(text) -> int | None:
    """``--escalation``: a number of rounds from 1 to MAX_ROUNDS, or ``off`` (None)."""
    from robench.pipeline.escalation import MAX_ROUNDS, ROUNDS

    text = str(text).strip().lower()
    if text in ("off", "none", "no", "false"):
        return None
    try:
        rounds = int(text)
    except ValueError:
        rounds = None
    if rounds is None or not 1 <= rounds <= MAX_ROUNDS:
        raise RobenchError(f"--escalation {text!r} is not a number of rounds from 1 to {MAX_ROUNDS}: give one "
                           f"(default {ROUNDS}), or off to keep the configured attacks' worst case alone")
    return rounds


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise RobenchError(f"--seeds {text!r}: seeds must be whole numbers separated by commas, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise RobenchError(f"--seeds {text!r}: give at least one seed, each once, e.g. 0,1,2")
    return seeds


def _positive(args, *names) -> None:
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise RobenchError(f"--{name.replace('_', '-')} must be a positive whole number, got {value}")


