"""The `robench` command: list plugins, run a benchmark, (re)write a leaderboard, get data.

Every error a user can fix is printed as one line, ``robench: error: ...``, with exit status 2.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from datetime import datetime
from pathlib import Path

from robench.errors import RobenchError

SYNTHETIC_BACKBONE, SYNTHETIC_IMAGE_SIZE = "robench_vit_micro", 32
DEFAULT_BACKBONE, DEFAULT_IMAGE_SIZE = "vit_base_patch16_224", 224


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args, argv)
    except RobenchError as exc:
        print(f"robench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("robench: interrupted; finished cells are kept in the results file", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robench", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"robench {_robench_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", aliases=["plugins"], help="list strategies, attacks and defenses and where they come from")
    listing.add_argument("--kind", choices=["strategy", "attack", "defense"], help="only this kind")
    listing.set_defaults(handler=cmd_list)

    run = commands.add_parser("run", help="train, attack and write results and a leaderboard")
    run.add_argument("--config", type=Path, help="TOML file of settings, keys named like these flags; flags typed here win")
    run.add_argument("--preset", help="a run shipped with robench, by name; `list` lists them (see `robench presets`)")
    run.add_argument("--dataset", default="ham10000", help="ham10000 (default) or synthetic (offline, no files needed)")
    run.add_argument("--data-dir", type=Path, help="HAM10000 folder (default: $ROBENCH_DATA_DIR or the download cache)")
    run.add_argument("--subset", type=int, help="use a class-stratified subset of about N images (whole lesions)")
    run.add_argument("--split-seed", type=int, default=0, help="seed of the lesion-grouped train/val/test split")
    run.add_argument("--test-set", choices=["split", "isic2018"], default="split",
                     help="evaluate on the split's held-out lesions (default) or the official ISIC 2018 Task 3 test set")
    run.add_argument("--test-dir", type=Path, help="ISIC 2018 Task 3 test folder, with --test-set isic2018")
    run.add_argument("--backbone", help=f"any timm ViT (default {DEFAULT_BACKBONE}; {SYNTHETIC_BACKBONE} with --dataset synthetic)")
    run.add_argument("--weights", type=Path, help="local timm weights file (.safetensors/.pth); default: timm's hub download")
    run.add_argument("--image-size", type=int, help=f"input size (default {DEFAULT_IMAGE_SIZE}; {SYNTHETIC_IMAGE_SIZE} for synthetic)")
    run.add_argument("--strategies", default="full", help="comma-separated, with options: full,vpt_deep:prompts=5:lr=0.5")
    run.add_argument("--defenses", default="none",
                     help="training-time defenses, each a model per strategy: none,pgd_at:eps=0.01 (default none)")
    run.add_argument("--attacks", default="fgsm", help="comma-separated, with options: fgsm,pgd:steps=20")
    run.add_argument("--eps", default="0.01,0.02", help="comma-separated eps in [0, 1] pixel units, or k/255")
    run.add_argument("--seeds", default="0", help="comma-separated integer seeds, e.g. 0,1,2")
    run.add_argument("--epochs", type=int, help="override every strategy's epochs")
    run.add_argument("--batch-size", type=int, help="override every strategy's training batch size")
    run.add_argument("--lr", type=float, help="override every strategy's learning rate")
    run.add_argument("--attack-batch-size", type=int, default=64, help="batch size of attacks (default 64)")
    run.add_argument("--attack-samples", type=int, metavar="N",
                     help="attack a class-stratified subset of N test images, the same for every model "
                     "(clean metrics still use the whole test set)")
    run.add_argument("--protocol", choices=["all", "correct"], default="all",
                     help="headline robust accuracy: over all test images (default) or the clean-correct subset")
    run.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    run.add_argument("--train-precision", choices=["auto", "fp32", "bf16"], default="auto",
                     help="training forward passes in bf16 autocast (weights stay fp32) or fp32; auto (default): bf16 on CUDA, fp32 on a CPU")
    run.add_argument("--attack-precision", choices=["fp32", "bf16"], default="fp32",
                     help="attack forward passes in fp32 (default) or bf16 autocast (CUDA only)")
    run.add_argument("--channels-last", action="store_true", help="channels-last memory layout for images and convolution weights")
    run.add_argument("--compile", action="store_true", help="torch.compile the model while it trains (pays off on long GPU runs)")
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="run the models one after another here (default) or in parallel on Ray (pip install \"robench[ray]\")")
    run.add_argument("--ray-address", metavar="ADDRESS",
                     help="join this Ray cluster (e.g. auto, or ray://HOST:10001); default: start a local Ray instance")
    run.add_argument("--ray-gpus-per-task", type=float, metavar="SHARE",
                     help="share of a GPU each model reserves on Ray, e.g. 0.25 for four models per GPU (default 1 on CUDA)")
    run.add_argument("--out", type=Path, help="run directory (default runs/<name>); running again on it resumes the run")
    run.add_argument("--name", help="leaderboard name (default: the --out folder's name, else <dataset>-<backbone>-<time>)")
    run.add_argument("--leaderboard-dir", type=Path, default=Path("leaderboards"), help="where the markdown goes")
    run.add_argument("--reference", metavar="STRATEGY",
                     help="the strategy the page's paired tests compare every other with (default: each column's best)")
    run.add_argument("--quiet", action="store_true", help="no progress bars or per-cell lines")
    run.set_defaults(handler=cmd_run)

    presets = commands.add_parser("presets", help="list the run presets shipped with robench, or print one to copy")
    presets.add_argument("preset", nargs="?", help="print this preset's TOML, e.g. to redirect into a file and edit")
    presets.set_defaults(handler=cmd_presets)

    board = commands.add_parser("leaderboard", help="(re)write the markdown leaderboard of a run directory")
    board.add_argument("run_dir", type=Path)
    board.add_argument("--leaderboard-dir", type=Path, default=Path("leaderboards"))
    board.add_argument("--name", help="file name (default: the run's name)")
    board.add_argument("--reference", metavar="STRATEGY", help="test every strategy against this one (default: the run's, else each column's best)")
    board.set_defaults(handler=cmd_leaderboard)

    plot = commands.add_parser("plot", help="(re)make the accuracy-vs-eps PNGs of a run directory, one per attack")
    plot.add_argument("run_dir", type=Path)
    plot.add_argument("--out", type=Path, help="folder for the PNGs (default: the run directory)")
    plot.add_argument("--name", help="file name prefix, as the leaderboard's --name (default: the run's name)")
    plot.set_defaults(handler=cmd_plot)

    data_cmd = commands.add_parser("data", help="get datasets").add_subparsers(dest="data_command", required=True)
    download = data_cmd.add_parser("download", help="download a dataset release, checksum-verified and resumable")
    download.add_argument("dataset", choices=["ham10000"])
    download.add_argument("--to", type=Path, help="target folder (default: $ROBENCH_DATA_DIR or the per-user cache)")
    download.set_defaults(handler=cmd_download)
    return parser


def cmd_list(args, argv) -> int:
    from robench.registry import load_registry

    registry = load_registry()
    for kind in [args.kind] if args.kind else ["strategy", "attack", "defense"]:
        print({"strategy": "Strategies", "attack": "Attacks", "defense": "Defenses"}[kind])
        for plugin in registry.all(kind):
            options = ", ".join(_describe_option(name, param) for name, param in plugin.options().items())
            print(f"  {plugin.name:<16} {plugin.description}")
            print(f"  {'':<16} from {plugin.package}; options: {options or 'none'}")
            if kind == "strategy":
                print(f"  {'':<16} recipe: {_describe_recipe(plugin.factory.recipe)}")
    for failure in registry.failures:
        print(f"plugin {failure.entry_point!r} from package {failure.package!r} failed to load: {failure.error}")
    return 0


def cmd_run(args, argv) -> int:
    from robench.backbone import BackboneSpec
    from robench.options import parse_specs
    from robench.progress import set_quiet
    from robench.runner import RunConfig, run

    if args.preset == "list":
        return cmd_presets(argparse.Namespace(preset=None), argv)
    if args.config is not None or args.preset is not None:
        args, argv = _with_run_file(args, argv)
    set_quiet(args.quiet)
    synthetic = args.dataset == "synthetic"
    backbone = args.backbone or (SYNTHETIC_BACKBONE if synthetic else DEFAULT_BACKBONE)
    image_size = args.image_size or (SYNTHETIC_IMAGE_SIZE if synthetic and backbone == SYNTHETIC_BACKBONE else DEFAULT_IMAGE_SIZE)
    if args.test_set == "isic2018" and args.test_dir is None:
        raise RobenchError("--test-set isic2018 needs --test-dir, the folder with ISIC2018_Task3_Test_GroundTruth.csv and images/")
    _positive(args, "subset", "epochs", "batch_size", "attack_batch_size", "attack_samples", "image_size")
    # Named after --out when given, so that running the command again (to resume) keeps one leaderboard.
    name = args.name or (args.out.resolve().name if args.out else f"{args.dataset}-{backbone}-{datetime.now():%Y%m%d-%H%M%S}")
    config = RunConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        subset=args.subset,
        split_seed=args.split_seed,
        test_set=args.test_set,
        test_dir=args.test_dir,
        backbone=BackboneSpec(backbone, image_size, args.weights, pretrained=not synthetic),
        strategies=parse_specs(args.strategies, "strategy"),
        defenses=parse_specs(args.defenses, "defense"),
        attacks=parse_specs(args.attacks, "attack") if args.attacks.strip() else [],
        eps=parse_eps(args.eps),
        seeds=parse_seeds(args.seeds),
        recipe_overrides={"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr},
        attack_batch_size=args.attack_batch_size,
        attack_samples=args.attack_samples,
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
        name=name,
        command=shlex.join(["robench", *argv]),
    )
    path, failed = run(config)
    for row in failed:  # also with --quiet: failures are not progress
        print(f"failed: {row['strategy']} seed {row['seed']} {row['attack']}@{row['eps']}: {row['error']}", file=sys.stderr)
    print(f"results: {config.out / 'results.jsonl'}\nleaderboard: {path}")
    if failed:
        print(f"robench: {len(failed)} cells failed (listed above and in the leaderboard)", file=sys.stderr)
        return 1
    return 0


def cmd_presets(args, argv) -> int:
    from robench import config_file

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
    from robench import config_file

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


def _run_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices["run"]


def _typed_run_flags(argv: list[str]) -> set[str]:
    """The dests of the run flags in ``argv``: parsed again with every default left out, so that
    argparse's defaults never pass for what the user asked."""
    parser = build_parser()
    for action in _run_parser(parser)._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def cmd_leaderboard(args, argv) -> int:
    from robench import leaderboard

    if not args.run_dir.is_dir():
        raise RobenchError(f"run directory {args.run_dir} not found: pass the --out folder of a robench run")
    print(leaderboard.write(args.run_dir, args.leaderboard_dir, args.name, reference=args.reference))
    return 0


def cmd_plot(args, argv) -> int:
    from robench.plots import write_plots

    if not args.run_dir.is_dir():
        raise RobenchError(f"run directory {args.run_dir} not found: pass the --out folder of a robench run")
    out = args.out or args.run_dir
    plots = write_plots(args.run_dir, [out], args.name)
    if not plots:
        raise RobenchError(f"nothing to plot in {args.run_dir}: its results.jsonl has no attacked cells")
    for _, file in plots:
        print(out / file)
    return 0


def cmd_download(args, argv) -> int:
    from robench.data.download import download_ham10000
    from robench.data.ham10000 import default_data_dir

    target = args.to or default_data_dir()
    print(f"HAM10000 is in {download_ham10000(target)}; use --data-dir {target} or set ROBENCH_DATA_DIR")
    return 0


def parse_eps(text: str) -> list[float]:
    """``"0.01,2/255"`` -> ``[0.01, 0.00784...]``, each checked to lie in [0, 1]."""
    from robench.options import coerce

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


def _describe_option(name, param) -> str:
    if param.default is param.empty:
        return name
    default = "+".join(map(str, param.default)) if isinstance(param.default, (tuple, list)) else param.default
    return f"{name}={default}"  # as it is written on the command line: lora:targets=qkv+proj


def _describe_recipe(recipe) -> str:
    from dataclasses import asdict

    return " ".join(f"{key}={value}" for key, value in asdict(recipe).items())


def _robench_version() -> str:
    from robench import __version__

    return __version__


if __name__ == "__main__":
    sys.exit(main())
