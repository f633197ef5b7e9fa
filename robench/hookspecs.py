"""The extension points of robench: one hook per plugin kind.

A plugin is a module with functions marked ``@robench.hookimpl`` that call ``register``
once per thing they provide. Built-in plugins in ``plugins/`` use exactly these hooks.
"""

import pluggy

hookspec = pluggy.HookspecMarker("robench")
hookimpl = pluggy.HookimplMarker("robench")


@hookspec
def register_strategies(register):
    """Register fine-tuning strategies: ``register(StrategySubclass)``."""


@hookspec
def register_attacks(register):
    """Register adversarial attacks: ``register(AttackSubclass)``."""


@hookspec
def register_defenses(register):
    """Register training-time defenses (adversarial training): ``register(DefenseSubclass)``."""


@hookspec
def register_datasets(register):
    """Register datasets: ``register(DatasetSubclass)`` (robench.dataset)."""


@hookspec
def register_backbones(register):
    """Register backbone providers: ``register(BackboneSubclass)``, named by their prefix (robench.backbone)."""
