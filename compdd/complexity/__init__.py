"""Grad-CAM complexity of ImageNet images and classes (``compdd score``).

- :mod:`~compdd.complexity.cam`: the maps (a fast last-block Grad-CAM and torchcam as the reference) and the
  activated-fraction statistic;
- :mod:`~compdd.complexity.scorer`: the scoring network from ``--weights`` (timm name, file, random) and a small
  scorer trained on a tree;
- :mod:`~compdd.complexity.images`: the file list and robust decoding;
- :mod:`~compdd.complexity.run`: presets, the sharded resumable run (also under torchrun) and its output files.

Complexity of an image = 1 - share of Grad-CAM cells at or above 0.5 (per-image min-max normalised map);
complexity of a class = mean over its images. See ``docs/complexity.md``.
"""

from compdd.complexity.cam import FastGradCAM, TorchcamCAM, activated_fraction, minmax_normalize
from compdd.complexity.run import PRESETS, Preset, ScoreConfig, ScoreResult, merge_shards, read_run, score
from compdd.complexity.scorer import Scorer, ScorerWeightsError, TrainConfig, load_scorer, train_scorer

__all__ = [
    "FastGradCAM", "TorchcamCAM", "activated_fraction", "minmax_normalize",
    "PRESETS", "Preset", "ScoreConfig", "ScoreResult", "merge_shards", "read_run", "score",
    "Scorer", "ScorerWeightsError", "TrainConfig", "load_scorer", "train_scorer",
]
