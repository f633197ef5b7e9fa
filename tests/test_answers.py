"""The sweep's check of an attack's examples reads the model's answer where the model already
computed on those exact bits during the attack, and computes it everywhere else: the published
prediction is always the model's own forward pass, never the attack's claim."""

from __future__ import annotations

import pytest
import torch

from robench.attack import exact_arithmetic, frozen, pgd_first_fooled
from robench.pipeline.answers import Answers
from tests.test_early_exit import RowCounter


def fresh(model, images) -> torch.Tensor:
    with torch.no_grad():
        return model(images).argmax(1)


def test_the_answers_read_back_equal_a_fresh_forward_and_save_the_fooled_images_pass(trained):
    model, x, y = trained
    model, x, y = RowCounter(model).eval(), x[:40], y[:40]
    with frozen(model), exact_arithmetic(), Answers(model, autocast_on=False) as answers:
        adv, fooled = pgd_first_fooled(model, x, y, 4 / 255, 1 / 255, 10, "margin")
        model.rows = 0
        preds = answers.predict(adv)
        computed = model.rows
    assert fooled.sum() > 5
    assert torch.equal(preds, fresh(model, adv))
    assert answers.reused >= int(fooled.sum())  # every example seen fooled was answered already
    assert computed == len(y) - answers.reused  # and only the others were computed


def test_other_bits_another_arithmetic_or_training_mode_are_never_read_back(trained):
    model, x, _ = trained
    x = x[:16]
    nudged = x.clone()
    nudged[:, 0, 0, 0] = torch.nextafter(nudged[:, 0, 0, 0], torch.tensor(2.0))  # one ulp on one pixel
    with frozen(model), exact_arithmetic():
        with Answers(model, autocast_on=False) as answers:
            fresh(model, x)
            assert answers.predict(nudged).tolist() == fresh(model, nudged).tolist() and answers.reused == 0
        with Answers(model, autocast_on=False) as answers:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                model(x)  # an attack computing in bf16 inside an fp32 sweep
            model.train()
            model(x)  # or in training mode
            model.eval()
            answers.predict(x)
            assert answers.reused == 0


def test_hashing_draws_nothing_from_the_attacks_random_stream(trained):
    model, x, _ = trained
    state = torch.random.get_rng_state()
    with frozen(model), Answers(model, autocast_on=False) as answers:
        answers.predict(x[:4])
    assert torch.equal(torch.random.get_rng_state(), state)


def _other_weights(model):
    return {name: torch.randn_like(p) for name, p in model.named_parameters()}


def _swapped(model, x):
    torch.func.functional_call(model, _other_weights(model), (x,))


def _edited_and_restored(model, x):
    weight = next(model.parameters())
    kept = weight.detach().clone()
    with torch.no_grad():
        weight.add_(1.0)
        model(x)
        weight.copy_(kept)


def _hooked(model, x):
    inner = list(model.modules())[-1]
    handle = inner.register_forward_hook(lambda module, args, out: out * 0)
    model(x)
    handle.remove()


def _other_autocast_dtype(model, x):
    with torch.autocast("cpu", dtype=torch.float16):
        model(x)


def _vmapped(model, x):
    torch.func.vmap(lambda image: model(image.unsqueeze(0)))(x)


@pytest.mark.parametrize("attack_step", [_swapped, _edited_and_restored, _hooked, _vmapped])
def test_answers_from_other_weights_hooks_or_transforms_are_never_read_back(trained, attack_step):
    model, x, _ = trained
    x = x[:8]
    with frozen(model), exact_arithmetic(), Answers(model, autocast_on=False) as answers:
        with torch.no_grad():
            attack_step(model, x)
        assert answers.predict(x).tolist() == fresh(model, x).tolist() and answers.reused == 0


def test_a_bf16_sweep_does_not_read_back_an_fp16_forward_pass(trained):
    model, x, _ = trained
    x = x[:8]
    with frozen(model), exact_arithmetic(), torch.autocast("cpu", dtype=torch.bfloat16):
        with Answers(model, autocast_on=True) as answers:
            with torch.no_grad():
                _other_autocast_dtype(model, x)
            answers.predict(x)
            assert answers.reused == 0
            answers.predict(x)  # its own bf16 check is recorded and read back
            assert answers.reused == 8
