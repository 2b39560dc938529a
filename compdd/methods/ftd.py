"""``ftd``: Flat Trajectory Distillation (Du et al., CVPR 2023) on the shared engine.

MTT's loop with GSAM-trained (flat) experts and an exponential moving average of the images, which is
what this method returns (``return_ema``). Hyper-parameters: ``resources/configs/tm/ftd.yaml``. The public
code scored the EMA images with the evaluation network it had just trained on the raw images; here the
protocol scores the returned set with a fresh network.
"""

from __future__ import annotations

from typing import Literal

from compdd.methods import register_method
from compdd.methods.tm.engine import TMConfig, TrajectoryMatchingMethod


class FTDConfig(TMConfig):
    expert_optimizer: Literal["sgd", "gsam"] = "gsam"
    ema_decay: float | None = 0.9995


@register_method
class FTD(TrajectoryMatchingMethod):
    name = "ftd"
    description = "FTD: trajectory matching with GSAM (flat) experts and an EMA of the images"
    Config = FTDConfig
