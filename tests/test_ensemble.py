"""train_ensemble: N copies trained at once equal N separate train() runs."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from scalemix import DDPMScheduler, DualScaleDenoiser, MLPDenoiser
from scalemix.training import (
    EnsembleResult,
    EnsembleState,
    TrainConfig,
    TrainingResult,
    periodic_ema,
    train,
    train_ensemble,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dual_scale_2d"
SMALL = {"embedding_dim": 16, "hidden_dim": 32, "num_blocks": 2}
SETTINGS: dict[str, Any] = {"steps": 23, "batch_size": 48, "ema_every": 4, "grad_clip": 0.05}


def _mlp() -> nn.Module:
    return MLPDenoiser(**SMALL)


def _dual() -> nn.Module:
    return DualScaleDenoiser.from_preset("adaptive", **SMALL)


def _datasets(n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    return [torch.randn(200, 2, generator=g) * (1 + k) for k in range(n)]


def _assert_same_module(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize(("build", "loss"), [(_mlp, "mse"), (_mlp, "hybrid"), (_dual, "mse")])
def test_equals_separate_runs(build: Callable[[], nn.Module], loss: str) -> None:
    """Three copies with their own seeds, data, clipping, AdamW and EMA match train()."""
    scheduler = DDPMScheduler(50)
    data = _datasets(3)
    separate = []
    for k in range(3):
        torch.manual_seed(k)
        model = build()
        gen = torch.Generator().manual_seed(100 + k)
        separate.append(train(model, scheduler, data[k], generator=gen, loss=loss, **SETTINGS))
    models = []
    for k in range(3):
        torch.manual_seed(k)
        models.append(build())
    gens = [torch.Generator().manual_seed(100 + k) for k in range(3)]
    result = train_ensemble(models, scheduler, data, generators=gens, loss=loss, **SETTINGS)
    assert result.losses.shape == (3, SETTINGS["steps"])
    assert result.vectorized  # every built-in 2D denoiser runs under torch.vmap
    for k in range(3):
        torch.testing.assert_close(result.losses[k], separate[k].losses, rtol=1e-5, atol=1e-6)
        _assert_same_module(result.models[k], separate[k].model)
        _assert_same_module(result.ema_models[k], separate[k].ema)
        assert result.models[k] is models[k]


def test_copies_differ_and_shared_data() -> None:
    """One shared data tensor: different seeds still give different copies."""
    torch.manual_seed(0)
    models = [_mlp() for _ in range(2)]
    gens = [torch.Generator().manual_seed(k) for k in range(2)]
    data = _datasets(1)[0]
    result = train_ensemble(models, DDPMScheduler(20), data, generators=gens, steps=3)
    assert not torch.equal(result.losses[0], result.losses[1])
    assert torch.isfinite(result.losses).all()


def test_periodic_ema_matches_train_rule() -> None:
    schedule = periodic_ema(0.9, 3)
    assert [schedule(s) for s in range(1, 10)] == [
        None,
        None,
        0.0,
        None,
        None,
        0.9,
        None,
        None,
        0.9,
    ]


def test_ema_schedule_argument() -> None:
    """A schedule that copies at every step leaves the EMA equal to the weights."""
    torch.manual_seed(0)
    models = [_mlp() for _ in range(2)]
    gens = [torch.Generator().manual_seed(k) for k in range(2)]
    result = train_ensemble(
        models,
        DDPMScheduler(20),
        _datasets(2),
        generators=gens,
        steps=4,
        ema_schedule=lambda s: 0.0,
    )
    for model, ema in zip(result.models, result.ema_models, strict=True):
        _assert_same_module(model, ema)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"generators": [torch.Generator()]}, "generators must hold 2"),
        ({"data": _datasets(3)}, "data must be one tensor or 2"),
        ({"models": [_mlp(), _dual()]}, "differs from models"),
        ({"steps": 0}, "steps must be an int >= 1"),
        ({"loss": "l1"}, "loss"),
        ({"ema_decay": 2.0}, r"TrainConfig\.ema_decay must be a finite number >= 0 and <= 1"),
    ],
)
def test_bad_input(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {
        "models": [_mlp(), _mlp()],
        "data": _datasets(2),
        "generators": [torch.Generator(), torch.Generator()],
        "steps": 2,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        train_ensemble(
            args.pop("models"),  # type: ignore[arg-type]
            DDPMScheduler(10),
            args.pop("data"),  # type: ignore[arg-type]
            **args,  # type: ignore[arg-type]
        )


def test_run_study_batched_matches_separate_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_study.py --batched reproduces the separate runs' losses, eval loss and KL."""
    pytest.importorskip("matplotlib")
    monkeypatch.syspath_prepend(str(EXAMPLE))
    for name in ("run_study", "batched"):
        sys.modules.pop(name, None)
    import run_study

    small = dataclasses.replace(run_study.QUICK, n_data=2_000, n_samples=500)
    monkeypatch.setattr(run_study, "QUICK", small)
    monkeypatch.setattr(run_study, "write_plots", lambda *args, **kwargs: None)
    argv = ["--quick", "--steps", "4", "--datasets", "moons", "line", "--models", "baseline"]
    argv += ["--threads", "1"]
    runs = {}
    for flag in ([], ["--batched"]):
        out = tmp_path / ("batched" if flag else "separate")
        run_study.main([*argv, *flag, "--out", str(out)])
        data = json.loads((out / "results.json").read_text())
        runs[bool(flag)] = {(r["dataset"], r["seed"]): r for r in data["runs"]}
    assert runs[True].keys() == runs[False].keys() and len(runs[True]) == 2
    for key, sep in runs[False].items():
        bat = runs[True][key]
        assert bat["batched"] is True
        for field in ("losses", "eval_loss", "kl"):
            np.testing.assert_allclose(bat[field], sep[field], rtol=1e-5, atol=1e-6)


def test_compiled_ensemble_equals_eager() -> None:
    """compile= (the eager backend: dynamo tracing of the vmapped dual-scale forward)
    leaves every loss and weight as in the uncompiled run."""
    scheduler = DDPMScheduler(50)
    results = []
    for compile_arg in (False, "eager"):
        models = []
        for k in range(2):
            torch.manual_seed(k)
            models.append(_dual())
        gens = [torch.Generator().manual_seed(100 + k) for k in range(2)]
        results.append(
            train_ensemble(
                models, scheduler, _datasets(2), generators=gens, compile=compile_arg, steps=6
            )
        )
    torch.testing.assert_close(results[1].losses, results[0].losses, rtol=1e-5, atol=1e-6)
    for a, b in zip(results[0].models, results[1].models, strict=True):
        _assert_same_module(a, b)


def _two_copies(**kwargs: Any) -> EnsembleResult:
    models = []
    for k in range(2):
        torch.manual_seed(k)
        models.append(_mlp())
    gens = [torch.Generator().manual_seed(100 + k) for k in range(2)]
    return train_ensemble(models, DDPMScheduler(20), _datasets(2), generators=gens, **kwargs)


def test_config_equals_keywords_and_callback_sees_every_step() -> None:
    """``config=TrainConfig(...)`` is the keyword run bit for bit; the callback's state
    holds each step's per-copy losses and learning rate."""
    by_keywords = _two_copies(**SETTINGS)
    states: list[EnsembleState] = []
    by_config = _two_copies(config=TrainConfig(**SETTINGS), callback=states.append)
    assert torch.equal(by_keywords.losses, by_config.losses)
    for a, b in zip(by_keywords.ema_models, by_config.ema_models, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert [s.step for s in states] == list(range(1, SETTINGS["steps"] + 1))
    got = torch.stack([s.losses.cpu() for s in states], dim=1)
    assert torch.equal(got, by_config.losses)
    assert states[0].lr == pytest.approx(3e-4) and states[-1].lr < states[0].lr


def test_result_shares_the_training_result_attributes(tmp_path: Path) -> None:
    result = _two_copies(steps=3)
    assert isinstance(result, TrainingResult)
    assert isinstance(result.ema, nn.ModuleList) and len(result.ema) == 2
    assert all(a is b for a, b in zip(result.ema, result.ema_models, strict=True))
    assert result.losses.shape == (2, 3) and result.losses.device.type == "cpu"
    pytest.importorskip("huggingface_hub")
    pytest.importorskip("safetensors")
    one = result.export_pretrained(tmp_path / "one", index=1)
    assert (one / "config.json").is_file()
    every = result.export_pretrained(tmp_path / "all")
    assert sorted(p.name for p in every.iterdir()) == ["copy_0", "copy_1"]
    loaded = MLPDenoiser.from_pretrained(one)
    for a, b in zip(loaded.parameters(), result.ema_models[1].parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_loss_function_is_rejected() -> None:
    with pytest.raises(ValueError, match="'mse' or 'hybrid'"):
        _two_copies(steps=2, loss=lambda model, scheduler, x0, *, generator: x0.sum())
