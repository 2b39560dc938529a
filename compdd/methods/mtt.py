"""``mtt``: Matching Training Trajectories (Cazenavette et al., CVPR 2022) on the shared engine.

Real-image init, hard labels, start epochs uniform in ``[0, max_start_epoch)``, plain-SGD experts, every
iteration updates. Hyper-parameters per (subset, IPC): ``resources/configs/tm/mtt.yaml``. See
``docs/trajectory-matching.md`` for what differs from the public code.
"""

from __future__ import annotations

from typing import Literal

from compdd.methods import register_method
from compdd.methods.tm.engine import TMConfig, TrajectoryMatchingMethod


class MTTConfig(TMConfig):
    expert_optimizer: Literal["sgd", "gsam"] = "sgd"
    image_init: Literal["noise", "real", "real_correct"] = "real"
    label_mode: Literal["hard", "soft"] = "hard"


@register_method
class MTT(TrajectoryMatchingMethod):
    name = "mtt"
    description = "MTT: match expert trajectories (SGD experts, hard labels)"
    Config = MTTConfig
