"""A newcomer's paper cuts, each fixed and kept fixed: plurals, did-you-mean for a name in the
wrong case or cut short, list flags that add up, eps shown as k/255, a Ctrl-C that says how to
resume, and a --help with examples that work and the defaults shown."""

from __future__ import annotations

import re
import shlex

import pytest

from robench.cli import main
from robench.cli.help_text import EXAMPLES, RUN_EXAMPLES
from robench.cli.parser import _run_parser, build_parser
from robench.errors import PluginError, did_you_mean
from robench.pipeline.options import parse_specs
from tests.test_cli import FAST, run_cli


@pytest.mark.parametrize(("argv", "message"), [
    (["--strategies", "fulll"], "unknown strategy 'fulll': did you mean full? valid strategies: full, given, linear_probe"),
    (["--attacks", "PGD"], "unknown attack 'PGD': did you mean pgd? valid attacks:"),
    (["--defenses", "TRADES"], "unknown defense 'TRADES': did you mean trades? valid defenses:"),
    (["--backbone", "vit_tiny"], "unknown backbone 'vit_tiny': did you mean vit_tiny_patch16_224, vit_tiny_patch16_384"),
])
def test_an_unknown_name_suggests_the_one_meant_in_plain_english(capsys, tmp_path, argv, message):
    code, _, err = run_cli(capsys, "run", *FAST, "--out", str(tmp_path / "r"), *argv)
    assert code == 2 and err.count("\n") == 1 and message in err


def test_did_you_mean_prefers_the_same_name_then_names_it_begins():
    assert did_you_mean("FGSM", ["autoattack", "fgsm"]) == "did you mean fgsm? "
    assert did_you_mean("lin", ["full", "linear_probe", "lora"]) == "did you mean linear_probe? "
    assert did_you_mean("zzz", ["full", "lora"]) == ""
    with pytest.raises(PluginError, match=r"no strategy given: name at least one, e\.g\. --strategies NAME"):
        parse_specs(",", "strategy")


def test_list_flags_typed_twice_add_up_instead_of_keeping_the_last():
    from robench.cli.run_command import config_from_args

    argv = ["run", "--dataset", "synthetic", "--eps", "0.01", "--eps", "2/255", "--seeds", "0", "--seeds", "1,2",
            "--attacks", "fgsm", "--attacks", "pgd:steps=2"]
    config = config_from_args(build_parser().parse_args(argv), argv)
    assert config.eps == [0.01, 2 / 255] and config.seeds == [0, 1, 2]
    assert [spec.label for spec in config.attacks] == ["fgsm", "pgd(steps=2)"]
    assert build_parser().parse_args(["run"]).eps == "0.01,0.02"  # untyped: the default, once
    assert build_parser().parse_args(["run", "--seeds", "0"]).seeds == "0"


def test_eps_of_k_over_255_is_shown_as_k_over_255_in_the_run_lines():
    from robench.pipeline.runner import _summary_line

    row = {"status": "ok", "attack": "fgsm", "clean_acc": 0.5, "clean_bacc": 0.4}
    line = _summary_line("full", 0, [row | {"attack": "none", "eps": 0.0, "robust_acc": 0.5},
                                     row | {"eps": 8 / 255, "robust_acc": 0.25}, row | {"eps": 0.01, "robust_acc": 0.3}])
    assert "robust fgsm@8/255 25.0%, fgsm@0.01 30.0%" in line


@pytest.mark.parametrize("out", [None, "mine"])
def test_ctrl_c_says_which_command_resumes_the_run(capsys, monkeypatch, tmp_path, out):
    import robench.pipeline.runner

    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(robench.pipeline.runner, "run", interrupted)
    monkeypatch.chdir(tmp_path)
    argv = ["run", "--dataset", "synthetic", "--eps", "8/255", *(["--out", out] if out else [])]
    code, _, err = run_cli(capsys, *argv)
    assert code == 130 and err.count("\n") == 1
    command = err.split("To resume, type: ")[1].strip()
    if out:
        assert command == shlex.join(["robench", *argv])  # the same command
    else:  # the run folder was named after the time: the command names it
        assert re.fullmatch(r"robench run --dataset synthetic --eps 8/255 --out runs/synthetic-robench_vit_micro-\d{8}-\d{6}", command)


def test_help_shows_examples_and_every_default(capsys):
    for argv in (["--help"], ["run", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "examples:\n  robench run --dataset synthetic" in capsys.readouterr().out
    run_help = _run_parser().format_help()
    for default in ("(default: 0.01,0.02)", "(default: fgsm)", "(default: 0)", "(default: md)"):
        assert default in " ".join(run_help.split())


def test_every_example_in_help_parses_and_names_real_plugins():
    from robench.cli import config_file
    from robench.pipeline.registry import load_registry

    registry = load_registry()
    examples = [line.strip() for line in (EXAMPLES + RUN_EXAMPLES).splitlines() if line.strip().startswith("robench ")]
    assert len(examples) >= 8
    for example in examples:
        words = shlex.split(example.split("  ")[0])[1:]
        if words == ["run", "--help"]:
            continue
        args = build_parser().parse_args(words)
        if args.command != "run":
            continue
        for kind, text in (("strategy", args.strategies), ("attack", args.attacks), ("defense", args.defenses)):
            for spec in parse_specs(text, kind):
                if spec.name != "none":
                    registry.get(kind, spec.name)
        if args.preset:
            config_file.read_preset(args.preset)
