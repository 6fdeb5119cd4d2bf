"""Seeded toy 2D datasets, CelebA from a local folder, Fashion-MNIST, and synthetic images."""

from __future__ import annotations

from . import images, toy2d
from .fashion_mnist import FASHION_MNIST_CLASSES as FASHION_MNIST_CLASSES
from .fashion_mnist import FashionMNIST as FashionMNIST
from .fashion_mnist import FashionMNISTSplit as FashionMNISTSplit
from .fashion_mnist import read_idx as read_idx
from .images import CELEBA_LAYOUT as CELEBA_LAYOUT
from .images import CelebAFolder as CelebAFolder
from .images import CelebASplit as CelebASplit
from .images import SyntheticImages as SyntheticImages
from .toy2d import DATASET_NAMES as DATASET_NAMES
from .toy2d import DatasetName as DatasetName
from .toy2d import checkerboard as checkerboard
from .toy2d import circle as circle
from .toy2d import datasaurus_dino_points as datasaurus_dino_points
from .toy2d import dino as dino
from .toy2d import eight_gaussians as eight_gaussians
from .toy2d import line as line
from .toy2d import make_dataset as make_dataset
from .toy2d import make_labelled_mixture as make_labelled_mixture
from .toy2d import moons as moons
from .toy2d import spiral as spiral

# The names of the modules' ``__all__``, less where the Fashion-MNIST files lie on disk
# (``FASHION_MNIST_ROOT``, ``FASHION_MNIST_FILES``: import them from ``.fashion_mnist``).
__all__ = ["FASHION_MNIST_CLASSES", "FashionMNIST", "FashionMNISTSplit", "read_idx"]
__all__ += images.__all__
__all__ += toy2d.__all__
