"""GPU speed options: precision, channels-last, torch.compile, data on the GPU.

This machine and CI have no GPU: the CPU tests check that the flags are validated and recorded,
that channels-last and compile change no result, and what the GPU-only helpers would do; the
tests marked ``cuda`` run where torch sees a GPU.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from robench.cli import main
from robench.core.results import read_rows
from robench.pipeline import compute
from robench.pipeline.models import Normalized
from robench.pipeline.train import train
from robench.strategy import Recipe
from robench_plugins.strategies.full import Full
from robench_plugins.strategies.lora import LoRA
from robench_plugins.strategies.vpt import VPTDeep

TIMING = ("train_seconds", "seconds_per_epoch", "attack_seconds", "peak_mem_mb")
FAST = ["--dataset", "synthetic", "--subset", "200", "--epochs", "2", "--seeds", "0", "--quiet"]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def without_timing(rows: list[dict], leave_out: tuple[str, ...] = ()) -> list[str]:
    return [json.dumps({k: v for k, v in row.items() if k not in TIMING + leave_out}, sort_keys=True) for row in rows]


def _grid(capsys, tmp_path, name, *extra, strategies="full,linear_probe"):
    out_dir = tmp_path / name
    code, _, err = run_cli(capsys, "run", *FAST, "--strategies", strategies, "--attacks", "fgsm", "--eps", "0.01",
                           "--out", str(out_dir), "--leaderboard-dir", str(tmp_path), *extra)
    assert code == 0, err
    return out_dir


# --- flags ------------------------------------------------------------------------------------

@cpu_only
@pytest.mark.parametrize(("flags", "message"), [
    (["--device", "cuda"], "--device cuda asked for, but torch sees no CUDA GPU: use --device cpu or auto"),
    (["--device", "tpu"], "unknown device 'tpu': use auto, cpu or cuda"),
    (["--executor", "ray", "--ray-gpus-per-task", "0.5", "--device", "cpu"], "--ray-gpus-per-task 0.5 needs a CUDA device"),
    (["--executor", "ray", "--ray-gpus-per-task", "2"], "--ray-gpus-per-task 2: give the share of one GPU"),
    (["--ray-address", "auto"], "--ray-address and --ray-gpus-per-task need --executor ray"),
])
def test_options_that_do_not_fit_this_machine_are_one_line(capsys, tmp_path, flags, message):
    code, _, err = run_cli(capsys, "run", *FAST, "--strategies", "linear_probe", "--out", str(tmp_path / "run"), *flags)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.slow  # 10 s or more: default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_precision_and_execution_options_are_recorded_in_config_and_leaderboard(capsys, tmp_path):
    out_dir = _grid(capsys, tmp_path, "run", "--channels-last", strategies="linear_probe")
    config = json.loads((out_dir / "config.json").read_text())
    expected = "bf16" if torch.cuda.is_available() else "fp32"  # --train-precision auto
    assert config["precision"] == {"train": expected, "attack": "fp32"}
    assert config["comparable"]["train_precision"] == expected and config["comparable"]["attack_precision"] == "fp32"
    assert config["execution"] == {"executor": "local", "ray_address": None, "ray_gpus_per_task": None,
                                   "channels_last": True, "compile": False, "threads": config["execution"]["threads"]}
    assert f"- **precision**: training {expected}, attacks fp32" in (tmp_path / "run.md").read_text()


@pytest.mark.slow  # 10 s or more: default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_a_run_resumed_with_another_precision_is_refused_and_one_from_before_precision_was_recorded_resumes(capsys, tmp_path):
    out_dir = _grid(capsys, tmp_path, "run", strategies="linear_probe")
    before = (out_dir / "results.jsonl").read_bytes()
    config_path = out_dir / "config.json"
    config = json.loads(config_path.read_text())
    config["comparable"]["train_precision"] = "bf16"  # as a GPU run would have written it
    config_path.write_text(json.dumps(config))
    code, _, err = run_cli(capsys, "run", *FAST, "--strategies", "linear_probe", "--attacks", "fgsm", "--eps", "0.01",
                           "--out", str(out_dir), "--leaderboard-dir", str(tmp_path))
    assert code == 2 and err.count("\n") == 1
    assert "holds results with --train-precision bf16, this command has fp32" in err

    del config["comparable"]["train_precision"], config["comparable"]["attack_precision"]  # written by an older robench
    config_path.write_text(json.dumps(config))
    assert run_cli(capsys, "run", *FAST, "--strategies", "linear_probe", "--attacks", "fgsm", "--eps", "0.01",
                   "--out", str(out_dir), "--leaderboard-dir", str(tmp_path))[0] == 0
    assert (out_dir / "results.jsonl").read_bytes() == before  # nothing to redo


# --- channels-last ----------------------------------------------------------------------------

@pytest.mark.slow  # default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_channels_last_gives_the_same_rows(capsys, tmp_path, monkeypatch):
    plain = read_rows(_grid(capsys, tmp_path, "plain"))
    converted = []
    real = compute.use_channels_last
    monkeypatch.setattr(compute, "use_channels_last", lambda model: converted.append(model.training) or real(model))
    channels_last = read_rows(_grid(capsys, tmp_path, "channels_last", "--channels-last"))
    assert converted == [True, True]  # each model as it trains; the attacked model keeps the default layout
    # trained in another layout, the weights differ in their last bits (an AVX-512 CPU): every answer is the same
    assert_same_rows(plain, channels_last)


def test_channels_last_feeds_the_patch_embedding_channels_last_and_trains_the_same_weights(micro_vit):
    vit, mean, std = micro_vit
    images = (torch.rand(21, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    data = (images, torch.arange(21) % 7)
    recipe = Recipe(epochs=2, batch_size=7, lr=1e-3, augment=True)
    models = []
    for use in (False, True):
        model = Normalized(Full().adapt(copy.deepcopy(vit)), mean, std)
        if use:
            compute.use_channels_last(model)
        layouts = []
        model.model.patch_embed.proj.register_forward_pre_hook(
            lambda _, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
        train(model, Full(), recipe, data, data, 7, 0, torch.device("cpu"))
        assert set(layouts) == {use}
        models.append(model)
    plain, channels_last = (m.state_dict() for m in models)
    assert list(plain) == list(channels_last)
    # Same up to float rounding, which Adam can magnify: it divides each step by the gradient's running size,
    # so an element whose gradient is near 0 (a bias, here) moves by up to lr whatever the rounding; 6 steps of
    # lr 1e-3 move an element by up to 6e-3, and the layouts differed by 5.6e-5 at most (a CPU with AVX-512).
    for name in plain:
        torch.testing.assert_close(plain[name], channels_last[name], rtol=1e-4, atol=1e-4, msg=name)


# --- torch.compile ----------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", [Full(), VPTDeep(prompts=2), LoRA(rank=2)], ids=["full", "vpt_deep", "lora"])
def test_compiling_keeps_the_model_its_submodules_and_its_state_dict_keys(micro_vit, strategy):
    vit, mean, std = micro_vit
    model = Normalized(strategy.adapt(vit), mean, std)
    keys, inner = list(model.state_dict()), model.model
    assert compute.compile_in_place(model) is model and model.model is inner
    assert list(model.state_dict()) == keys
    # what it avoids: torch.compile(model) renames every key, so its checkpoints would not load
    assert all(key.startswith("_orig_mod.") for key in torch.compile(Normalized(inner, mean, std)).state_dict())


@pytest.mark.slow  # default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_compile_flag_compiles_each_model_that_trains(capsys, tmp_path, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__))
    out_dir = _grid(capsys, tmp_path, "run", "--compile")
    assert compiled == ["Normalized", "Normalized"]  # full and linear_probe, seed 0
    assert json.loads((out_dir / "config.json").read_text())["execution"]["compile"] is True
    _grid(capsys, tmp_path, "run", "--compile", "--eps", "0.01,0.02")  # extended: models come from checkpoints
    assert len(compiled) == 2


@pytest.mark.slow
def test_a_compiled_run_gives_the_rows_of_an_uncompiled_one(capsys, tmp_path):
    """Minutes on a CPU: inductor compiles the training graph for each batch shape and mode."""
    plain = read_rows(_grid(capsys, tmp_path, "plain", "--epochs", "1", strategies="full"))
    compiled = read_rows(_grid(capsys, tmp_path, "compiled", "--epochs", "1", "--compile", strategies="full"))
    # the clean pass's softmax runs through the compiled model, whose fused kernels may round its last bits
    assert_same_rows(plain, compiled)


def assert_same_rows(plain: list[dict], other: list[dict]) -> None:
    """Every field of the rows equal (every answer included) but the timings, and the calibration numbers,
    which come from softmax probabilities and so follow their last bits: those agree to float precision."""
    calibration = ("ece", "nll", "reliability")
    assert without_timing(plain, calibration) == without_timing(other, calibration)
    for a, b in zip(plain, other, strict=True):
        for key in ("ece", "nll"):
            assert a.get(key) == b.get(key) if a.get(key) is None else a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6)
        if a.get("reliability") is not None:
            assert a["reliability"]["counts"] == b["reliability"]["counts"]
            assert [c or 0 for c in a["reliability"]["confidence"]] == pytest.approx([c or 0 for c in b["reliability"]["confidence"]], abs=1e-6)


# --- GPU-only helpers, as far as a CPU can check them -----------------------------------------

def test_bf16_autocast_on_cpu_and_cuda():
    for device in ("cpu", "cuda"):
        with pytest.warns(UserWarning) if device == "cuda" and not torch.cuda.is_available() else _nothing():
            context = compute.autocast(torch.device(device), "bf16")
        assert isinstance(context, torch.autocast) and context.device == device and context.fast_dtype == torch.bfloat16
        assert not isinstance(compute.autocast(torch.device(device), "fp32"), torch.autocast)
    with compute.autocast("cpu", "bf16"):
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.bfloat16


@pytest.mark.parametrize("native", [True, False])
def test_precision_follows_what_the_cpu_computes_natively(monkeypatch, capsys, native):
    """auto and bf16 use bf16 where torch reports AVX512-BF16 or AMX; elsewhere fp32, said and recorded."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    cpu = torch.device("cpu")
    assert compute.resolve_precision("auto", cpu, "--train-precision") == "fp32"  # see resolve_precision
    assert compute.resolve_precision("bf16", cpu, "--attack-precision") == ("bf16" if native else "fp32")
    assert compute.resolve_precision("fp32", cpu, "--train-precision") == "fp32"
    assert compute.resolve_precision("auto", torch.device("cuda"), "--train-precision") == "bf16"
    said = capsys.readouterr().err
    assert ("no native bf16" in said) == (not native)


def test_data_stays_on_the_cpu_and_on_a_gpu_too_small_for_it(monkeypatch):
    tensors = (torch.zeros(100, dtype=torch.uint8), torch.zeros(10, dtype=torch.long))
    assert compute.on_device_if_fits(tensors, torch.device("cpu")) is tensors
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (600, 1000))  # 180 bytes > 25% of 600
    assert compute.on_device_if_fits(tensors, torch.device("cuda")) is tensors
    assert compute.device_bytes(tensors) == 0


@cuda
def test_on_a_gpu_training_runs_in_bf16_with_fp32_weights_and_the_data_on_the_gpu(micro_vit):
    vit, mean, std = micro_vit
    model = Normalized(Full().adapt(vit), mean, std).cuda()
    images = (torch.rand(21, 3, 32, 32) * 255).to(torch.uint8)
    data = compute.on_device_if_fits((images, torch.arange(21) % 7), torch.device("cuda"))
    assert all(t.is_cuda for t in data) and compute.device_bytes(data) == 21 * 3 * 32 * 32 + 21 * 8
    dtypes = []
    model.model.head.register_forward_hook(lambda _, __, out: dtypes.append(out.dtype))
    train(model, Full(), Recipe(epochs=1, batch_size=7, lr=1e-3), data, data, 7, 0, torch.device("cuda"), precision="bf16")
    assert torch.bfloat16 in dtypes
    assert all(p.dtype == torch.float32 for p in model.parameters())


@cuda
def test_a_gpu_run_with_bf16_attacks_records_it(capsys, tmp_path):
    out_dir = _grid(capsys, tmp_path, "run", "--attack-precision", "bf16", "--channels-last")
    config = json.loads((out_dir / "config.json").read_text())
    assert config["precision"] == {"train": "bf16", "attack": "bf16"}
    assert {row["status"] for row in read_rows(out_dir)} == {"ok"}


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_run_flushes_subnormal_floats_and_restores_the_setting_after():
    """Subnormals slowed VPT-shallow's CPU training 3.2x (bench/subnormal_flush.py); a run flushes them to zero, and only while it lasts."""
    from robench.pipeline.runner import numerics

    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush subnormal floats")
    tiny = torch.tensor([1e-40])
    assert (tiny * 1).item() != 0
    with numerics():
        assert (tiny * 1).item() == 0 and torch.are_deterministic_algorithms_enabled()
    assert (tiny * 1).item() != 0 and not torch.are_deterministic_algorithms_enabled()


@pytest.mark.slow  # 10 s or more: default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_attack_precision_fp32_bf16_runs_each_attack_in_both_and_labels_the_twin(capsys, tmp_path):
    out_dir = _grid(capsys, tmp_path, "twins", "--attack-precision", "fp32,bf16", strategies="linear_probe")
    config = json.loads((out_dir / "config.json").read_text())
    native = compute.fast_bf16(torch.device("cpu"))
    assert config["precision"]["attack"] == ("fp32,bf16" if native else "fp32")
    rows = [row for row in read_rows(out_dir) if row["attack"] != "none"]
    assert sorted(row["attack"] for row in rows) == (["escalation", "fgsm", "fgsm[bf16]"] if native else ["escalation", "fgsm"])
    assert {row["status"] for row in rows} == {"ok"}


@pytest.mark.parametrize("bad", ["fp16", "auto", ","])
def test_a_bad_attack_precision_is_one_line(capsys, tmp_path, bad):
    code, _, err = run_cli(capsys, "run", *FAST, "--attack-precision", bad, "--out", str(tmp_path / "x"))
    assert code == 2 and f"--attack-precision {bad!r}: use fp32, bf16, or fp32,bf16" in err and "Traceback" not in err
