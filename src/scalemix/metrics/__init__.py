"""Sample-based divergences between point clouds and closed-form Gaussian KL.

* :func:`knn_kl`: k-nearest-neighbour KL estimators (NPEET's ``kldiv`` definition by
  default; Wang-Kulkarni-Verdú eq. (5) and its adaptive bias-reduced variant).
* :func:`histogram_kl`: plug-in KL on a shared grid with pseudocounts.
* :func:`gaussian_kl`, :func:`gaussian_kl_diag`: analytic KL between Gaussians (nats);
  :func:`gaussian_kl_from_samples` fits one Gaussian per point cloud.
* :func:`symmetric_kl`, :func:`jensen_shannon`: symmetrised divergences.
* :func:`kl_confidence_interval`: a subsampling confidence interval for any estimator.
* :func:`kid_from_features` (module :mod:`scalemix.metrics.kid`): the Kernel Inception
  Distance, unbiased, with its jackknife standard error; :mod:`scalemix.metrics.fid`
  holds FID and the Inception network both use.

Sample-based estimators return Python floats in bits by default (``base=2.0``); the
analytic Gaussian functions return tensors in nats.
"""

from __future__ import annotations

from ._divergences import JSMethod as JSMethod
from ._divergences import SymmetricMethod as SymmetricMethod
from ._divergences import jensen_shannon as jensen_shannon
from ._divergences import symmetric_kl as symmetric_kl
from ._gaussian import GaussianParameterization as GaussianParameterization
from ._gaussian import gaussian_kl as gaussian_kl
from ._gaussian import gaussian_kl_diag as gaussian_kl_diag
from ._gaussian import gaussian_kl_from_samples as gaussian_kl_from_samples
from ._histogram import histogram_kl as histogram_kl
from ._histogram import histogram_probabilities as histogram_probabilities
from ._inputs import Points as Points
from ._knn import KnnBackend as KnnBackend
from ._knn import KnnDuplicates as KnnDuplicates
from ._knn import KnnEstimator as KnnEstimator
from ._knn import KnnMetric as KnnMetric
from ._knn import knn_kl as knn_kl
from ._subsample import kl_confidence_interval as kl_confidence_interval
from .kid import KIDResult as KIDResult
from .kid import kid_from_features as kid_from_features
from .kid import mmd2_unbiased as mmd2_unbiased

__all__ = [
    "GaussianParameterization",
    "JSMethod",
    "KIDResult",
    "KnnBackend",
    "KnnDuplicates",
    "KnnEstimator",
    "KnnMetric",
    "Points",
    "SymmetricMethod",
    "gaussian_kl",
    "gaussian_kl_diag",
    "gaussian_kl_from_samples",
    "histogram_kl",
    "histogram_probabilities",
    "jensen_shannon",
    "kid_from_features",
    "kl_confidence_interval",
    "knn_kl",
    "mmd2_unbiased",
    "symmetric_kl",
]
