"""The plugin registry: entry points, options, clashes and broken plugins."""

from __future__ import annotations

import pytest

import robench
from robench.errors import PluginError
from robench.pipeline import registry as registry_module
from robench.pipeline.options import build, parse_spec, parse_specs, resolve
from robench.pipeline.registry import Registry, load_registry
from robench.strategy import RECIPE_FIELDS, Strategy


def test_builtins_come_through_entry_points_of_the_robench_package():
    reg = load_registry()
    assert {"full", "linear_probe"} <= set(reg.names("strategy"))
    assert {"fgsm", "pgd"} <= set(reg.names("attack"))
    assert reg.get("attack", "fgsm").package == "robench"
    assert reg.get("strategy", "full").factory.__module__ == "robench_plugins.strategies.full"


def test_unknown_name_lists_valid_names_and_close_matches():
    with pytest.raises(PluginError) as err:
        load_registry().get("attack", "fgms")
    message = str(err.value)
    assert message.startswith("unknown attack 'fgms'")
    assert "did you mean fgsm" in message and "pgd" in message
    assert "\n" not in message


class _Dummy(Strategy):
    name = "full"


class _Plugin:
    @robench.hookimpl
    def register_strategies(self, register):
        register(_Dummy)


def test_two_packages_registering_one_name_is_an_error_naming_both():
    import pluggy

    from robench import hookspecs
    from robench_plugins.strategies import full

    manager = pluggy.PluginManager("robench")
    manager.add_hookspecs(hookspecs)
    manager.register(full, name="robench:full")
    manager.register(_Plugin(), name="robench-other:dup")
    with pytest.raises(PluginError, match="packages 'robench' and 'robench-other'"):
        Registry(manager, {"robench:full": "robench", "robench-other:dup": "robench-other"})


class _BrokenHook:
    @robench.hookimpl
    def register_attacks(self, register):
        raise RuntimeError("the hook itself is broken")


def test_a_plugin_whose_register_hook_raises_is_reported_and_the_others_still_register():
    import pluggy

    from robench import hookspecs
    from robench_plugins.strategies import full

    manager = pluggy.PluginManager("robench")
    manager.add_hookspecs(hookspecs)
    manager.register(full, name="robench:full")
    manager.register(_BrokenHook(), name="robench-broken:hook")
    registry = Registry(manager, {"robench:full": "robench", "robench-broken:hook": "robench-broken"})
    assert registry.names("strategy") == ["full"]
    assert [(f.entry_point, f.package) for f in registry.failures] == [("hook", "robench-broken")]
    assert "RuntimeError: the hook itself is broken" in registry.failures[0].error
    with pytest.raises(PluginError, match="plugin 'robench-broken' failed to load"):
        registry.get("attack", "fgsm")


def test_a_plugin_that_fails_to_import_is_reported_and_the_others_still_load(monkeypatch):
    class BrokenEntryPoint:
        name, value = "broken", "robench_broken_plugin_xyz"

        class dist:  # noqa: N801
            name = "robench-broken"

        def load(self):
            raise ImportError("No module named 'robench_broken_plugin_xyz'")

    real = registry_module.entry_points(group="robench")
    monkeypatch.setattr(registry_module, "entry_points", lambda group: [*real, BrokenEntryPoint()])
    reg = registry_module._load_registry.__wrapped__("")
    assert "full" in reg.names("strategy")
    assert [f.package for f in reg.failures] == ["robench-broken"]
    with pytest.raises(PluginError, match="robench-broken.*failed to load"):
        reg.get("strategy", "missing")


def test_disabling_a_plugin_by_entry_point_name():
    reg = registry_module._load_registry.__wrapped__("pgd")
    assert "pgd" not in reg.names("attack") and "fgsm" in reg.names("attack")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pgd:steps=abc", "expected a whole number, got 'abc'"),
        ("pgd:stepz=5", "unknown option 'stepz' for attack 'pgd'.*did you mean steps\\? valid options: steps, alpha, random_start"),
        ("pgd:step=5", "did you mean steps\\?"),
        ("pgd:steps", "malformed attack option 'steps'"),
        ("pgd:steps=0", "steps must be from 1 to 100,000"),
        ("pgd:random_start=maybe", "expected true or false"),
    ],
)
def test_bad_options_give_one_clear_line(text, message):
    with pytest.raises(PluginError, match=message) as err:
        resolve(load_registry(), "attack", parse_spec(text, "attack"))
    assert "\n" not in str(err.value)


def test_options_are_typed_from_the_signature_and_fractions_work():
    attack, rest = resolve(load_registry(), "attack", parse_spec("pgd:steps=20:alpha=1/255:random_start=off", "attack"))
    assert (attack.steps, attack.alpha, attack.random_start) == (20, 1 / 255, False)
    assert rest == {}


def test_recipe_keys_are_split_off_a_strategy_spec():
    strategy, rest = resolve(load_registry(), "strategy", parse_spec("full:lr=0.5:epochs=3", "strategy"), reserved=RECIPE_FIELDS)
    assert strategy.name == "full" and rest == {"lr": "0.5", "epochs": "3"}


def test_specs_and_labels():
    specs = parse_specs("full, vpt_deep:prompts=5:lr=0.5,", "strategy")
    assert [s.label for s in specs] == ["full", "vpt_deep(prompts=5, lr=0.5)"]
    with pytest.raises(PluginError, match="no strategy given"):
        parse_specs(" , ", "strategy")


def test_build_reports_constructor_errors_as_plugin_errors():
    with pytest.raises(PluginError, match="alpha must be in"):
        build(load_registry().get("attack", "pgd"), {"alpha": "2"}, "pgd:alpha=2")


def test_a_mistyped_recipe_field_is_answered_with_the_field_and_the_recipe_fields_listed():
    from robench.strategy import RECIPE_FIELDS

    with pytest.raises(PluginError, match="unknown option 'lrr' for strategy 'full'.*did you mean lr\\? valid options: .*; "
                                          "recipe fields: optimizer, lr, weight_decay") as err:
        resolve(load_registry(), "strategy", parse_spec("full:lrr=1e-4", "strategy"), reserved=RECIPE_FIELDS)
    assert "\n" not in str(err.value)
