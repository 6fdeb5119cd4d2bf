"""The numbers published in "Adaptive Dual-Scale Denoising" (single runs, GTX 1080 Ti)."""

from __future__ import annotations

DATASETS = ("circle", "dino", "line", "moons")
MODELS = ("baseline", "fixed", "adaptive")
MODEL_TITLES = {
    "baseline": "baseline MLPDenoiser",
    "fixed": "dual-scale, fixed 0.5",
    "adaptive": "dual-scale, adaptive",
}

#: KL(real || generated) in bits, NPEET's kldiv with k = 5.
PAPER_KL = {
    "baseline": {"circle": 0.354, "dino": 0.989, "line": 0.161, "moons": 0.090},
    "fixed": {"circle": 0.369, "dino": 0.820, "line": 0.172, "moons": 0.100},
    "adaptive": {"circle": 0.347, "dino": 0.871, "line": 0.155, "moons": 0.096},
}
#: Eval loss of the baseline; the dual-scale models are reported within +-0.005 of it.
PAPER_EVAL_LOSS = {"circle": 0.439, "dino": 0.665, "line": 0.804, "moons": 0.616}
#: Approximate training and inference seconds per dataset.
PAPER_TRAIN_S = {"baseline": 37.0, "fixed": 74.0, "adaptive": 86.0}
PAPER_INFER_S = {"baseline": 0.17, "fixed": 0.28, "adaptive": 0.30}
