"""Draw the scale-space forward process of a synthetic 64 px image (no model needed).

    python docs/_static/scale_space_forward.py docs/_static/scale_space_forward.png
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from scalemix import ScaleSpaceDegradation


def synthetic_image(size: int = 64) -> torch.Tensor:
    """A (1, 3, size, size) image in [-1, 1]: rings over a colour gradient."""
    u = torch.linspace(-1, 1, size)
    y, x = torch.meshgrid(u, u, indexing="ij")
    r = (x**2 + y**2).sqrt()
    rings = torch.cos(12 * r) * (r < 0.9)
    img = torch.stack([0.6 * x + 0.4 * rings, 0.6 * y + 0.4 * rings, rings], dim=0)
    return img.clamp(-1, 1)[None]


def main(path: str) -> None:
    deg = ScaleSpaceDegradation(image_size=64, num_levels=4)
    x0 = synthetic_image()
    steps = [0, 200, 437, 438, 600, 750, 900, 999]
    gen = torch.Generator().manual_seed(0)
    fig, axes = plt.subplots(2, len(steps), figsize=(8, 2.6))
    for j, t in enumerate(steps):
        r = deg.resolution(t)
        noise = torch.randn(1, 3, r, r, generator=gen)
        x_t = deg.add_noise(x0, noise, t)[0]
        signal = deg.add_noise(x0, torch.zeros_like(noise), t)[0]
        signal = (signal - signal.min()) / (signal.max() - signal.min())  # contrast stretched
        axes[0][j].imshow(((x_t.permute(1, 2, 0) + 1) / 2).clamp(0, 1), interpolation="nearest")
        axes[1][j].imshow(signal.permute(1, 2, 0), interpolation="nearest")
        axes[0][j].set_title(f"t = {t}\n{r} x {r} px", fontsize=7)
        for ax in (axes[0][j], axes[1][j]):
            ax.axis("off")
    axes[0][0].text(-8, 32, "x_t", fontsize=7, ha="right", va="center")
    axes[1][0].text(-8, 32, "signal,\nstretched", fontsize=7, ha="right", va="center")
    fig.suptitle(f"x_t of ScaleSpaceDegradation(64, 4 levels), changes at {deg.change_steps}",
                 fontsize=8)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "scale_space_forward.png")
