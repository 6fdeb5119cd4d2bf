"""torch.compile: the models and a training step give the eager results."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from scalemix import DDPMScheduler, DualScaleDenoiser, MLPDenoiser
from scalemix.nn.flexi_unet import FlexiUNet
from scalemix.training import compile_model, eps_mse_loss, train

SMALL = {"embedding_dim": 16, "hidden_dim": 32, "num_blocks": 2}


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()


def _points(seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 2, generator=g), torch.randint(0, 100, (16,), generator=g)


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_mlp_fullgraph_equals_eager(backend: str) -> None:
    """One graph for MLPDenoiser's forward and backward, with the eager values."""
    torch.manual_seed(0)
    model = MLPDenoiser(**SMALL)
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    x, t = _points()
    ref = model(x, t)
    (ref_grad,) = torch.autograd.grad(ref.square().sum(), model.input_layer.weight)
    out = compiled(x, t)
    (grad,) = torch.autograd.grad(out.square().sum(), model.input_layer.weight)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)


def test_flexi_unet_fullgraph_equals_eager() -> None:
    """The resolution-increasing call (8 -> 16 px), traced as one graph."""
    out_size = 16
    torch.manual_seed(0)
    model = FlexiUNet(3, 8, (1, 2), 1, (8,), image_size=16, num_heads=2).eval()
    nn.init.normal_(model.head[-1].weight, std=0.1)  # type: ignore[index, union-attr, arg-type]
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([5, 900])
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, t, out_size), model(x, t, out_size))


def test_dual_scale_compiled_equals_eager() -> None:
    torch.manual_seed(0)
    model = DualScaleDenoiser.from_preset("adaptive", **SMALL)
    compiled = compile_model(model, "eager")
    x, t = _points(2)
    torch.testing.assert_close(compiled(x, t), model(x, t), rtol=1e-6, atol=1e-6)


def test_training_step_compiled_equals_eager() -> None:
    """add_noise + model + MSE as one graph (fullgraph, aot_eager: the backward is
    compiled too) gives the eager loss and gradients."""
    scheduler = DDPMScheduler(100)
    x0, t = _points(3)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4))

    def loss_of(model: nn.Module) -> Tensor:
        return eps_mse_loss(model, scheduler, x0, noise=noise, t=t)

    torch.manual_seed(0)
    model = MLPDenoiser(**SMALL)
    params = list(model.parameters())
    compiled_loss: Callable[[nn.Module], Tensor] = torch.compile(
        loss_of, backend="aot_eager", fullgraph=True
    )
    want_loss = loss_of(model)
    want = [want_loss, *torch.autograd.grad(want_loss, params)]
    got_loss = compiled_loss(model)
    got = [got_loss, *torch.autograd.grad(got_loss, params)]
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_train_compile_option() -> None:
    """train(compile=...) follows the eager run step for step."""
    data = torch.randn(128, 2, generator=torch.Generator().manual_seed(0))
    losses = []
    for compile_arg in (False, "eager"):
        torch.manual_seed(0)
        model = MLPDenoiser(**SMALL)
        gen = torch.Generator().manual_seed(0)
        result = train(
            model,
            DDPMScheduler(50),
            data,
            steps=6,
            batch_size=32,
            generator=gen,
            compile=compile_arg,
        )
        losses.append(result.losses)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=1e-7)


def test_compile_model_rejects_bad_argument() -> None:
    with pytest.raises(TypeError, match="compile must be a bool or a backend name"):
        compile_model(MLPDenoiser(**SMALL), 3)  # type: ignore[arg-type]


def test_import_does_not_load_the_compiler_and_marks_constants_as_torch_does() -> None:
    import subprocess
    import sys

    code = """
import sys
import scalemix
from scalemix._utils import assume_constant
print("torch._dynamo" in sys.modules)  # importing the compiler takes seconds
def ours(): return 1
def theirs(): return 1
assume_constant(ours)  # without the compiler loaded
import torch
torch.compiler.assume_constant_result(theirs)
print(ours.__dict__ == theirs.__dict__ != {})
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
