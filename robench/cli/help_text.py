"""How `robench --help` reads: every flag's default shown, worked examples, list flags that add up.

The examples are commands a newcomer can copy (tests/test_newcomer.py parses each one and checks
the plugin names in it), so they are kept here, apart from the flags' definitions.
"""

from __future__ import annotations

import argparse

EXAMPLES = """\
examples:
  robench run --dataset synthetic --strategies full,linear_probe --attacks fgsm,pgd --seeds 0
                                   offline: a micro ViT on synthetic images, nothing downloaded
  robench list                     every strategy, attack, defense, dataset and backbone provider
  robench data download ham10000   the real data (then: robench run --data-dir DIR ...)
  robench leaderboard runs/NAME    rewrite a run's page from its results
  robench run --help               every run flag, its default and more examples
"""

RUN_EXAMPLES = """\
examples:
  robench run --dataset synthetic --epochs 2
      offline: the micro ViT on synthetic images, full fine-tuning, FGSM at eps 0.01 and 0.02
  robench run --data-dir DIR --strategies full,vpt_deep:prompts=5 --attacks fgsm,pgd:steps=20 --eps 1/255,2/255 --seeds 0,1,2
      HAM10000 in DIR, two strategies, two attacks at two eps, three seeds
  robench run --data-dir DIR --backbone deit_tiny_patch16_224 --weights deit_tiny_patch16_224.fb_in1k.safetensors
      a local weights file (no download); it must be the --backbone's, which sets the input mean/std
  robench run --data-dir DIR --defenses none,pgd_at:eps=2/255 --attacks pgd --eps 2/255
      each strategy trained without and with PGD adversarial training
  robench run --preset ham10000-cpu-smoke --data-dir DIR
      a run shipped with robench (robench presets lists them)

A stopped run (Ctrl-C, a crash) resumes where it stopped when run again on the same --out;
after Ctrl-C robench prints the command that does it.
List flags add up when typed twice: --eps 0.01 --eps 2/255 is --eps 0.01,2/255.
"""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows "(default: X)" after every flag that has one and does not already say it, and keeps
    the examples' line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS or "default" in help_text:
            return help_text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose sub-commands' help is formatted the same way."""

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


class AddsUp(argparse.Action):
    """A comma-separated list flag that adds up when typed twice (``--eps 0.01 --eps 0.02`` is
    ``--eps 0.01,0.02``): argparse alone keeps the last and silently drops the rest."""

    def __init__(self, *args, default=None, **kwargs):
        super().__init__(*args, default=None if default is None else _Untyped(default), **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        before = getattr(namespace, self.dest, None)
        typed_before = isinstance(before, str) and not isinstance(before, _Untyped)
        setattr(namespace, self.dest, f"{before},{values}" if typed_before else values)


class _Untyped(str):
    """A flag's default, told apart from the same text typed (CPython shares one object for "0")."""
