"""The `robench` command line's flags and help: what each command takes, with nothing run.

Kept apart from the handlers (robench.cli, robench.cli.run_command) so that a config file's keys can be
checked against the run flags without importing what runs them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from robench.cli.help_text import EXAMPLES, RUN_EXAMPLES, AddsUp, Parser

DEFAULT_BACKBONE = "vit_base_patch16_224"
PUBLISH_HELP = "also publish the page as DIR/<name>.md, e.g. leaderboards (default: only the run folder's leaderboard.md)"
TRACK_HELP = ("at the end, also log the run's settings, every cell's numbers and the page to MLflow (pip install "
              "mlflow-skinny): the store MLFLOW_TRACKING_URI names, else MLflow's default; robench/report/mlflow_tracking.py")
FORCE_HELP = "replace a page in --leaderboard-dir that was made from other runs (refused without it)"
FORMAT_HELP = "md (the page, always written), csv, json: md,csv,json also writes the page's table as .csv and .json beside it"
KINDS = ("strategy", "attack", "defense", "dataset", "backbone")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="robench", description="How robust does a pretrained ViT stay under attack, depending on how "
                    "it was fine-tuned?\nrobench fine-tunes it several ways, attacks each model and writes a leaderboard.",
                    epilog=EXAMPLES)
    parser.add_argument("--version", action="version", version=f"robench {_robench_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", aliases=["plugins"], help="list strategies, attacks, defenses, datasets and backbone providers")
    listing.add_argument("--kind", choices=KINDS, help="only this kind")
    listing.set_defaults(handler="list")

    run = commands.add_parser("run", aliases=["eval"], epilog=RUN_EXAMPLES,
                              help="train, attack and write results and a leaderboard (eval --model FILE: attack a model trained elsewhere)")
    run.add_argument("--model", type=Path, help="attack a model trained elsewhere instead of training: its checkpoint, a state dict "
                     "of --backbone with the dataset's classes, head included (= --strategies given:file=FILE)")
    run.add_argument("--config", type=Path, help="TOML file of settings, keys named like these flags; flags typed here win")
    run.add_argument("--preset", help="a run shipped with robench, by name; `list` lists them (see `robench presets`)")
    run.add_argument("--dataset", default="ham10000", help="a dataset with options: ham10000 (default), synthetic (offline), "
                     "folder or csv:group=patient (your images), ... (robench list --kind dataset)")
    run.add_argument("--data-dir", type=Path, help="the dataset's folder (HAM10000: default $ROBENCH_DATA_DIR or the download cache)")
    run.add_argument("--subset", type=int, help="use a class-stratified subset of about N images (whole lesions)")
    run.add_argument("--split-seed", type=int, default=0, help="seed of the grouped (e.g. by lesion) train/val/test split")
    run.add_argument("--test-set", default="split",
                     help="evaluate on the split's held-out part (default) or a dataset's external test set (ham10000: isic2018)")
    run.add_argument("--test-dir", type=Path, help="the external test set's folder, with --test-set")
    run.add_argument("--backbone", help=f"[PROVIDER:]MODEL: any timm model (default {DEFAULT_BACKBONE}; the micro ViT with "
                     "--dataset synthetic), or open_clip:MODEL (pip install \"robench[open_clip]\")")
    run.add_argument("--weights", type=Path, help="local weights file of the backbone (.safetensors/.pth/.bin); default: the provider's hub download")
    run.add_argument("--image-size", type=int, help="input size (default: the backbone's, e.g. 224; 32 for the micro ViT)")
    run.add_argument("--strategies", default="full", action=AddsUp, help="comma-separated, with options: full,vpt_deep:prompts=5:lr=0.5")
    run.add_argument("--defenses", default="none", action=AddsUp,
                     help="training-time defenses, each a model per strategy: none,pgd_at:eps=0.01 (default none)")
    run.add_argument("--attacks", default="fgsm", action=AddsUp, help="comma-separated, with options: fgsm,pgd:steps=20")
    run.add_argument("--eps", default="0.01,0.02", action=AddsUp, help="comma-separated eps in [0, 1] pixel units, or k/255")
    run.add_argument("--corruptions", metavar="NAMES|all",
                     help="also answer the attacked test images under MedMNIST-C's dermatoscopy corruptions "
                     "(gaussian_noise,defocus_blur,... or all; needs robench[corruptions]): rows of family corruption, the "
                     "severity in the eps column (robench/pipeline/corruptions.py)")
    run.add_argument("--severities", default="1,2,3,4,5", metavar="S,S",
                     help="the corruptions' severities, from 1 to 5 (default all five)")
    run.add_argument("--seeds", default="0", action=AddsUp, help="comma-separated integer seeds, e.g. 0,1,2")
    run.add_argument("--epochs", type=int, help="override every strategy's epochs")
    run.add_argument("--batch-size", type=int, help="override every strategy's training batch size")
    run.add_argument("--lr", type=float, help="override every strategy's learning rate")
    run.add_argument("--attack-batch-size", type=int, default=64, help="batch size of attacks (default 64)")
    run.add_argument("--attack-samples", type=int, metavar="N",
                     help="attack a class-stratified subset of N test images, the same for every model "
                     "(clean metrics still use the whole test set)")
    run.add_argument("--escalation", default="3", metavar="ROUNDS|off",
                     help="attack the images every attack left correct at an eps again, harder, for up to ROUNDS rounds "
                     "(default 3; robench/pipeline/escalation.py), so that the worst case holds against stronger attacks; off: none")
    run.add_argument("--tune", metavar="FIELDS",
                     help="search each strategy's recipe on the validation split before training, with Optuna (TPE, "
                     "successive-halving pruning): recipe fields, each strategy's declared range (lr,weight_decay) or "
                     "one given (lr=1e-5:1e-2); the chosen recipe trains every seed (robench/pipeline/tuning.py)")
    run.add_argument("--tune-budget", default="12x2", metavar="TRIALSxEPOCHS",
                     help="what --tune may spend per strategy, the same for all: trials of at most that many epochs "
                     "(default 12x2)")
    run.add_argument("--protocol", choices=["all", "correct"], default="all",
                     help="headline robust accuracy: over all test images (default) or the clean-correct subset")
    run.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    run.add_argument("--train-precision", choices=["auto", "fp32", "bf16"], default="auto",
                     help="training forward passes in bf16 autocast (weights stay fp32) or fp32; auto (default): bf16 on CUDA, fp32 on a CPU")
    run.add_argument("--attack-precision", default="fp32", metavar="fp32|bf16|fp32,bf16",
                     help="attacks' arithmetic: fp32 (default), bf16 autocast (CUDA or a CPU with native bf16), or "
                          "fp32,bf16 to run each attack in both and flag a bf16 attack weaker than its fp32 twin")
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
    run.add_argument("--leaderboard-dir", type=Path, metavar="DIR", help=PUBLISH_HELP)
    run.add_argument("--force", action="store_true", help=FORCE_HELP)
    run.add_argument("--format", default="md", help=FORMAT_HELP)
    run.add_argument("--reference", metavar="STRATEGY",
                     help="the strategy the page's paired tests compare every other with (default: each column's best)")
    run.add_argument("--track", metavar="mlflow", help=TRACK_HELP)
    run.add_argument("--quiet", action="store_true", help="no progress bars or per-cell lines")
    run.add_argument("--log-json", type=Path, metavar="FILE",
                     help="also append the run's progress as JSON events to FILE, one object per line (with --quiet too)")
    run.add_argument("--threads", type=int, metavar="N", help="torch threads of this process (default: 1 on a machine "
                     "of 1-2 CPU cores, else the cores not busy with other work; OMP_NUM_THREADS is kept)")
    run.set_defaults(handler="run")

    presets = commands.add_parser("presets", help="list the run presets shipped with robench, or print one to copy")
    presets.add_argument("preset", nargs="?", help="print this preset's TOML, e.g. to redirect into a file and edit")
    presets.set_defaults(handler="presets")

    board = commands.add_parser("leaderboard", help="(re)write the leaderboard page of a run, or merge comparable runs into one page")
    board.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN",
                       help="the --out folder of a run; several: one page of all their rows (e.g. runs of other seeds), "
                       "written into a folder beside the first, refused in one line unless the runs are comparable")
    board.add_argument("--leaderboard-dir", type=Path, metavar="DIR", help=PUBLISH_HELP)
    board.add_argument("--force", action="store_true", help=FORCE_HELP)
    board.add_argument("--format", default="md", help=FORMAT_HELP)
    board.add_argument("--name", help="page name (default: the run's name; several runs: their names joined by -and-)")
    board.add_argument("--reference", metavar="STRATEGY", help="test every strategy against this one (default: the run's, else each column's best)")
    board.set_defaults(handler="leaderboard")

    plot = commands.add_parser("plot", help="(re)make the accuracy-vs-eps PNGs of a run directory, one per attack")
    plot.add_argument("run_dir", type=Path)
    plot.add_argument("--out", type=Path, help="folder for the PNGs (default: the run directory)")
    plot.add_argument("--name", help="file name prefix, as the leaderboard's --name (default: the run's name)")
    plot.set_defaults(handler="plot")

    site = commands.add_parser("site", help="write a static HTML leaderboard (sortable, filterable, offline) of runs into a folder")
    site.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN",
                      help="the --out folder of a robench run; several comparable runs make one table (as `robench leaderboard`)")
    site.add_argument("--to", type=Path, required=True, metavar="DIR", help="folder for index.html and its files (created if missing)")
    site.set_defaults(handler="site")

    track = commands.add_parser("track", help="log a run's settings, numbers and page to MLflow (what run --track mlflow does at its end)")
    track.add_argument("run_dir", type=Path, metavar="RUN", help="the --out folder of a run")
    track.add_argument("--to", default="mlflow", metavar="mlflow", help="the tracker: mlflow (default)")
    track.set_defaults(handler="track")

    data_cmd = commands.add_parser("data", help="get datasets").add_subparsers(dest="data_command", required=True)
    download = data_cmd.add_parser("download", help="download a dataset release, checksum-verified and resumable")
    download.add_argument("dataset", help="a dataset that can be downloaded, e.g. ham10000")
    download.add_argument("--to", type=Path, help="target folder (default: $ROBENCH_DATA_DIR or the per-user cache)")
    download.set_defaults(handler="download")

    new = commands.add_parser("new", help="write a pip-installable plugin package to start from: robench new attack my_attack")
    new.add_argument("kind", help="strategy, attack or defense")
    new.add_argument("plugin_name", metavar="NAME", help="the plugin's name on the command line, e.g. my_attack")
    new.add_argument("--dir", type=Path, default=Path("."), help="folder to write robench-NAME/ into (default: here)")
    new.set_defaults(handler="new")

    cache = commands.add_parser("cache", help="show (info) or empty (clear) the decoded-image cache; see docs/caches.md")
    cache.add_argument("action", nargs="?", choices=["info", "clear"], default="info",
                       help="info (default): where it is and its size; clear: delete the decoded images (runs decode again)")
    cache.set_defaults(handler="cache")
    return parser


def _run_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices["run"]


def _robench_version() -> str:
    from robench import __version__

    return __version__


