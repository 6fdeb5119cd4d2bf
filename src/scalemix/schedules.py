"""Pure noise-schedule functions.

Every function here is pure: it takes sizes and hyper-parameters and returns a fresh
float64 tensor of shape ``(T,)`` on the CPU. Nothing is cached and nothing is mutated,
so the functions are easy to test and to compose (e.g.
``rescale_zero_terminal_snr(cosine_beta_schedule(1000))``).
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import Tensor

from ._utils import check_choice

__all__ = [
    "BetaScheduleName",
    "Spacing",
    "TimestepSpacing",
    "alphas_cumprod_from_betas",
    "check_betas",
    "cosine_beta_schedule",
    "even_timesteps",
    "linear_beta_schedule",
    "logsnr_timesteps",
    "make_beta_schedule",
    "quadratic_beta_schedule",
    "rescale_zero_terminal_snr",
    "sigmoid_beta_schedule",
    "timestep_schedule",
]

BetaScheduleName = Literal["linear", "quadratic", "cosine", "sigmoid"]
#: Placement of the sampling timesteps, one vocabulary for every sampler and process:
#: see :func:`timestep_schedule`.
Spacing = Literal["trailing", "leading", "linspace", "even", "logsnr"]
#: The same literal as :data:`Spacing` (its former name).
TimestepSpacing = Spacing
_DTYPE = torch.float64


def _check_num_timesteps(num_timesteps: int) -> None:
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, int):
        raise TypeError(f"num_timesteps must be an int, got {type(num_timesteps).__name__}")
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")


def _check_range(beta_start: float, beta_end: float) -> None:
    for name, value in (("beta_start", beta_start), ("beta_end", beta_end)):
        if not (0.0 < value < 1.0) or math.isnan(value):
            raise ValueError(f"{name} must lie in the open interval (0, 1), got {value}")
    if beta_end < beta_start:
        raise ValueError(f"beta_end ({beta_end}) must be >= beta_start ({beta_start})")


def check_betas(betas: Tensor, *, allow_terminal_one: bool = False) -> Tensor:
    """Validate a beta schedule and return it as float64.

    Args:
        betas: shape ``(T,)``; every entry must lie in ``(0, 1)``.
        allow_terminal_one: accept ``betas[-1] == 1`` (zero terminal SNR).

    Raises:
        ValueError: wrong rank, empty, NaN, or a beta outside ``(0, 1)``.
    """
    if betas.ndim != 1 or betas.numel() == 0:
        raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
    b = betas.detach().to(device="cpu", dtype=_DTYPE)
    if bool(torch.isnan(b).any()):
        raise ValueError("betas contain NaN")
    body = b[:-1] if allow_terminal_one else b
    last_ok = (not allow_terminal_one) or (0.0 < float(b[-1]) <= 1.0)
    if bool(((body <= 0) | (body >= 1)).any()) or not last_ok:
        raise ValueError(
            f"every beta must lie in the open interval (0, 1); got values in "
            f"[{float(b.min())}, {float(b.max())}]"
        )
    return b


def linear_beta_schedule(
    num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02
) -> Tensor:
    r"""Linearly spaced betas (Ho et al., 2020, section 4).

    .. math:: \beta_t = \beta_\text{start} + \frac{t}{T-1}(\beta_\text{end} - \beta_\text{start})

    Returns:
        float64 tensor of shape ``(T,)``.
    """
    _check_num_timesteps(num_timesteps)
    _check_range(beta_start, beta_end)
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=_DTYPE)


def quadratic_beta_schedule(
    num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02
) -> Tensor:
    r"""Betas whose square roots are linearly spaced.

    .. math:: \beta_t = \left(\sqrt{\beta_\text{start}} + \tfrac{t}{T-1}
        (\sqrt{\beta_\text{end}} - \sqrt{\beta_\text{start}})\right)^2

    Returns:
        float64 tensor of shape ``(T,)``.
    """
    _check_num_timesteps(num_timesteps)
    _check_range(beta_start, beta_end)
    return (
        torch.linspace(math.sqrt(beta_start), math.sqrt(beta_end), num_timesteps, dtype=_DTYPE) ** 2
    )


def cosine_beta_schedule(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    r"""Cosine schedule of Nichol & Dhariwal (2021), equation (17).

    .. math::
        \bar\alpha(t) = \cos^2\!\left(\frac{t/T + s}{1 + s}\cdot\frac{\pi}{2}\right),\qquad
        \beta_t = \min\!\left(1 - \frac{\bar\alpha(t+1)}{\bar\alpha(t)}, \beta_\max\right)

    The ratio form keeps ``beta_0`` finite and positive (no NaN at ``t = 0``); the cap
    avoids the singularity at ``t = T``.

    Returns:
        float64 tensor of shape ``(T,)``.
    """
    _check_num_timesteps(num_timesteps)
    if not (0.0 < max_beta < 1.0):
        raise ValueError(f"max_beta must lie in (0, 1), got {max_beta}")
    if s < 0:
        raise ValueError(f"the offset s must be >= 0, got {s}")
    steps = torch.arange(num_timesteps + 1, dtype=_DTYPE) / num_timesteps
    abar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = 1.0 - abar[1:] / abar[:-1]
    return betas.clamp(min=1e-12, max=max_beta)


def sigmoid_beta_schedule(
    num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02
) -> Tensor:
    r"""Betas following a logistic curve between ``beta_start`` and ``beta_end``.

    .. math:: \beta_t = \beta_\text{start} + \sigma(-6 + 12\tfrac{t}{T-1})
        (\beta_\text{end} - \beta_\text{start})

    Returns:
        float64 tensor of shape ``(T,)``.
    """
    _check_num_timesteps(num_timesteps)
    _check_range(beta_start, beta_end)
    grid = torch.linspace(-6.0, 6.0, num_timesteps, dtype=_DTYPE)
    return torch.sigmoid(grid) * (beta_end - beta_start) + beta_start


def alphas_cumprod_from_betas(betas: Tensor) -> Tensor:
    r"""Cumulative product :math:`\bar\alpha_t = \prod_{s \le t} (1 - \beta_s)`.

    Returns:
        float64 tensor of shape ``(T,)``.
    """
    return torch.cumprod(1.0 - betas.to(_DTYPE), dim=0)


def rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    r"""Rescale betas to zero terminal SNR (Lin et al., 2024, Algorithm 1).

    With :math:`a_t = \sqrt{\bar\alpha_t}`, the rescaled
    :math:`a'_t = (a_t - a_{T-1}) \, a_0 / (a_0 - a_{T-1})` keeps :math:`a'_0 = a_0`
    and makes :math:`a'_{T-1} = 0`, i.e. :math:`\beta'_{T-1} = 1`.

    Args:
        betas: shape ``(T,)`` with ``T >= 2``.

    Returns:
        float64 tensor of shape ``(T,)`` whose last entry is exactly 1.
    """
    b = check_betas(betas)
    if b.numel() < 2:
        raise ValueError("zero-terminal-SNR rescaling needs at least 2 timesteps")
    a = alphas_cumprod_from_betas(b).sqrt()
    a0, a_last = a[0].clone(), a[-1].clone()
    a = (a - a_last) * a0 / (a0 - a_last)
    abar = a**2
    alphas = torch.cat([abar[:1], abar[1:] / abar[:-1]])
    return 1.0 - alphas


def make_beta_schedule(
    name: BetaScheduleName,
    num_timesteps: int,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
) -> Tensor:
    """Build a named beta schedule (float64, shape ``(T,)``).

    Args:
        name: one of ``"linear"``, ``"quadratic"``, ``"cosine"``, ``"sigmoid"``.
            ``beta_start``/``beta_end`` are ignored by ``"cosine"``.
        num_timesteps: ``T``.

    Raises:
        ValueError: unknown name or out-of-range betas.
    """
    check_choice("beta_schedule", name, get_args(BetaScheduleName))
    if name == "linear":
        return linear_beta_schedule(num_timesteps, beta_start, beta_end)
    if name == "quadratic":
        return quadratic_beta_schedule(num_timesteps, beta_start, beta_end)
    if name == "cosine":
        return cosine_beta_schedule(num_timesteps)
    if name == "sigmoid":
        return sigmoid_beta_schedule(num_timesteps, beta_start, beta_end)
    raise ValueError(f"unknown beta_schedule {name!r}")  # pragma: no cover


def timestep_schedule(
    num_train_timesteps: int,
    num_inference_steps: int | None = None,
    spacing: Spacing = "trailing",
    *,
    alphas_cumprod: Tensor | None = None,
) -> Tensor:
    """Sampling timesteps: strictly decreasing int64 tensor of shape ``(n,)``.

    With ``T`` training steps and ``n`` inference steps (Lin et al., 2024, Table 2):

    * ``"trailing"``: ``round(T - i T / n) - 1`` -- starts at ``T - 1``;
    * ``"leading"``: ``(n - 1 - i) * (T // n)`` -- ends at 0;
    * ``"linspace"``: ``round(linspace(T - 1, 0, n))`` (diffusers' ``"linspace"``);
    * ``"even"``: guided-diffusion's ``space_timesteps`` (:func:`even_timesteps`), the
      Scale Space Diffusion reference's; it keeps ``T - 1`` and 0;
    * ``"logsnr"``: evenly spaced in log-SNR (:func:`logsnr_timesteps`; needs
      ``alphas_cumprod``), as Lu et al. (2022) recommend for few steps.

    Rounding is half-up (``"even"``: half to even, as the reference), so entries stay
    distinct whenever ``n <= T``.

    Args:
        num_train_timesteps: ``T``.
        num_inference_steps: ``n`` in ``[1, T]``; ``None`` means ``T`` (every step).
        spacing: one of the five names above.
        alphas_cumprod: :math:`\bar\alpha_t`, shape ``(T,)``; required for ``"logsnr"``.

    Raises:
        ValueError: unknown spacing, ``n`` outside ``[1, T]``, or ``"logsnr"`` without
            ``alphas_cumprod``.
    """
    check_choice("spacing", spacing, get_args(Spacing))
    _check_num_timesteps(num_train_timesteps)
    T = num_train_timesteps
    n = T if num_inference_steps is None else num_inference_steps
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= T:
        raise ValueError(f"num_inference_steps must be an int in [1, {T}], got {n!r}")
    if spacing == "logsnr":
        if alphas_cumprod is None or alphas_cumprod.numel() != T:
            raise ValueError(f"spacing='logsnr' needs alphas_cumprod of shape ({T},)")
        return logsnr_timesteps(alphas_cumprod, n)
    if spacing == "even":
        return torch.tensor(even_timesteps(T, n)[::-1], dtype=torch.long)
    i = torch.arange(n, dtype=_DTYPE)
    if spacing == "trailing":
        ts = torch.floor(T - i * T / n + 0.5) - 1
    elif spacing == "leading":
        ts = (n - 1 - i) * (T // n)
    else:
        ts = torch.floor(torch.linspace(T - 1, 0, n, dtype=_DTYPE) + 0.5)
    return ts.to(torch.long)


def even_timesteps(num_timesteps: int, num_inference_steps: int) -> tuple[int, ...]:
    r"""guided-diffusion's ``space_timesteps(T, [k])``: ``k`` evenly strided steps of ``[0, T)``.

    With stride :math:`q = (T - 1)/(k - 1)` (:math:`q = 1` for ``k = 1``) the kept steps
    are ``round(j q)``, ``j = 0..k-1``, where ``j q`` is accumulated as in the original
    (``cur += q``) and ``round`` is Python's (half to even); they include 0 and, for
    ``k > 1``, ``T - 1`` (Nichol & Dhariwal, 2021, sec. 4; the Scale Space Diffusion
    reference keeps these steps).

    Args:
        num_timesteps: ``T >= 1``.
        num_inference_steps: ``k`` in ``[1, T]``.

    Returns:
        The kept steps, ascending.
    """
    if isinstance(num_inference_steps, bool) or not 1 <= num_inference_steps <= num_timesteps:
        raise ValueError(
            f"num_inference_steps must be an int in [1, {num_timesteps}], got "
            f"{num_inference_steps!r}"
        )
    stride = (num_timesteps - 1) / (num_inference_steps - 1) if num_inference_steps > 1 else 1
    cur = 0.0
    kept: list[int] = []
    for _ in range(num_inference_steps):
        kept.append(round(cur))
        cur += stride
    return tuple(sorted(set(kept)))


def logsnr_timesteps(alphas_cumprod: Tensor, num_inference_steps: int) -> Tensor:
    r"""Timesteps evenly spaced in log-SNR (Lu et al., 2022, Sec. 3.3), rounded to integers.

    The grid :math:`\ell_i` runs evenly from :math:`\log\mathrm{SNR}_{T-1}` to
    :math:`\log\mathrm{SNR}_0` (:math:`\mathrm{SNR} = \bar\alpha/(1-\bar\alpha)`), each
    point goes to the timestep of nearest log-SNR, and collisions (where one timestep
    spans more log-SNR than the grid's spacing, near ``t = 0``) are moved to the next
    free timestep, so that the result stays strictly decreasing. Starts at ``T - 1``
    and ends at ``0``.

    Args:
        alphas_cumprod: :math:`\bar\alpha_t`, shape ``(T,)``, decreasing, in ``(0, 1)``
            except that :math:`\bar\alpha_{T-1}` may be 0 (zero terminal SNR).
        num_inference_steps: ``n`` in ``[1, T]``.

    Returns:
        Strictly decreasing int64 tensor of shape ``(n,)``.

    Raises:
        ValueError: ``n`` outside ``[1, T]``.
    """
    abar = alphas_cumprod.detach().to("cpu", torch.float64)
    T = int(abar.numel())
    n = num_inference_steps
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= T:
        raise ValueError(f"num_inference_steps must be an int in [1, {T}], got {n!r}")
    if n == 1:
        return torch.tensor([T - 1], dtype=torch.long)
    logsnr = torch.log(abar) - torch.log1p(-abar)
    lo = logsnr[-1] if torch.isfinite(logsnr[-1]) else logsnr[-2]
    grid = torch.linspace(float(lo), float(logsnr[0]), n, dtype=torch.float64)
    ts = (logsnr[None, :] - grid[:, None]).abs().argmin(dim=1).tolist()
    ts[0], ts[-1] = T - 1, 0
    for i in range(n - 2, -1, -1):  # from the clean end: each at least one above the next
        ts[i] = max(ts[i], ts[i + 1] + 1)
    ts[0] = T - 1
    for i in range(1, n):  # from the noisy end: each at least one below the previous
        ts[i] = min(ts[i], ts[i - 1] - 1)
    return torch.tensor(ts, dtype=torch.long)
