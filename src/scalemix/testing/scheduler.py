r"""``check_scheduler``: a :class:`~scalemix.scheduler.DDPMScheduler` against its definition.

The reference values come from the betas alone (float64,
:math:`\bar\alpha_t = \prod_{k \le t}(1 - \beta_k)`):

* **monotone schedule**: :math:`\bar\alpha_t` decreases strictly and lies in
  ``[0, 1)``;
* **round trips** between :math:`\epsilon`, :math:`x_0` and :math:`v`:
  ``add_noise`` gives :math:`\sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\epsilon`,
  ``velocity`` gives :math:`\sqrt{\bar\alpha_t}\epsilon - \sqrt{1-\bar\alpha_t}x_0`, and
  ``predict_x0`` / ``predict_eps`` of the exact ``target`` recover :math:`x_0` and
  :math:`\epsilon`;
* **posterior** :math:`q(x_s \mid x_t, x_0)` against Gaussian conditioning of the
  joint of :math:`(x_s, x_t)` (per entry, the ``2 x 2`` covariance
  :math:`[[1-\bar\alpha_s, c(1-\bar\alpha_s)], [c(1-\bar\alpha_s), 1-\bar\alpha_t]]`,
  :math:`c = \sqrt{\bar\alpha_t/\bar\alpha_s}`): ``posterior``, the
  ``posterior_variance`` buffer, and ``step`` with the exact model output and given
  noise (with ``variance_type="fixed_large"`` the variance is
  :math:`1 - \bar\alpha_t/\bar\alpha_s` instead).
"""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st
from torch import Tensor

from ..scheduler import DDPMScheduler
from ._runner import check_budget, require, run_property

__all__ = ["check_scheduler"]

_NAME = "check_scheduler"
F64 = torch.float64


def _conditional(abar_t: Tensor, abar_s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Gaussian conditioning of x_s on x_t per entry: ``(coef_x0, coef_xt, variance)``.

    ``abar_t`` and ``abar_s`` have shape ``(b,)``; mean = coef_x0 x0 + coef_xt x_t.
    """
    c = (abar_t / abar_s).sqrt()
    cov = torch.stack(
        [
            torch.stack([1 - abar_s, c * (1 - abar_s)], -1),
            torch.stack([c * (1 - abar_s), 1 - abar_t], -1),
        ],
        -2,
    )  # (b, 2, 2): rows/cols (x_s, x_t)
    gain = cov[:, 0, 1] / cov[:, 1, 1]
    var = cov[:, 0, 0] - gain * cov[:, 1, 0]
    # mean_s + gain (x_t - mean_t), mean_s = sqrt(abar_s) x0, mean_t = sqrt(abar_t) x0
    return abar_s.sqrt() - gain * abar_t.sqrt(), gain, var


def check_scheduler(
    scheduler: DDPMScheduler,
    *,
    max_examples: int = 20,
    seed: int = 0,
    tol: float = 1e-9,
) -> None:
    """Check a scheduler's conversions and posterior (module docstring), in float64.

    Args:
        scheduler: a :class:`~scalemix.scheduler.DDPMScheduler` (or a subclass).
        max_examples: hypothesis examples per property.
        seed: seed of the draws.
        tol: tolerance, relative to the compared quantities.

    Raises:
        AssertionError: a property fails; the message names it, the shrunk input and the
            size of the violation.
        ValueError: bad arguments.
    """
    check_budget(max_examples, seed)
    betas = scheduler.betas.double().cpu()
    T = int(betas.numel())
    abar = torch.cumprod(1 - betas, 0)
    flat = (abar[1:] - abar[:-1] >= 0).nonzero().flatten() + 1
    first = f"input: t={int(flat[0])}" if flat.numel() else ""
    monotone = "strictly decreasing alphas_cumprod (count of steps that do not decrease)"
    require(_NAME, monotone, float(flat.numel()), 0.0, first)
    out = float(torch.relu(abar - 1).max() + torch.relu(-abar).max()) + float(abar[0] >= 1)
    require(_NAME, "alphas_cumprod in [0, 1)", out, 0.0, "input: the betas")
    gap = float((scheduler.alphas_cumprod.double().cpu() - abar).abs().max())
    require(_NAME, "alphas_cumprod = cumprod(1 - betas)", gap, tol, "input: the betas")
    prev = torch.cat([torch.ones(1, dtype=F64), abar[:-1]])
    _, _, var_ref = _conditional(abar, prev)
    buffer = scheduler.posterior_variance.double().cpu()
    where = int(torch.argmax((buffer - var_ref).abs()))
    gap = float((buffer - var_ref).abs().max()) / float(var_ref.abs().max())
    require(
        _NAME,
        "posterior_variance buffer = conditional variance (relative)",
        gap,
        tol,
        f"input: t={where}",
    )
    abar_ext = torch.cat([torch.ones(1, dtype=F64), abar])

    @st.composite
    def cases(draw: st.DrawFn) -> tuple[list[int], list[int], int]:
        b = draw(st.integers(1, 3))
        t = draw(st.lists(st.integers(0, T - 1), min_size=b, max_size=b))
        s = [draw(st.integers(-1, ti - 1)) for ti in t]
        return t, s, draw(st.integers(0, 2**31 - 1))

    def prop(case: tuple[list[int], list[int], int]) -> None:
        t_list, s_list, data_seed = case
        detail = f"input: t={t_list}, s={s_list}, data seed {data_seed}"
        g = torch.Generator().manual_seed(data_seed)
        b = len(t_list)
        x0 = torch.rand((b, 3), generator=g, dtype=F64) * 2 - 1
        eps = torch.randn((b, 3), generator=g, dtype=F64)
        z = torch.randn((b, 3), generator=g, dtype=F64)
        t = torch.tensor(t_list)
        s = torch.tensor(s_list)
        a_t, a_s = abar_ext[t + 1][:, None], abar_ext[s + 1][:, None]
        x_t = a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps
        _round_trips(scheduler, x0, eps, x_t, t, a_t, tol, detail)
        coef_x0, coef_xt, var = (v[:, None] for v in _conditional(a_t[:, 0], a_s[:, 0]))
        mean_ref = coef_x0 * x0 + coef_xt * x_t
        post = scheduler.posterior(x0, x_t, t, s)
        scale = float(mean_ref.abs().max()) + 1.0
        gap = float((post.mean - mean_ref).abs().max()) / scale
        require(_NAME, "posterior mean = Gaussian conditioning (relative)", gap, tol, detail)
        if scheduler.variance_type == "fixed_large":
            var = 1 - a_t / a_s
        gap = float((post.variance.reshape(b, 1) - var).abs().max()) / float(var.max() + 1e-300)
        require(
            _NAME, f"posterior variance ({scheduler.variance_type}) (relative)", gap, tol, detail
        )
        output = scheduler.target(x0, eps, t)
        step = scheduler.step(output, t, x_t, prev_t=s, noise=z).prev_sample
        want = mean_ref + (s >= 0)[:, None] * var.sqrt() * z
        gap = float((step - want).abs().max()) / (float(want.abs().max()) + 1.0)
        amplification = (
            1.0 / math.sqrt(float(a_t.min())) if scheduler.prediction_type == "epsilon" else 1.0
        )
        require(
            _NAME, "step with the exact model output (relative)", gap, tol * amplification, detail
        )

    run_property(prop, cases(), max_examples=max_examples, seed=seed)


def _round_trips(
    scheduler: DDPMScheduler,
    x0: Tensor,
    eps: Tensor,
    x_t: Tensor,
    t: Tensor,
    a_t: Tensor,
    tol: float,
    detail: str,
) -> None:
    gap = float((scheduler.add_noise(x0, eps, t) - x_t).abs().max())
    require(_NAME, "add_noise = sqrt(abar) x0 + sqrt(1 - abar) eps", gap, tol, detail)
    v = a_t.sqrt() * eps - (1 - a_t).sqrt() * x0
    gap = float((scheduler.velocity(x0, eps, t) - v).abs().max())
    require(_NAME, "velocity = sqrt(abar) eps - sqrt(1 - abar) x0", gap, tol, detail)
    output = scheduler.target(x0, eps, t)
    kind = scheduler.prediction_type
    scale = 1.0 + float(x_t.abs().max()) + float(output.abs().max())
    if kind != "epsilon" or float(a_t.min()) > 0:
        amp = 1.0 / math.sqrt(float(a_t.min())) if kind == "epsilon" else 1.0
        gap = float((scheduler.predict_x0(output, x_t, t) - x0).abs().max())
        require(_NAME, f"x0 round trip through the {kind} target", gap, tol * scale * amp, detail)
    amp = 1.0 / math.sqrt(float((1 - a_t).min())) if kind == "sample" else 1.0
    gap = float((scheduler.predict_eps(output, x_t, t) - eps).abs().max())
    require(_NAME, f"eps round trip through the {kind} target", gap, tol * scale * amp, detail)
