"""The Python API: robench.run with the command's options as keywords, load_run, list_plugins, and
the examples of docs/python-api.md, run as they are written."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

import robench
from robench.cli import keywords
from robench.cli.run_command import config_from_args
from robench.errors import RobenchError
from robench_plugins.attacks.pgd import PGD
from robench_plugins.strategies.lora import LoRA
from robench_plugins.strategies.vpt import VPTDeep
from tests.conftest import REPO

PAGE = REPO / "docs" / "python-api.md"


def python_blocks(page) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.MULTILINE | re.DOTALL)


@pytest.mark.slow  # default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_the_python_api_page_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for number, block in enumerate(python_blocks(PAGE), start=1):
        exec(compile(block, f"{PAGE.name}, example {number}", "exec"), namespace)  # noqa: S102  (our own docs)
    results, again = namespace["results"], namespace["again"]
    assert set(results.rows["attack"]) == {"none", "fgsm", "pgd(steps=3)", "escalation"}  # PGD(steps=3), the object, as its spec
    assert len(results.rows) == 2 * (1 + 2 * 2 + 2) and results.failed.empty  # 2 seeds: clean + 2 attacks x 2 eps + escalation
    assert results.config["command"].startswith("robench run --dataset=synthetic --strategies=linear_probe --attacks=fgsm,pgd:steps=3")
    assert again.rows.equals(results.rows) and again.records.equals(results.records)
    assert results.leaderboard.is_file() and again.leaderboard.read_text() == results.leaderboard.read_text()
    assert set(namespace["plugins"]["name"]) >= {"fgsm", "pgd", "autoattack"}
    assert "unknown strategy 'linear_prob': did you mean linear_probe?" in capsys.readouterr().out
    benchmarked = namespace["rows"]  # robench.benchmark of a model made on the page
    assert set(benchmarked["status"]) == {"ok"} and set(benchmarked["strategy"]) == {"given"} and len(benchmarked) == 5


def test_keywords_are_the_flags_of_robench_run():
    argv = keywords.to_argv({"dataset": "synthetic", "strategies": ["full", VPTDeep(prompts=5), LoRA], "attacks": PGD(steps=3),
                             "eps": [0.01, "2/255"], "seeds": [0, 1], "attack_samples": 50, "quiet": True,
                             "channels_last": False, "epochs": None})
    assert argv == ["run", "--dataset=synthetic", "--strategies=full,vpt_deep:prompts=5,lora", "--attacks=pgd:steps=3",
                    "--eps=0.01,2/255", "--seeds=0,1", "--attack-samples=50", "--quiet"]
    assert keywords.spec_text(LoRA(targets=("qkv", "proj"), alpha=4.0), "strategy") == "lora:alpha=4.0:targets=qkv+proj"
    assert keywords.spec_text(PGD(random_start=False, alpha=1 / 255), "attack") == f"pgd:alpha={1 / 255!r}:random_start=false"


def test_the_api_and_the_command_build_the_same_run(tmp_path):
    options = {"dataset": "synthetic", "strategies": [VPTDeep(prompts=5)], "eps": [0.02], "seeds": [1, 2], "out": tmp_path}
    argv = keywords.to_argv(options)
    typed = ["run", "--dataset", "synthetic", "--strategies", "vpt_deep:prompts=5", "--eps", "0.02", "--seeds", "1,2",
             "--out", str(tmp_path)]
    from robench.cli import build_parser

    from_api = config_from_args(keywords.parse(argv), argv)
    from_command = config_from_args(build_parser().parse_args(typed), typed)
    assert from_api.command != from_command.command
    assert replace(from_api, command=None) == replace(from_command, command=None)  # every field but the plugin object
    assert type(from_api.dataset_plugin) is type(from_command.dataset_plugin)


@pytest.mark.parametrize(("options", "message"), [
    ({"strategy": "full"}, "robench.run() has no option 'strategy': did you mean strategies?"),
    ({"quiet": "yes"}, "robench.run(): quiet is a switch: pass True or False, not 'yes'"),
    ({"protocol": "most"}, "robench.run(): argument --protocol: invalid choice: 'most'"),
    ({"epochs": "many"}, "robench.run(): argument --epochs: invalid int value: 'many'"),
    ({"strategies": [object()]}, "is not a strategy: pass a name such as"),
    ({"attacks": [VPTDeep()]}, "unknown attack 'vpt_deep'"),
    ({"seeds": ["0,1", 2]}, "an item of seeds holds a comma"),
])
def test_bad_keywords_are_one_line(options, message):
    with pytest.raises(RobenchError) as error:
        config_from_args(keywords.parse(argv := keywords.to_argv(options)), argv)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_plugin_object_robench_cannot_read_back_is_refused():
    class Unregistered(VPTDeep):
        """Not the installed vpt_deep: its results would be kept under another plugin's name."""

    with pytest.raises(RobenchError, match="is not the installed strategy 'vpt_deep'"):
        keywords.spec_text(Unregistered(), "strategy")
    hidden = VPTDeep(prompts=5)
    del hidden.prompts  # an option the object does not keep as an attribute
    with pytest.raises(RobenchError, match="cannot read option 'prompts' back .* 'vpt_deep:prompts=VALUE'"):
        keywords.spec_text(hidden, "strategy")


def test_load_run_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(RobenchError, match="is not a robench run folder .* pass the --out folder of a robench run"):
        robench.load_run(tmp_path)


def test_list_plugins_by_kind():
    every = robench.list_plugins()
    assert set(every["kind"]) == {"strategy", "attack", "defense", "dataset", "backbone"}
    strategies = robench.list_plugins("strategy").set_index("name")
    assert strategies.loc["vpt_deep", "options"] == {"prompts": 10, "dropout": 0.0}
    assert strategies.loc["full", "package"] == "robench"
    with pytest.raises(RobenchError, match="unknown plugin kind 'strategies': use one of strategy, attack"):
        robench.list_plugins("strategies")


def test_import_robench_is_light_and_offers_the_api():
    import subprocess
    import sys

    code = "import sys, robench; print('torch' in sys.modules, sorted(robench.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False ['Results', '__version__', 'benchmark', 'hookimpl', 'list_plugins', 'load_run', 'run']"
    assert robench.run.__module__ == "robench.api"


def test_run_has_a_typed_signature_with_every_flag_of_robench_run():
    import inspect

    from robench.cli.keywords import _run_parser

    flags = {a.dest for a in _run_parser()._actions if a.option_strings and a.dest != "help"}
    parameters = inspect.signature(robench.run).parameters
    assert set(parameters) == flags  # a flag added to the command must be added here too
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY and p.annotation != inspect.Parameter.empty for p in parameters.values())
    with pytest.raises(TypeError, match="strategy"):
        robench.run(strategy="full")


def test_load_run_gives_the_pages_table_with_intervals(tmp_path):
    from tests.test_rankable import constant, good, write_run

    run = write_run(tmp_path / "run", constant(0) + good(0))
    table = robench.load_run(run).table
    worst = table[(table["attack"] == "worst case") & (table["eps"] == 0.01)].set_index("strategy")
    assert list(worst.index) == ["good", "constant"] and worst.loc["good", "rank"] == 1
    assert worst.loc["good", "robust_acc"] == pytest.approx(24 / 60)  # 24 of 60 images survive both attacks
    assert worst.loc["good", "robust_acc_low"] < 24 / 60 < worst.loc["good", "robust_acc_high"]
