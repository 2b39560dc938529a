"""Pieces shared by the built-in networks: norm layers, the pooled linear head, the features/classifier split.

Every built-in model is a :class:`SplitNet`: ``forward(x) == classifier(features(x))``, where ``features``
maps an image batch to the last block's feature map ``[B, C, h, w]`` and ``classifier`` maps that map to
logits. ``cam_layer`` names the sub-module whose output Grad-CAM should hook (``"features"``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

NORMS = ("instance", "batch", "none")


def norm_layer(norm: str, channels: int) -> nn.Module:
    """``instance`` is GroupNorm(C, C) as in the DD code: per-sample statistics, no running buffers."""
    if norm == "instance":
        return nn.GroupNorm(channels, channels, affine=True)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")


class PooledLinear(nn.Linear):
    """Linear head on a feature map, adaptively average-pooled to ``pool`` x ``pool`` first.

    The pool is the identity at the resolution the public code was written for, so parameter counts match
    it there, and it lets the same head take any larger input (the public heads crash at 128 px).
    ``pool=None`` flattens the map as it is (the ConvNet head, sized from ``res`` at construction).
    """

    def __init__(self, in_features: int, out_features: int, pool: int | None = None):
        super().__init__(in_features, out_features)
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        if self.pool is not None and x.shape[-2:] != (self.pool, self.pool):
            x = F.adaptive_avg_pool2d(x, self.pool)
        return super().forward(x.flatten(1))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pool={self.pool}"


class SplitNet(nn.Module):
    """A network split into ``features`` (image -> last feature map) and ``classifier`` (map -> logits)."""

    cam_layer = "features"

    def __init__(self, features: nn.Module, classifier: nn.Module, res: int):
        super().__init__()
        self.features = features
        self.classifier = classifier
        self.res = res

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def check_res(name: str, res: int, minimum: int) -> None:
    if not isinstance(res, int) or res < minimum:
        raise ValueError(f"{name} needs an input side res >= {minimum} px, got {res!r}")

