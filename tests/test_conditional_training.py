"""Conditioning in training: label dropout, ``model_kwargs`` in the losses, labelled
data in the three trainers (reproducible, resumable, equal to separate runs)."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from scalemix import DDPMScheduler
from scalemix.training import (
    ImageTrainConfig,
    TrainConfig,
    drop_labels,
    eps_mse_loss,
    evaluate_eps_mse,
    hybrid_loss,
    train,
    train_ensemble,
)
from scalemix.training.conditioning import null_label_of

T = 50
K = 3  # classes; index K is the null class


class CondMLP(nn.Module):
    """A small class-conditional denoiser: label and time embeddings added, then an MLP."""

    def __init__(self, num_classes: int | None = K, dim: int = 2, width: int = 16) -> None:
        super().__init__()
        if num_classes is not None:
            self.num_classes = num_classes
        self.label = nn.Embedding((num_classes or K) + 1, width)
        self.time = nn.Embedding(T, width)
        self.net = nn.Sequential(nn.Linear(dim + width, 32), nn.GELU(), nn.Linear(32, dim))

    def forward(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        h = self.time(t)
        if class_labels is not None:
            h = h + self.label(class_labels)
        return self.net(torch.cat([x, h], dim=-1))


class Ignoring(CondMLP):
    """Takes ``class_labels`` and ignores them."""

    def forward(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        return super().forward(x, t)


def cond_mlp(seed: int = 0, cls: type[CondMLP] = CondMLP, **kw: Any) -> CondMLP:
    torch.manual_seed(seed)
    return cls(**kw)


def encoded_points(n: int) -> tuple[Tensor, Tensor]:
    """Point ``i`` is ``(i / n, -i / n)`` with label ``i % K``: a batch's labels can be
    recovered from its points."""
    i = torch.arange(n)
    return torch.stack([i / n, -i / n], dim=1).float(), i % K


def label_of(x0: Tensor, n: int) -> Tensor:
    return (x0[:, 0].double() * n).round().long() % K


def recording_loss(seen: list[tuple[Tensor, Tensor | None]]) -> Any:
    def loss(model: nn.Module, scheduler: DDPMScheduler, x0: Tensor, **kw: Any) -> Tensor:
        mk = kw.get("model_kwargs")
        seen.append((x0.detach().clone(), None if mk is None else mk["class_labels"].clone()))
        return eps_mse_loss(model, scheduler, x0, **kw)

    return loss


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------- drop_labels
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_drop_rate_is_p_within_sampling_error(p: float) -> None:
    """Over n = 200,000 labels the dropped fraction is Binomial(n, p) / n: within five
    standard deviations sqrt(p (1 - p) / n) of p; kept labels are unchanged."""
    n = 200_000
    labels = torch.randint(0, K, (n,), generator=torch.Generator().manual_seed(0))
    out = drop_labels(labels, p, null_label=K, generator=torch.Generator().manual_seed(1))
    dropped = out == K
    assert torch.equal(out[~dropped], labels[~dropped])
    rate = float(dropped.double().mean())
    assert abs(rate - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_drop_labels_seed_shape_dtype_and_edges() -> None:
    labels = torch.randint(0, 5, (4, 6), generator=torch.Generator().manual_seed(0)).int()
    a = drop_labels(labels, 0.3, null_label=5, generator=torch.Generator().manual_seed(2))
    b = drop_labels(labels, 0.3, null_label=5, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and a.shape == labels.shape and a.dtype == torch.int32
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    same = drop_labels(labels, 0.0, null_label=5, generator=gen)
    assert torch.equal(same, labels) and same is not labels
    assert torch.equal(gen.get_state(), state)  # p = 0 draws nothing
    assert bool((drop_labels(labels, 1.0, null_label=5, generator=gen) == 5).all())
    for bad in (-0.1, 1.5, math.nan, True):
        with pytest.raises(ValueError, match="p must be"):
            drop_labels(labels, bad, null_label=5, generator=gen)
    with pytest.raises(ValueError, match="integer"):
        drop_labels(labels.float(), 0.5, null_label=5, generator=gen)
    with pytest.raises(TypeError, match="null_label"):
        drop_labels(labels, 0.5, null_label=5.0, generator=gen)  # type: ignore[arg-type]


def test_null_label_is_num_classes_through_wrappers() -> None:
    model = cond_mlp()

    class Wrapper(nn.Module):
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

    assert null_label_of(model) == K
    assert null_label_of(AveragedModel(model)) == K
    assert null_label_of(Wrapper(Wrapper(model))) == K
    assert null_label_of(cond_mlp(num_classes=None)) is None
    assert null_label_of(nn.Linear(2, 2)) is None


# ---------------------------------------------------------------- losses
@pytest.mark.parametrize("loss", [eps_mse_loss, hybrid_loss])
def test_losses_pass_model_kwargs_to_the_model(loss: Any) -> None:
    """The loss with ``model_kwargs`` equals the loss of the model with the labels bound."""
    scheduler, model = DDPMScheduler(T), cond_mlp()
    x0 = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3, 1, 0])

    def bound(x: Tensor, t: Tensor) -> Tensor:
        return model(x, t, class_labels=labels)

    got = loss(
        model, scheduler, x0, generator=torch.Generator().manual_seed(1),
        model_kwargs={"class_labels": labels},
    )  # fmt: skip
    ref = loss(bound, scheduler, x0, generator=torch.Generator().manual_seed(1))
    unconditional = loss(model, scheduler, x0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(got, ref) and not torch.equal(got, unconditional)
    with pytest.raises(ValueError, match=r"model_kwargs\['class_labels'\].*batch size 6"):
        loss(model, scheduler, x0, model_kwargs={"class_labels": labels[:5]})
    with pytest.raises(ValueError, match="class_labels"):
        loss(model, scheduler, x0, model_kwargs={"class_labels": torch.tensor(1)})


def test_evaluation_chunks_model_kwargs_with_the_data() -> None:
    scheduler, model = DDPMScheduler(T), cond_mlp()
    x0, labels = encoded_points(7)
    seen: list[Tensor] = []

    class Recording(nn.Module):
        def forward(self, x: Tensor, t: Tensor, class_labels: Tensor) -> Tensor:
            seen.append(class_labels)
            out: Tensor = model(x, t, class_labels=class_labels)
            return out

    value = evaluate_eps_mse(
        Recording(), scheduler, x0, batch_size=3, generator=torch.Generator().manual_seed(0),
        model_kwargs={"class_labels": labels},
    )  # fmt: skip
    assert [s.tolist() for s in seen] == [[0, 1, 2], [0, 1, 2], [0]]
    assert math.isfinite(value)


# ---------------------------------------------------------------- train
SETTINGS: dict[str, Any] = {"steps": 12, "batch_size": 8, "ema_every": 3, "lr": 1e-2}


def test_labels_without_dropout_reach_the_loss_unchanged() -> None:
    n = 30
    x, y = encoded_points(n)
    seen: list[tuple[Tensor, Tensor | None]] = []
    gen = torch.Generator().manual_seed(5)
    train(cond_mlp(), DDPMScheduler(T), (x, y), loss=recording_loss(seen), generator=gen,
          **SETTINGS)  # fmt: skip
    assert len(seen) == SETTINGS["steps"]
    for x0, labels in seen:
        assert labels is not None and labels.dtype == torch.int64
        assert torch.equal(labels, label_of(x0, n))


def test_labelled_run_without_dropout_draws_like_an_unlabelled_one() -> None:
    """``label_dropout=0`` draws nothing: with a model that ignores its labels the run
    equals the unlabelled run bit for bit."""
    x, y = encoded_points(40)
    runs = [
        train(
            cond_mlp(cls=Ignoring),
            DDPMScheduler(T),
            data,
            loss=loss,
            generator=torch.Generator().manual_seed(5),
            **SETTINGS,
        )
        for data, loss in (((x, y), "hybrid"), (x, "hybrid"))
    ]
    assert torch.equal(runs[0].losses, runs[1].losses)
    assert same_weights(runs[0].model, runs[1].model) and same_weights(runs[0].ema, runs[1].ema)


def test_dropout_replaces_labels_by_the_null_class_reproducibly() -> None:
    n, p = 60, 0.4
    x, y = encoded_points(n)
    results, records = [], []
    for _ in range(2):
        seen: list[tuple[Tensor, Tensor | None]] = []
        results.append(
            train(
                cond_mlp(),
                DDPMScheduler(T),
                (x, y),
                loss=recording_loss(seen),
                generator=torch.Generator().manual_seed(5),
                label_dropout=p,
                **(SETTINGS | {"steps": 60}),
            )
        )
        records.append(seen)
    assert torch.equal(results[0].losses, results[1].losses)
    assert same_weights(results[0].model, results[1].model)
    dropped = total = 0
    for x0, labels in records[0]:
        assert labels is not None
        null = labels == K
        assert torch.equal(labels[~null], label_of(x0, n)[~null])
        dropped, total = dropped + int(null.sum()), total + labels.numel()
    assert abs(dropped / total - p) < 5 * math.sqrt(p * (1 - p) / total)


def test_bad_labelled_data_is_refused() -> None:
    x, y = encoded_points(10)
    scheduler = DDPMScheduler(T)
    cases: list[tuple[nn.Module, Any, dict[str, Any], str]] = [
        (cond_mlp(num_classes=None), (x, y), {"label_dropout": 0.1}, "num_classes"),
        (cond_mlp(), (x, y + K), {}, r"labels must lie in \[0, 3\]"),
        (cond_mlp(), (x, y[:9]), {}, r"shape \(10,\)"),
        (cond_mlp(), (x, y.float()), {}, "integer"),
        (cond_mlp(), (x, y, y), {}, "pair"),
    ]
    for model, data, kw, match in cases:
        with pytest.raises(ValueError, match=match):
            train(model, scheduler, data, steps=1, **kw)
    with pytest.raises(ValueError, match="label_dropout"):
        TrainConfig(steps=1, label_dropout=1.5)
    with pytest.raises(ValueError, match="label_dropout"):
        ImageTrainConfig(steps=1, label_dropout=-0.5)


# ---------------------------------------------------------------- train_ensemble
@pytest.mark.parametrize("per_copy", [False, True])
def test_labelled_ensemble_equals_separate_runs(per_copy: bool) -> None:
    """Copy ``k`` draws its batch, its label dropout, noise and timesteps from its own
    generator exactly as ``train`` does: the results agree to float rounding."""
    n_copies, scheduler = 3, DDPMScheduler(T)
    x, y = encoded_points(48)
    ys = [torch.roll(y, k) for k in range(n_copies)] if per_copy else [y] * n_copies
    settings = SETTINGS | {"label_dropout": 0.3}
    separate = [
        train(
            cond_mlp(k),
            scheduler,
            (x, ys[k]),
            generator=torch.Generator().manual_seed(k + 9),
            **settings,
        )
        for k in range(n_copies)
    ]
    result = train_ensemble(
        [cond_mlp(k) for k in range(n_copies)], scheduler, (x, ys if per_copy else y),
        generators=[torch.Generator().manual_seed(k + 9) for k in range(n_copies)], **settings,
    )  # fmt: skip
    assert result.vectorized
    for k in range(n_copies):
        torch.testing.assert_close(result.losses[k], separate[k].losses, rtol=1e-5, atol=1e-6)
        for a, b in (
            (result.models[k], separate[k].model),
            (result.ema_models[k], separate[k].ema),
        ):
            for key, value in a.state_dict().items():
                torch.testing.assert_close(value, b.state_dict()[key], rtol=1e-5, atol=1e-6)


def test_ensemble_refuses_dropout_without_num_classes() -> None:
    x, y = encoded_points(8)
    with pytest.raises(ValueError, match="num_classes"):
        train_ensemble([cond_mlp(num_classes=None)], DDPMScheduler(T), (x, y),
                       generators=[torch.Generator()], steps=1, label_dropout=0.2)  # fmt: skip


def test_library_network_trains_on_a_labelled_mixture() -> None:
    """``MLPDenoiser(num_classes=3)`` on :func:`make_labelled_mixture` with label
    dropout: ``train`` and a one-copy ``train_ensemble`` give the same run."""
    from scalemix import MLPDenoiser
    from scalemix.datasets import make_labelled_mixture

    points, labels = make_labelled_mixture(["moons", "circle", "line"], 300, seed=0)

    def build() -> nn.Module:
        torch.manual_seed(0)
        return MLPDenoiser(num_classes=K, embedding_dim=16, hidden_dim=32, num_blocks=1)

    settings = SETTINGS | {"label_dropout": 0.2}
    one = train(build(), DDPMScheduler(T), (points, labels),
                generator=torch.Generator().manual_seed(3), **settings)  # fmt: skip
    many = train_ensemble([build()], DDPMScheduler(T), (points, labels),
                          generators=[torch.Generator().manual_seed(3)], **settings)  # fmt: skip
    assert bool(torch.isfinite(one.losses).all())
    torch.testing.assert_close(many.losses[0], one.losses, rtol=1e-5, atol=1e-6)


def test_library_conditional_networks_train_as_one_vmapped_ensemble() -> None:
    """The networks' label check reads no values of vmapped labels: the fast path runs,
    and each copy equals its own ``train`` run."""
    from scalemix.datasets import make_labelled_mixture
    from scalemix.nn import DualScaleDenoiser, MLPDenoiser

    points, labels = make_labelled_mixture(["moons", "circle"], n=256, seed=0)
    scheduler = DDPMScheduler(T)
    settings = {"steps": 4, "batch_size": 32, "label_dropout": 0.2}
    for make in (lambda: MLPDenoiser(num_classes=2), lambda: DualScaleDenoiser(num_classes=2)):
        torch.manual_seed(0)
        first = make()
        copies = [first, make()]
        alone = copy.deepcopy(first)
        result = train_ensemble(
            copies, scheduler, (points, labels),
            generators=[torch.Generator().manual_seed(k) for k in range(2)], **settings,
        )  # fmt: skip
        assert result.vectorized
        single = train(
            alone,
            scheduler,
            (points, labels),
            generator=torch.Generator().manual_seed(0),
            **settings,
        )
        torch.testing.assert_close(result.losses[0], single.losses, rtol=1e-5, atol=1e-6)
