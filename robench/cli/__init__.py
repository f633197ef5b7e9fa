"""The CLI room: the `robench` command: list plugins, run a benchmark, (re)write a leaderboard, get data.

Owns the flags (``parser``, ``help_text``), turning flags, a config file or a preset
(``config_file``) into a ``RunConfig`` (``run_command``), and the API's keyword arguments
(``keywords``), which become the same flags. May import every room below it: ``robench.pipeline``,
``robench.report``, ``robench.data``, ``robench.core`` and the public contracts
(tests/test_architecture.py).

Every error a user can fix is printed as one line, ``robench: error: ...``, with exit status 2.
"""

from __future__ import annotations

import errno
import os
import sys

from robench.cli.parser import KINDS, _run_parser, build_parser  # noqa: F401  (_run_parser: for config-file tests)
from robench.cli.run_command import cmd_presets, cmd_run, parse_eps, parse_seeds  # noqa: F401
from robench.core.names import check_name
from robench.errors import RobenchError, one_line


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    for stream in (sys.stdout, sys.stderr):  # an ASCII-only terminal shows a non-ASCII path escaped, not a traceback
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"list": cmd_list, "run": cmd_run, "presets": cmd_presets, "leaderboard": cmd_leaderboard,
                "plot": cmd_plot, "download": cmd_download, "site": cmd_site, "cache": cmd_cache,
                "new": cmd_new, "track": cmd_track}
    try:
        if getattr(args, "name", None) is not None:  # run, leaderboard, plot: a name, never a path
            check_name(args.name, "--name")
        return handlers[args.handler](args, argv)
    except RobenchError as exc:
        print(f"robench: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `robench list | head`: the reader left; nothing is wrong with the disk
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (Python flushes stdout at exit: not into the closed pipe)
        return 0
    except OSError as exc:  # a full disk or a read-only folder while writing a page or a plot: rows are already safe
        print(f"robench: error: {_os_error(exc, args.handler)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("robench: interrupted; finished cells are kept in the results file", file=sys.stderr)
        return 130


def _os_error(exc: OSError, handler: str) -> str:
    """One line for what the system refused: what, where, what to do."""
    where = f" ({exc.filename})" if exc.filename else ""
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        advice = "a file stands where robench needs a folder: pass another folder or move that file"
    elif exc.errno == errno.EFBIG:
        advice = "the file size limit (ulimit -f) is below what robench writes: raise it"
    else:
        advice = "free disk space or fix the folder's permissions"
    kept = "; finished cells are kept in results.jsonl and not run again" if handler == "run" else ""
    return f"{exc.strerror or exc}{where}: {advice}, then run the same command again{kept}"


def cmd_list(args, argv) -> int:
    from robench.cli.listing import cached_listing

    listing = cached_listing(list(KINDS), _describe_all)  # plugins are imported only when the cache misses
    for kind in [args.kind] if args.kind else KINDS:
        print(LIST_TITLES[kind])
        print("\n".join(listing["kinds"][kind]))
    for line in listing["failures"]:
        print(line)
    return 0


def cmd_new(args, argv) -> int:
    from robench.cli.listing import cached_listing, known_names
    from robench.cli.new_plugin import new_plugin, try_it

    taken = known_names() or cached_listing(list(KINDS), _describe_all).get("names")  # plugins load only on a cache miss
    folder = new_plugin(args.kind, args.plugin_name, args.dir, taken)
    print(f"wrote {folder}: a working {args.kind} to edit in {folder.name.replace('-', '_')}/__init__.py. Then:")
    print(f"  pip install -e {folder}\n  pytest {folder / 'tests'}\n  {try_it(args.kind, args.plugin_name)}")
    return 0


LIST_TITLES = {"strategy": "Strategies", "attack": "Attacks", "defense": "Defenses", "dataset": "Datasets",
               "backbone": "Backbone providers (--backbone PROVIDER:MODEL)"}


def _describe_all() -> dict:
    """What `robench list` prints under each kind, from the plugins themselves (this imports them)."""
    from robench.pipeline.registry import load_registry

    registry = load_registry()
    kinds = {}
    for kind in KINDS:
        lines = []
        for plugin in registry.all(kind):
            try:  # a plugin that cannot describe itself is listed as broken; the others still show
                lines += _describe_plugin(kind, plugin)
            except Exception as exc:  # noqa: BLE001
                lines.append(f"  {plugin.name:<16} from package {plugin.package!r}: broken, cannot describe itself "
                             f"({one_line(exc)})")
        kinds[kind] = lines
    failures = [f"plugin {f.entry_point!r} from package {f.package!r} failed to load: {f.error}" for f in registry.failures]
    return {"kinds": kinds, "failures": failures, "names": {kind: registry.names(kind) for kind in KINDS}}


def cmd_leaderboard(args, argv) -> int:
    from robench.core.results import run_folder
    from robench.report import leaderboard
    from robench.report.export import parse_formats

    run_dirs = [run_folder(run_dir) for run_dir in args.run_dirs]
    print(leaderboard.write(run_dirs, args.leaderboard_dir, args.name, reference=args.reference, force=args.force,
                            formats=parse_formats(args.format)))
    return 0


def cmd_plot(args, argv) -> int:
    from robench.core.results import run_folder
    from robench.report.plots import write_plots

    run_folder(args.run_dir)
    out = args.out or args.run_dir
    plots = write_plots(args.run_dir, [out], args.name)
    if not plots:
        raise RobenchError(f"nothing to plot in {args.run_dir}: its results.jsonl has no attacked cells")
    for _, file in plots:
        print(out / file)
    return 0


def cmd_site(args, argv) -> int:
    from robench.report import site

    print(site.write(args.run_dirs, args.to))
    return 0


def cmd_track(args, argv) -> int:
    from robench.report import mlflow_tracking

    print(mlflow_tracking.track(args.run_dir, args.to))
    return 0


def cmd_download(args, argv) -> int:
    from robench.pipeline.prepare import resolve_dataset
    from robench.pipeline.registry import load_registry

    dataset = resolve_dataset(args.dataset)
    if not dataset.downloadable():
        can = [p.name for p in load_registry().all("dataset") if p.factory.downloadable()]
        raise RobenchError(f"dataset {dataset.name!r} cannot be downloaded by robench: get it by hand and pass --data-dir "
                           f"(downloadable: {', '.join(can) or 'none'})")
    target = args.to or dataset.default_data_dir()
    if target is None:
        raise RobenchError(f"dataset {dataset.name!r} has no default folder: pass --to FOLDER")
    print(f"{dataset.name} is in {dataset.download(target)}; use --dataset {args.dataset} --data-dir {target}")
    return 0


def cmd_cache(args, argv) -> int:
    from robench.data.images import cache_dir, cache_files

    if args.action == "clear" and (link := next((f for f in (cache_dir(), cache_dir().parent) if f.is_symlink()), None)):
        raise RobenchError(f"{link} is a symbolic link to {link.resolve()}: `robench cache clear` deletes only in a folder of "
                           "its own, never through a link; delete the link, or point ROBENCH_CACHE_DIR at the folder itself")
    files = cache_files()
    size = f"{len(files)} files, {sum(files.values()) / 1e9:.2f} GB"
    if args.action == "clear":
        for path in files:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise RobenchError(f"cannot delete {path} ({exc.strerror}): fix the folder's permissions or delete it by hand") from None
        print(f"deleted the decoded-image cache in {cache_dir()} ({size}); runs decode their images again")
    else:
        print(f"decoded-image cache: {cache_dir()} ({size}); set ROBENCH_CACHE_DIR to move it, `robench cache clear` to empty it")
    return 0


def _describe_plugin(kind: str, plugin) -> list[str]:
    options = ", ".join(_describe_option(name, param) for name, param in plugin.options().items())
    lines = [f"  {plugin.name:<16} {plugin.description}", f"  {'':<16} from {plugin.package} {plugin.version}; options: {options or 'none'}"]
    if kind == "strategy":
        recipe = _describe_recipe(plugin.factory.recipe) if getattr(plugin.factory, "trains", True) else "none (trains nothing)"
        lines.append(f"  {'':<16} recipe: {recipe}")
    if kind == "dataset":
        lines.append(f"  {'':<16} {_describe_dataset(plugin.factory)}")
    return lines


def _describe_option(name, param) -> str:
    if param.default is param.empty:
        return name
    default = "+".join(map(str, param.default)) if isinstance(param.default, (tuple, list)) else param.default
    return f"{name}={default}"  # as it is written on the command line: lora:targets=qkv+proj


def _describe_dataset(factory) -> str:
    test_sets = ", ".join(factory.test_sets) or "none"
    download = "yes (robench data download)" if factory.downloadable() else "no"
    return f"symmetries: {factory.symmetries}; external test sets: {test_sets}; download: {download}"


def _describe_recipe(recipe) -> str:
    from dataclasses import asdict

    return " ".join(f"{key}={value}" for key, value in asdict(recipe).items())

