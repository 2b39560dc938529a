"""``datm``: Difficulty-Aligned Trajectory Matching (Guo et al., ICLR 2024) on the shared engine.

GSAM experts; images initialised from real samples the experts classify correctly; learned soft labels
initialised from the experts' logits; a start-epoch window whose upper bound grows over the first
iterations; updates skipped when the matching loss exceeds a threshold. Hyper-parameters per (subset,
IPC): ``resources/configs/tm/datm.yaml``. EDF is this method plus two hooks (loss reduction, image-gradient
transform).
"""

from __future__ import annotations

from typing import Literal

from compdd.methods import register_method
from compdd.methods.tm.engine import TMConfig, TrajectoryMatchingMethod


class DATMConfig(TMConfig):
    iterations: int = 10000
    syn_steps: int = 40
    expert_optimizer: Literal["sgd", "gsam"] = "gsam"
    image_init: Literal["noise", "real", "real_correct"] = "real_correct"
    label_mode: Literal["hard", "soft"] = "soft"
    lr_label: float = 2.0
    window_initial_max: int | None = 5
    window_expansion_end: int = 1000
    lr_img: float = 10000.0
    lr_lr: float = 1e-5
    update_threshold: float | None = 2.0


@register_method
class DATM(TrajectoryMatchingMethod):
    name = "datm"
    description = "DATM: difficulty-aligned trajectory matching with learned soft labels (GSAM experts)"
    Config = DATMConfig
