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

import logging

import torch
from torch import Tensor

log = logging.getLogger(__name__)

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


class DiscriminativeAreaEnhancement:
    """DAE as the trajectory-matching engine's ``image_grad_transform(grad, ctx)``.

    The maps are refreshed at the first update of every block of ``interval`` iterations (``it // K``) and
    reused until the next block. The public code refreshes at ``it % K == 0`` even when that iteration's
    update is skipped by the loss threshold; a skipped update leaves images and labels unchanged, so the
    maps computed at the block's first *applied* update are the same maps. Only the image gradient passes
    through here: the engine steps labels and learning rate with their own, untouched gradients.
    """

    def __init__(self, cam_net, beta: float, interval: int, threshold: Threshold = "mean", *,
                 method: str = "gradcam", target: str = "class", compat_edf_code: bool = False,
                 batch_size: int = 64):
        if interval < 1:
            raise ValueError(f"cam_interval must be >= 1, got {interval}")
        enhancement_weights(torch.zeros(1, 1, 1), beta, threshold)  # validates the threshold early
        self.cam_net = cam_net
        self.beta, self.interval, self.threshold = float(beta), int(interval), threshold
        self.method, self.target, self.compat = method, target, compat_edf_code
        self.batch_size = batch_size
        self.maps: Tensor | None = None
        self.weights: Tensor | None = None
        self.refreshed_at = -1
        self.refreshes = 0

    def __call__(self, grad: Tensor, ctx) -> Tensor:
        if self.maps is None or ctx.iteration // self.interval != self.refreshed_at // self.interval:
            self.refresh(ctx.images, ctx.classes, ctx.labels, ctx.generator)
            self.refreshed_at = ctx.iteration
        assert self.weights is not None
        return enhance_image_gradient(grad, self.weights.to(grad.device))

    def refresh(self, images: Tensor, classes: Tensor, labels: Tensor, generator: torch.Generator) -> None:
        """Recompute the maps of the current synthetic images and the weights ``F(M, beta)``."""
        from edf.cam import compute_cams, target_indices

        num_classes = int(classes.max()) + 1
        soft = labels if labels.is_floating_point() else torch.nn.functional.one_hot(labels, num_classes).float()
        targets = target_indices(self.cam_net, classes, soft, target=self.target, compat_edf_code=self.compat)
        self.cam_net.to(images.device)
        self.maps = compute_cams(self.cam_net, images, targets, method=self.method, batch_size=self.batch_size,
                                 generator=generator)
        self.weights = enhancement_weights(self.maps, self.beta, self.threshold)
        self.refreshes += 1
        flat = (self.maps.amax(dim=(-2, -1)) - self.maps.amin(dim=(-2, -1))) <= 0
        if self.refreshes == 1 and bool(flat.all()):
            log.warning("every CAM is flat (is the CAM layer's map 1 x 1 at %d px?); DAE then only scales the whole "
                        "image gradient by beta + 0. Use a CAM model with a larger last feature map at this "
                        "resolution (e.g. cam_weights=expert)", images.shape[-1])

    def state_dict(self) -> dict[str, Tensor]:
        if self.maps is None:
            return {}
        return {"maps": self.maps, "refreshed_at": torch.tensor(self.refreshed_at)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if "maps" in state:
            self.maps = state["maps"]
            self.weights = enhancement_weights(self.maps, self.beta, self.threshold)
            self.refreshed_at = int(state["refreshed_at"])
