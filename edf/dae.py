"""Discriminative Area Enhancement (DAE): weight the image gradients by Grad-CAM maps.

Every ``K`` iterations the CAMs ``M`` of the current synthetic images are recomputed (:mod:`edf.cam`);
in between they are reused. After the matching loss has been back-propagated, the gradient of the
synthetic **images** (not of the labels or the learning rate) is multiplied pixel-wise by

    F(M, beta)_hw = 1            if M_hw <  threshold
                    beta + M_hw  if M_hw >= threshold

(paper Eq. 4), broadcast over the colour channels, before the optimiser's momentum step. ``threshold``
is the per-image mean of ``M`` (the paper's rule and the default) or a fixed value in [0, 1] (Table 6b).
"""

from __future__ import annotations

import torch
from torch import Tensor

Threshold = str | float  # "mean" or a fixed value


def _threshold(maps: Tensor, threshold: Threshold) -> Tensor | float:
    if threshold == "mean":
        # in float64, so that a flat map sits exactly at its mean instead of one rounding error off it
        return maps.double().mean(dim=(-2, -1), keepdim=True)
    if isinstance(threshold, str):
        raise ValueError(f"activation threshold must be 'mean' or a number in [0, 1], got {threshold!r}")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"a fixed activation threshold must be in [0, 1], got {threshold}")
    return float(threshold)


def enhancement_weights(maps: Tensor, beta: float, threshold: Threshold = "mean") -> Tensor:
    """``F(M, beta)`` for maps ``(N, H, W)`` in [0, 1]: weights shaped ``(N, 1, H, W)``."""
    if maps.ndim != 3:
        raise ValueError(f"activation maps must be (N, H, W), got {tuple(maps.shape)}")
    w = torch.where(maps.double() >= _threshold(maps, threshold), beta + maps, torch.ones_like(maps))
    return w.unsqueeze(1)


def discriminative_area(maps: Tensor, threshold: Threshold = "mean") -> Tensor:
    """Per-image percentage of pixels whose activation is above the threshold (paper Fig. 5b): ``(N,)``."""
    if maps.ndim != 3:
        raise ValueError(f"activation maps must be (N, H, W), got {tuple(maps.shape)}")
    return (maps.double() > _threshold(maps, threshold)).float().mean(dim=(-2, -1)) * 100.0


def enhance_image_gradient(grad: Tensor, weights: Tensor) -> Tensor:
    """The image gradient ``(N, 3, H, W)`` rescaled by DAE weights ``(N, 1, H, W)``."""
    if weights.shape[0] != grad.shape[0] or weights.shape[-2:] != grad.shape[-2:]:
        raise ValueError(f"DAE weights {tuple(weights.shape)} do not fit image gradient {tuple(grad.shape)}")
    return grad * weights.to(grad.dtype)
