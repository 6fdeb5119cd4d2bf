"""save_pretrained / from_pretrained, the scheduler and degradation configs, export."""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
import subprocess
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, TensorDataset

from scalemix import DDPMScheduler, sample
from scalemix.degradation import BlurDegradation, ScaleSpaceDegradation
from scalemix.nn import (
    DualScaleDenoiser,
    FlexiUNet,
    LearnedAffineUpscale,
    MLPDenoiser,
    PretrainedMixin,
    ScaleUpscale,
    TimestepGate,
)
from scalemix.scale_space import scale_space_loss, scale_space_sample
from scalemix.training import ImageTrainConfig, train, train_images

hub = pytest.importorskip("huggingface_hub")
pytest.importorskip("safetensors")

from scalemix.hub import (  # noqa: E402
    degradation_config,
    degradation_from_config,
    export_pretrained,
    load_degradation,
    load_scheduler,
    scheduler_config,
)

ROOT = Path(__file__).resolve().parents[1]
SMALL: dict[str, Any] = {"embedding_dim": 8, "hidden_dim": 16, "num_blocks": 2}


def _perturbed(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` with every parameter moved off its initial value (the UNet's head starts
    at zero), in eval mode, so a round trip that re-initialised would be seen."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model.eval()


def _flexi(**kwargs: Any) -> FlexiUNet:
    args: dict[str, Any] = {
        "in_channels": 1,
        "base_channels": 8,
        "channel_mult": (1, 2),
        "num_res_blocks": 1,
        "attention_resolutions": (4,),
        "image_size": 8,
        "num_heads": 2,
    }
    args.update(kwargs)
    return FlexiUNet(**args)


def _config(folder: Path) -> dict[str, Any]:
    out: dict[str, Any] = json.loads((folder / "config.json").read_text())
    return out


def _write_config(folder: Path, config: dict[str, Any]) -> None:
    (folder / "config.json").write_text(json.dumps(config))


# ------------------------------------------------------------------ round trips
VECTOR_MODELS: dict[str, Callable[[], nn.Module]] = {
    "mlp": lambda: MLPDenoiser(8, 16, 2, 3, time_scale=2.0, coord_scale=10.0),
    "mlp_no_blocks": lambda: MLPDenoiser(8, 16, 0, 2),
    **{
        f"dual_{preset}": (lambda preset=preset: DualScaleDenoiser.from_preset(preset, **SMALL))
        for preset in ("fixed", "learned", "adaptive", "adaptive_deep")
    },
    "dual_custom_gate": lambda: DualScaleDenoiser(
        **SMALL,
        time_scale=3.0,
        gate=TimestepGate(
            "deep", embedding_dim=8, hidden_dim=12, time_scale=3.0, negative_slope=0.05
        ),
        upscale=ScaleUpscale(1.5),
    ),
    "dual_identity_upscale": lambda: DualScaleDenoiser(
        **SMALL, upscale=LearnedAffineUpscale(2, init="identity")
    ),
}


@pytest.mark.parametrize("name", list(VECTOR_MODELS))
def test_vector_model_round_trip_gives_equal_outputs(tmp_path: Path, name: str) -> None:
    model = _perturbed(VECTOR_MODELS[name]())
    cls = type(model)
    d = model.input_dim  # type: ignore[attr-defined]
    returned = model.save_pretrained(tmp_path / "m")  # type: ignore[operator]
    assert returned == tmp_path / "m"
    assert {p.name for p in returned.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    torch.manual_seed(123)  # a fresh build initialises differently: the weights must load
    loaded = cls.from_pretrained(tmp_path / "m")
    assert type(loaded) is cls and not loaded.training
    x = torch.randn(7, d, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 3, 9, 20, 50, 80, 99])
    with torch.no_grad():
        assert torch.equal(loaded(x, t), model(x, t))
    assert _config(tmp_path / "m") == model.pretrained_config()  # type: ignore[operator]
    assert loaded.pretrained_config() == model.pretrained_config()  # type: ignore[operator]


def test_presets_keep_their_gate(tmp_path: Path) -> None:
    for preset, mode in (("fixed", "fixed"), ("learned", "learned"), ("adaptive_deep", "deep")):
        model = DualScaleDenoiser.from_preset(preset, **SMALL)  # type: ignore[arg-type]
        model.save_pretrained(tmp_path / preset)
        assert _config(tmp_path / preset)["gate"]["mode"] == mode
        loaded = DualScaleDenoiser.from_pretrained(tmp_path / preset)
        assert loaded.gate.mode == mode
        t = torch.arange(10)
        assert torch.equal(loaded.alpha(t), model.alpha(t))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"channel_mult": [1, 2, 2], "attention_resolutions": [2, 4], "num_head_channels": 4},
        {"out_channels": 2, "scale_shift": False, "image_size": 16, "attention_resolutions": ()},
        {"channel_mult": (1, 1, 2), "image_size": 16, "entry_levels": {12: 0, 6: 1}},
    ],
)
def test_flexi_unet_round_trip_at_every_level(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    model = _perturbed(_flexi(**kwargs))
    model.save_pretrained(tmp_path)
    torch.manual_seed(5)
    loaded = FlexiUNet.from_pretrained(str(tmp_path))
    assert loaded.entry_levels == model.entry_levels
    g = torch.Generator().manual_seed(2)
    t = torch.tensor([1, 40])
    sizes = [*model.resolutions, *model.entry_levels]
    with torch.no_grad():
        for r in sizes:
            x = torch.randn(2, 1, r, r, generator=g)
            assert torch.equal(loaded(x, t), model(x, t)), r
        up = torch.randn(2, 1, model.resolutions[1], model.resolutions[1], generator=g)
        assert torch.equal(loaded(up, t, model.image_size), model(up, t, model.image_size))


def test_the_saved_dtype_comes_back(tmp_path: Path) -> None:
    model = _perturbed(MLPDenoiser(**SMALL).double())
    model.save_pretrained(tmp_path)
    loaded = MLPDenoiser.from_pretrained(tmp_path)
    assert loaded.input_layer.weight.dtype == torch.float64
    x = torch.randn(4, 2, dtype=torch.float64)
    t = torch.arange(4)
    with torch.no_grad():
        assert torch.equal(loaded(x, t), model(x, t))


def test_config_round_trips_through_json_without_files() -> None:
    model = _flexi(channel_mult=(1, 2, 2), image_size=16, entry_levels={12: 0})
    config = json.loads(json.dumps(model.pretrained_config()))
    rebuilt = FlexiUNet.from_config(config)
    assert rebuilt.pretrained_config() == model.pretrained_config()
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes


# ------------------------------------------------------------------ errors
def test_a_folder_of_another_class_names_both(tmp_path: Path) -> None:
    MLPDenoiser(**SMALL).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"describes a MLPDenoiser.*not a DualScaleDenoiser"):
        DualScaleDenoiser.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a FlexiUNet"):
        FlexiUNet.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"hidden_size": 16}, ValueError, r"'hidden_size' is not an argument of MLPDenoiser"),
        ({"hidden_dim": "16"}, TypeError, r"'hidden_dim' must be an integer"),
        ({"num_blocks": 2.0}, TypeError, r"'num_blocks' must be an integer"),
        ({"time_scale": True}, TypeError, r"'time_scale' must be a number"),
        ({"hidden_dim": 0}, ValueError, r"hidden_dim=0"),
        ({"embedding_dim": 7}, ValueError, r"embedding_dim must be an even integer"),
    ],
)
def test_a_wrong_argument_is_named(
    tmp_path: Path, change: dict[str, Any], error: type[Exception], match: str
) -> None:
    MLPDenoiser(**SMALL).save_pretrained(tmp_path)
    _write_config(tmp_path, {**_config(tmp_path), **change})
    with pytest.raises(error, match=match) as info:
        MLPDenoiser.from_pretrained(tmp_path)
    assert "config.json" in str(info.value)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"gate": {"width": 3}}, ValueError, r"'gate.width' is not an argument of TimestepGate"),
        ({"gate": {"hidden_dim": "x"}}, TypeError, r"'gate.hidden_dim' must be an integer"),
        ({"gate": {"mode": "wide"}}, ValueError, r"gate mode"),
        ({"upscale": {"_class_name": "Conv2d"}}, ValueError, r"'upscale' has _class_name='Conv2d'"),
        ({"upscale": {"dim": 3}}, ValueError, r"upscale"),
    ],
)
def test_a_wrong_nested_argument_is_named(
    tmp_path: Path, change: dict[str, Any], error: type[Exception], match: str
) -> None:
    DualScaleDenoiser(**SMALL).save_pretrained(tmp_path)
    config = _config(tmp_path)
    for key, value in change.items():
        config[key] = {**config[key], **value}
    _write_config(tmp_path, config)
    with pytest.raises(error, match=match):
        DualScaleDenoiser.from_pretrained(tmp_path)


def test_flexi_unet_wrong_arguments_are_named(tmp_path: Path) -> None:
    _flexi().save_pretrained(tmp_path)
    config = _config(tmp_path)
    for change, match in (
        ({"channel_mult": [1, "2"]}, r"'channel_mult\[1\]' must be an integer"),
        ({"entry_levels": {"six": 0}}, r"'entry_levels' has a key 'six'"),
        ({"scale_shift": 1}, r"'scale_shift' must be true or false"),
        ({"attention_resolutions": 4}, r"'attention_resolutions' must be a list"),
    ):
        _write_config(tmp_path, {**config, **change})
        with pytest.raises(TypeError, match=match):
            FlexiUNet.from_pretrained(tmp_path)


def test_weights_that_do_not_fit_the_config(tmp_path: Path) -> None:
    MLPDenoiser(**SMALL).save_pretrained(tmp_path)
    _write_config(tmp_path, {**_config(tmp_path), "num_blocks": 3})
    with pytest.raises(ValueError, match=r"(?s)does not hold the weights .*blocks\.2"):
        MLPDenoiser.from_pretrained(tmp_path)


def test_missing_files_and_folders(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no folder"):
        MLPDenoiser.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no folder"):
        MLPDenoiser.from_pretrained(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape("holds no config.json")):
        MLPDenoiser.from_pretrained(tmp_path / "empty")
    MLPDenoiser(**SMALL).save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape("holds no model.safetensors")):
        MLPDenoiser.from_pretrained(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match=re.escape("holds no scheduler_config.json")):
        load_scheduler(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match=re.escape("holds no degradation_config.json")):
        load_degradation(tmp_path / "m")


def test_a_module_without_a_description_writes_nothing(tmp_path: Path) -> None:
    model = DualScaleDenoiser(**SMALL, upscale=nn.Linear(2, 2))
    with pytest.raises(TypeError, match="upscale=Linear"):
        model.save_pretrained(tmp_path / "m")
    assert not (tmp_path / "m").exists()
    with pytest.raises(TypeError, match="scheduler must be a DDPMScheduler"):
        MLPDenoiser(**SMALL).save_pretrained(tmp_path / "m", scheduler="linear")  # type: ignore[arg-type]
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------ offline loading
def test_a_local_folder_loads_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _perturbed(DualScaleDenoiser(**SMALL))
    model.save_pretrained(tmp_path, scheduler=DDPMScheduler(50))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", True)

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("loading a local folder opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    loaded = DualScaleDenoiser.from_pretrained(tmp_path)
    assert load_scheduler(tmp_path).num_train_timesteps == 50
    x, t = torch.randn(3, 2), torch.tensor([1, 2, 3])
    with torch.no_grad():
        assert torch.equal(loaded(x, t), model(x, t))
    # a repository id offline and not cached: the Hub's own error, without a connection
    with pytest.raises(Exception, match=r"(?i)offline|cannot find|not found|no config"):
        MLPDenoiser.from_pretrained("someone/not-cached-model", cache_dir=tmp_path / "cache")


# ------------------------------------------------------------------ scheduler, degradation
SCHEDULERS: dict[str, Callable[[], DDPMScheduler]] = {
    "linear": lambda: DDPMScheduler(100),
    "cosine_v": lambda: DDPMScheduler(64, "cosine", prediction_type="v_prediction"),
    "quadratic_clip": lambda: DDPMScheduler(
        30, "quadratic", 2e-4, 0.05, variance_type="fixed_large", clip_sample=2.0
    ),
    "zero_snr": lambda: DDPMScheduler(
        40, "linear", prediction_type="sample", rescale_betas_zero_snr=True
    ),
    "explicit": lambda: DDPMScheduler(betas=torch.linspace(1e-3, 0.1, 20) ** 1.5),
}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_scheduler_round_trip(tmp_path: Path, name: str) -> None:
    scheduler = SCHEDULERS[name]()
    MLPDenoiser(**SMALL).save_pretrained(tmp_path, scheduler=scheduler)
    stored = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert stored == scheduler_config(scheduler)
    assert stored["_class_name"] == "DDPMScheduler"
    loaded = load_scheduler(tmp_path)
    for attr in ("num_train_timesteps", "prediction_type", "variance_type", "clip_sample"):
        assert getattr(loaded, attr) == getattr(scheduler, attr)
    torch.testing.assert_close(loaded.betas, scheduler.betas, rtol=1e-10, atol=0.0)
    torch.testing.assert_close(
        loaded.alphas_cumprod, scheduler.alphas_cumprod, rtol=1e-9, atol=1e-15
    )


DEGRADATIONS: dict[str, Callable[[], ScaleSpaceDegradation]] = {
    "halving": lambda: ScaleSpaceDegradation(32, 3, num_train_timesteps=60),
    "factor": lambda: ScaleSpaceDegradation(64, 4, 60, factor=1.5),
    "factor_unet": lambda: ScaleSpaceDegradation(64, 3, 60, factor=1.5, unet_levels=4),
    "explicit": lambda: ScaleSpaceDegradation(resolutions=(32, 20, 12), num_train_timesteps=50),
    "explicit_unet": lambda: ScaleSpaceDegradation(
        resolutions=(64, 40, 24), num_train_timesteps=50, unet_levels=4
    ),
    "cosine_tanh": lambda: ScaleSpaceDegradation(
        16, 2, 80, "cosine", resolution_schedule="tanh", gamma=1.5
    ),
    "sigmoid": lambda: ScaleSpaceDegradation(16, 3, 40, "sigmoid", beta_start=3e-4, beta_end=0.03),
    "quadratic_equal": lambda: ScaleSpaceDegradation(
        16, 2, 30, "quadratic", "equal", beta_start=1e-4, beta_end=0.05
    ),
}


@pytest.mark.parametrize("name", list(DEGRADATIONS))
def test_degradation_round_trip(tmp_path: Path, name: str) -> None:
    degradation = DEGRADATIONS[name]()
    MLPDenoiser(**SMALL).save_pretrained(tmp_path, degradation=degradation)
    config = json.loads((tmp_path / "degradation_config.json").read_text())
    assert config == degradation_config(degradation)
    loaded = load_degradation(tmp_path)
    assert loaded.pyramid == degradation.pyramid
    assert loaded.resolution_schedule == degradation.resolution_schedule
    assert loaded.gamma == degradation.gamma
    assert torch.equal(loaded.resolution_table, degradation.resolution_table)
    torch.testing.assert_close(loaded.betas, degradation.betas, rtol=1e-10, atol=0.0)


def test_degradation_config_errors(tmp_path: Path) -> None:
    config = degradation_config(DEGRADATIONS["halving"]())
    with pytest.raises(ValueError, match=r"'levels' is not an argument of ScaleSpaceDegradation"):
        degradation_from_config({**config, "levels": 3})
    with pytest.raises(TypeError, match=r"'gamma' must be a number"):
        degradation_from_config({**config, "gamma": "half"})
    with pytest.raises(ValueError, match="not a ScaleSpaceDegradation"):
        degradation_from_config({**config, "_class_name": "FlexiUNet"})
    # a blur config takes only the blur degradation's arguments
    with pytest.raises(
        ValueError, match=r"'resolution_schedule' is not an argument of BlurDegradation"
    ):
        degradation_from_config({**config, "_class_name": "BlurDegradation"})
    with pytest.raises(TypeError, match="must be a ScaleSpaceDegradation"):
        degradation_config(DDPMScheduler(10))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"image_size": 16, "num_train_timesteps": 40},
        {
            "image_size": 8,
            "num_train_timesteps": 30,
            "beta_schedule": "cosine",
            "blur_sigma_min": 0.3,
            "blur_sigma_max": 2.5,
        },
        {"image_size": 8, "num_train_timesteps": 1},
    ],
)
def test_blur_degradation_round_trip(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    degradation = BlurDegradation(**kwargs)
    MLPDenoiser(**SMALL).save_pretrained(tmp_path, degradation=degradation)
    config = json.loads((tmp_path / "degradation_config.json").read_text())
    assert config["_class_name"] == "BlurDegradation"
    loaded = load_degradation(tmp_path)
    assert isinstance(loaded, BlurDegradation) and loaded.image_size == degradation.image_size
    torch.testing.assert_close(loaded.betas, degradation.betas, rtol=1e-10, atol=0.0)
    torch.testing.assert_close(loaded.blur_sigmas, degradation.blur_sigmas, rtol=1e-12, atol=0.0)
    x0 = torch.rand(2, 1, degradation.image_size, degradation.image_size, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=x0.dtype)
    t = torch.tensor([0, kwargs["num_train_timesteps"] - 1])
    torch.testing.assert_close(loaded.add_noise(x0, noise, t), degradation.add_noise(x0, noise, t))


def test_stale_sidecars_are_removed(tmp_path: Path) -> None:
    model = MLPDenoiser(**SMALL)
    model.save_pretrained(
        tmp_path, scheduler=DDPMScheduler(10), degradation=DEGRADATIONS["halving"]()
    )
    assert (tmp_path / "scheduler_config.json").is_file()
    model.save_pretrained(tmp_path)
    assert not (tmp_path / "scheduler_config.json").exists()
    assert not (tmp_path / "degradation_config.json").exists()


def test_one_folder_is_enough_to_sample_ddpm(tmp_path: Path) -> None:
    model = _perturbed(DualScaleDenoiser.from_preset("adaptive", **SMALL))
    scheduler = DDPMScheduler(20, "cosine")
    model.save_pretrained(tmp_path, scheduler=scheduler)
    again = sample(
        DualScaleDenoiser.from_pretrained(tmp_path),
        load_scheduler(tmp_path),
        (64, 2),
        generator=torch.Generator().manual_seed(3),
    )
    reference = sample(model, scheduler, (64, 2), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(again, reference, rtol=1e-6, atol=1e-6)


def test_one_folder_is_enough_to_sample_scale_space(tmp_path: Path) -> None:
    degradation = ScaleSpaceDegradation(8, 2, num_train_timesteps=10)
    model = _perturbed(_flexi(attention_resolutions=()), seed=4)
    model.save_pretrained(tmp_path, degradation=degradation)
    kwargs: dict[str, Any] = {"channels": 1}
    with torch.no_grad():
        again = scale_space_sample(
            FlexiUNet.from_pretrained(tmp_path),
            load_degradation(tmp_path),
            3,
            generator=torch.Generator().manual_seed(1),
            **kwargs,
        )
        reference = scale_space_sample(
            model, degradation, 3, generator=torch.Generator().manual_seed(1), **kwargs
        )
    assert again.shape == (3, 1, 8, 8)
    torch.testing.assert_close(again, reference, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ export of training results
def test_export_of_the_2d_training_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    scheduler = DDPMScheduler(20)
    data = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    result = train(
        DualScaleDenoiser(**SMALL),
        scheduler,
        data,
        steps=12,
        batch_size=16,
        ema_every=2,
        ema_warmup=None,
        generator=torch.Generator().manual_seed(0),
    )
    assert list(tmp_path.iterdir()) == []  # training wrote nothing
    folder = result.export_pretrained(tmp_path / "pretrained", scheduler=scheduler)
    loaded = DualScaleDenoiser.from_pretrained(folder)
    x, t = torch.randn(5, 2), torch.arange(5)
    with torch.no_grad():
        assert torch.equal(loaded(x, t), result.ema.eval()(x, t))
        assert not torch.equal(loaded(x, t), result.model.eval()(x, t))  # the average
    assert load_scheduler(folder).num_train_timesteps == 20
    # the free function takes the result, its AveragedModel or the model itself
    for obj in (result, result.ema_model, result.ema):
        export_pretrained(obj, tmp_path / "again")
        assert _config(tmp_path / "again") == _config(folder)


def test_export_of_the_image_training_result(tmp_path: Path) -> None:
    degradation = ScaleSpaceDegradation(8, 2, num_train_timesteps=10)
    torch.manual_seed(0)
    model = _flexi(attention_resolutions=())

    def loss(net: nn.Module, batch: list[Tensor], gen: torch.Generator) -> Tensor:
        return scale_space_loss(net, degradation, batch[0], generator=gen)

    images = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    result = train_images(
        model,
        loss,
        DataLoader(TensorDataset(images), batch_size=4),
        ImageTrainConfig(steps=3, lr=1e-3, ema_decay=0.5, ema_every=1),
        generator=torch.Generator().manual_seed(2),
    )
    folder = result.export_pretrained(tmp_path / "pretrained", degradation=degradation)
    loaded = FlexiUNet.from_pretrained(folder)
    assert load_degradation(folder).pyramid == degradation.pyramid
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([0, 9])
    with torch.no_grad():
        assert torch.equal(loaded(x, t), result.ema.eval()(x, t))


def test_export_unwraps_and_rejects(tmp_path: Path) -> None:
    model = _perturbed(MLPDenoiser(**SMALL))
    export_pretrained(AveragedModel(model), tmp_path / "avg")
    x, t = torch.randn(3, 2), torch.arange(3)
    with torch.no_grad():
        assert torch.equal(MLPDenoiser.from_pretrained(tmp_path / "avg")(x, t), model(x, t))
    with pytest.raises(
        TypeError,
        match=r"Linear cannot be saved .* no PretrainedMixin .* docs page 'Your own network', "
        r"section 'Saving and loading your own network'",
    ):
        export_pretrained(nn.Linear(2, 2), tmp_path / "x")
    with pytest.raises(TypeError, match="must be a training result"):
        export_pretrained("model", tmp_path / "x")
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------ optional dependency
def test_import_scalemix_needs_no_hub(tmp_path: Path) -> None:
    code = f"""
import sys
sys.modules["huggingface_hub"] = None  # import fails, as without the extra
sys.modules["safetensors"] = None
import scalemix, scalemix.hub, scalemix.nn, scalemix.training
from scalemix.nn import MLPDenoiser
try:
    MLPDenoiser(8, 16, 1).save_pretrained({str(tmp_path / "m")!r})
except ImportError as err:
    print(err)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert "pip install 'scalemix[hub]'" in out.stdout
    assert not (tmp_path / "m").exists()


def test_without_the_extra_methods_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match=re.escape("pip install 'scalemix[hub]'")):
        MLPDenoiser.from_pretrained(tmp_path)
    with pytest.raises(ImportError, match=re.escape("scalemix[hub]")):
        load_scheduler(tmp_path)


# ------------------------------------------------------------------ the docs page
def test_docs_page_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    page = (ROOT / "docs" / "pretrained.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.DOTALL)
    assert blocks
    namespace: dict[str, object] = {"__name__": "docs_pretrained"}
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            for code in blocks:
                exec(compile(code, "docs/pretrained.md", "exec"), namespace)
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------ networks of one's own
@dataclass(frozen=True)
class OwnConfig:
    width: int = 4
    gain: float = 1.0
    kernels: tuple[int, ...] = (3, 1)
    activation: str = "relu"
    bias: bool = True
    groups: int | None = None


class OwnNet(PretrainedMixin, nn.Module):
    """A network of one's own: a frozen dataclass config, the constructor's one argument."""

    config: OwnConfig

    def __init__(self, config: OwnConfig) -> None:
        super().__init__()
        self.config = config
        k1, k2 = config.kernels
        self.conv1 = nn.Conv2d(1, config.width, k1, padding=k1 // 2, bias=config.bias)
        self.conv2 = nn.Conv2d(config.width, 1, k2, padding=k2 // 2, bias=config.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        out: Tensor = self.conv2(torch.relu(self.conv1(x))) * self.config.gain
        return out


@dataclass
class MutableConfig:
    width: int = 4


@dataclass(frozen=True)
class MappingConfig:
    sizes: dict[str, int]


class NoConfigNet(PretrainedMixin, nn.Linear):
    pass


class MutableConfigNet(PretrainedMixin, nn.Module):
    config: MutableConfig


class MappingConfigNet(PretrainedMixin, nn.Module):
    config: MappingConfig


def test_own_network_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = OwnConfig(width=3, gain=0.5, kernels=(5, 3), activation="relu", groups=None)
    net = OwnNet(config)
    folder = net.save_pretrained(tmp_path / "own")
    saved = json.loads((folder / "config.json").read_text())
    # the dataclass fields as JSON, tuples as lists, with the class name and version
    assert {k: v for k, v in saved.items() if k != "_scalemix_version"} == {
        "_class_name": "OwnNet",
        "width": 3,
        "gain": 0.5,
        "kernels": [5, 3],
        "activation": "relu",
        "bias": True,
        "groups": None,
    }
    loaded = OwnNet.from_pretrained(folder)
    assert loaded.config == config and not loaded.training
    x, t = torch.randn(2, 1, 6, 6), torch.tensor([0, 1])
    with torch.no_grad():
        assert torch.equal(loaded(x, t), net(x, t))
    # export_pretrained takes it (and unwraps its moving average) like a built-in model
    export_pretrained(AveragedModel(net), tmp_path / "avg")
    assert OwnNet.from_pretrained(tmp_path / "avg").config == config


def test_own_network_config_json_is_checked(tmp_path: Path) -> None:
    folder = OwnNet(OwnConfig()).save_pretrained(tmp_path / "own")
    saved = json.loads((folder / "config.json").read_text())
    for key, value, error, message in [
        ("width", 2.5, TypeError, "'width' must be an integer"),
        ("kernels", [3, "x"], TypeError, r"'kernels\[1\]' must be an integer"),
        ("groups", "two", TypeError, "'groups' must be an integer"),
        ("depth", 3, ValueError, "'depth' is not an argument of OwnNet; accepted: activation"),
    ]:
        (folder / "config.json").write_text(json.dumps({**saved, key: value}))
        with pytest.raises(error, match=message):
            OwnNet.from_pretrained(folder)


DOCS_POINTER = "see the docs page 'Your own network', section 'Saving and loading your own network'"


@pytest.mark.parametrize(
    ("model", "what"),
    [
        (NoConfigNet(2, 2), "it declares no config"),
        (MutableConfigNet(), "MutableConfigNet cannot .* annotated .*MutableConfig.*, which is no"),
        (MappingConfigNet(), "config field 'sizes' has the type dict\\[str, int\\]; accepted: int"),
    ],
)
def test_unsupported_own_network_names_the_problem_and_the_docs(
    tmp_path: Path, model: nn.Module, what: str
) -> None:
    with pytest.raises(TypeError, match=what) as err:
        export_pretrained(model, tmp_path / "x")
    assert DOCS_POINTER in str(err.value)
    if isinstance(model, PretrainedMixin):  # the method itself says the same
        with pytest.raises(TypeError, match=what) as err:
            model.save_pretrained(tmp_path / "x")
        assert DOCS_POINTER in str(err.value)
    assert not (tmp_path / "x").exists()  # checked before anything is written


def test_own_network_with_a_config_of_another_class(tmp_path: Path) -> None:
    net = OwnNet(OwnConfig())
    net.config = MutableConfig()  # type: ignore[assignment]
    with pytest.raises(TypeError, match=r"self\.config is a MutableConfig, not the declared"):
        net.save_pretrained(tmp_path / "x")


def test_own_networks_page_runs_and_prints_what_it_states(monkeypatch: pytest.MonkeyPatch) -> None:
    """The python blocks of docs/own_networks.md, run in order as one script.

    They run as a reader's module would (its own entry in ``sys.modules``, none of this
    file's ``__future__`` flags), and print what the page says they print.
    """
    page = (ROOT / "docs" / "own_networks.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.DOTALL)
    stated = re.findall(r"It prints `([^`]*)`", page)
    module = types.ModuleType("own_networks_page")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    out = io.StringIO()
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(out):
            for code in blocks:
                exec(compile(code, "own_networks.md", "exec", dont_inherit=True), module.__dict__)
    finally:
        torch.set_num_threads(threads)
    assert len(blocks) == 3 and out.getvalue().splitlines() == stated


# ------------------------------------------------------------------ class conditioning
CONDITIONAL_MODELS: dict[str, Callable[..., nn.Module]] = {
    "flexi": _flexi,
    "mlp": lambda **kw: MLPDenoiser(8, 16, 2, **kw),
    "dual": lambda **kw: DualScaleDenoiser.from_preset("learned", **SMALL, **kw),
}


@pytest.mark.parametrize("name", list(CONDITIONAL_MODELS))
def test_num_classes_round_trips(tmp_path: Path, name: str) -> None:
    model = _perturbed(CONDITIONAL_MODELS[name](num_classes=4))
    model.save_pretrained(tmp_path)
    assert _config(tmp_path)["num_classes"] == 4
    loaded = type(model).from_pretrained(str(tmp_path))  # type: ignore[attr-defined]
    assert loaded.num_classes == 4 and loaded.class_embed.num_embeddings == 5
    g = torch.Generator().manual_seed(3)
    shape = (3, 1, 8, 8) if name == "flexi" else (3, 2)
    x, t, y = torch.randn(shape, generator=g), torch.tensor([1, 5, 9]), torch.tensor([0, 3, 4])
    with torch.no_grad():
        assert torch.equal(loaded(x, t, class_labels=y), model(x, t, class_labels=y))
        assert torch.equal(loaded(x, t), model(x, t))


@pytest.mark.parametrize("name", list(CONDITIONAL_MODELS))
def test_a_config_saved_without_num_classes_loads_unconditional(tmp_path: Path, name: str) -> None:
    model = _perturbed(CONDITIONAL_MODELS[name]())
    model.save_pretrained(tmp_path)
    config = _config(tmp_path)
    assert config.pop("num_classes") is None
    _write_config(tmp_path, config)  # as written before num_classes existed
    loaded = type(model).from_pretrained(str(tmp_path))  # type: ignore[attr-defined]
    assert loaded.num_classes is None and loaded.pretrained_config() == model.pretrained_config()  # type: ignore[operator]
    with pytest.raises(TypeError, match="num_classes"):
        type(model).from_config({**config, "num_classes": "10"})  # type: ignore[attr-defined]
