"""Seeded toy datasets."""

from __future__ import annotations

from .toy2d import DATASET_NAMES as DATASET_NAMES
from .toy2d import DatasetName as DatasetName
from .toy2d import checkerboard as checkerboard
from .toy2d import circle as circle
from .toy2d import datasaurus_dino_points as datasaurus_dino_points
from .toy2d import dino as dino
from .toy2d import eight_gaussians as eight_gaussians
from .toy2d import line as line
from .toy2d import make_dataset as make_dataset
from .toy2d import moons as moons
from .toy2d import spiral as spiral

__all__ = [
    "DATASET_NAMES",
    "DatasetName",
    "checkerboard",
    "circle",
    "datasaurus_dino_points",
    "dino",
    "eight_gaussians",
    "line",
    "make_dataset",
    "moons",
    "spiral",
]
