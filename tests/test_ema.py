"""The reference's EMA warm-up: the decay formula and its use in AveragedModel and train."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from scalemix import DDPMScheduler
from scalemix.training import (
    TrainState,
    ema_warmup_decay,
    make_ema,
    train,
    warmup_ema_multi_avg_fn,
)
from scalemix.training.ema import ema_updater


def reference_decay(k: int, beta: float = 0.995, warmup: int = 100) -> float:
    """ema_pytorch's get_current_decay, written out in plain Python."""
    epoch = k - warmup
    if epoch <= 0:
        return 0.0
    return min(beta, max(0.0, 1.0 - (1.0 + epoch) ** (-2.0 / 3.0)))


def test_decay_values_from_the_formula() -> None:
    assert float(ema_warmup_decay(110)) == pytest.approx(0.7978, abs=1e-4)  # 1 - 11^(-2/3)
    assert float(ema_warmup_decay(200)) == pytest.approx(1 - 101 ** (-2 / 3), rel=1e-12)
    steps = torch.arange(0, 101)
    assert torch.equal(ema_warmup_decay(steps), torch.zeros(101, dtype=torch.float64))
    # the decay reaches beta first at e = 200^(3/2) - 1 = 2827.4, i.e. call 2,930 in tens
    grid = torch.arange(0, 5_000, 10)
    first = int(grid[ema_warmup_decay(grid) == 0.995][0])
    assert first == 2_930
    assert float(ema_warmup_decay(2_920)) < 0.995


@given(st.integers(0, 100_000), st.floats(0.0, 1.0), st.integers(0, 500))
def test_decay_matches_reference_and_is_monotone(k: int, beta: float, warmup: int) -> None:
    got = float(ema_warmup_decay(k, beta=beta, warmup=warmup))
    assert got == pytest.approx(reference_decay(k, beta, warmup), rel=1e-12, abs=1e-15)
    assert 0.0 <= got <= beta
    assert float(ema_warmup_decay(k + 7, beta=beta, warmup=warmup)) >= got


def test_decay_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="beta"):
        ema_warmup_decay(5, beta=1.5)
    with pytest.raises(ValueError, match="warmup"):
        ema_warmup_decay(5, warmup=-1)
    with pytest.raises(TypeError, match="integer tensor"):
        ema_warmup_decay(torch.tensor([1.5]))
    with pytest.raises(ValueError, match="every"):
        warmup_ema_multi_avg_fn(every=0)


def test_averaged_model_follows_the_reference_recursion() -> None:
    """make_ema fed the weights of calls 0, 10, 20, ... equals ema_pytorch's update rule."""
    gen = torch.Generator().manual_seed(0)
    net = nn.Linear(3, 2)
    ema = make_ema(net, decay=0.995, every=10, warmup=100)
    expected: torch.Tensor | None = None
    for k in range(0, 400, 10):
        with torch.no_grad():
            net.weight.copy_(torch.randn(2, 3, generator=gen))
        ema.update_parameters(net)
        w = net.weight.detach().clone()
        d = reference_decay(k)
        expected = w if expected is None or k <= 100 else d * expected + (1 - d) * w
        torch.testing.assert_close(ema.module.weight, expected, rtol=1e-6, atol=1e-6)


class Affine(nn.Module):
    """A tiny denoiser ``(x, t) -> W x + b`` (the timestep is ignored)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_train_uses_the_warm_up_by_default() -> None:
    """With 65 steps every update lies in the warm-up: the EMA is the weights of step 60."""
    scheduler = DDPMScheduler(num_train_timesteps=20)
    data = torch.randn(128, 2, generator=torch.Generator().manual_seed(1))
    snapshots: dict[int, list[torch.Tensor]] = {}

    def record(state: TrainState) -> None:
        snapshots[state.step] = [p.detach().clone() for p in state.model.parameters()]

    torch.manual_seed(0)
    result = train(Affine(), scheduler, data, steps=65, batch_size=32, callback=record,
                   generator=torch.Generator().manual_seed(0))  # fmt: skip
    for got, want in zip(result.ema.parameters(), snapshots[60], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    # a constant decay instead keeps a share of the earlier weights
    torch.manual_seed(0)
    constant = train(Affine(), scheduler, data, steps=65, batch_size=32, ema_warmup=None,
                     generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert not torch.equal(next(constant.ema.parameters()), snapshots[60][0])


@pytest.mark.parametrize("warmup", [100, None])
def test_ema_updater_equals_update_parameters(warmup: int | None) -> None:
    """The list-based update gives bitwise the weights and count of update_parameters."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    reference = make_ema(net, decay=0.9, every=1, warmup=warmup)
    fast = make_ema(net, decay=0.9, every=1, warmup=warmup)
    update = ema_updater(fast, net)
    for _ in range(6):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
            net[1].running_mean.add_(1.0)
            net[1].num_batches_tracked.add_(3)
        reference.update_parameters(net)
        update()
    assert int(fast.n_averaged) == int(reference.n_averaged) == 6
    for (name, a), b in zip(
        reference.state_dict().items(), fast.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_ema_updater_falls_back_without_multi_avg_fn() -> None:
    """An AveragedModel with an avg_fn is updated by its own update_parameters."""
    from torch.optim.swa_utils import AveragedModel, get_ema_avg_fn

    net = nn.Linear(2, 2)
    ema = AveragedModel(net, avg_fn=get_ema_avg_fn(0.5))
    update = ema_updater(ema, net)
    update()
    with torch.no_grad():
        net.weight.add_(2.0)
    update()
    assert int(ema.n_averaged) == 2
    assert torch.allclose(ema.module.weight, net.weight - 1.0)
