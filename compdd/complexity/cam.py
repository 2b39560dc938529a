"""Grad-CAM maps and the activated-fraction statistic behind Grad-CAM complexity.

Two engines compute the same maps:

- :class:`FastGradCAM`: plain Grad-CAM at the output of ``forward_features`` (the last block) of a timm-style
  network. The trunk runs without autograd; only the head is differentiated, which for a GAP + linear head costs
  nothing. Optionally BatchNorm is folded into the convolutions and the trunk runs channels-last (or compiled),
  which changes float rounding only: in float64 the maps equal torchcam's to 1e-9 (tested). bfloat16 autocast
  (``amp``) is faster again but not exact.
- :class:`TorchcamCAM`: torchcam's ``GradCAM`` or ``SmoothGradCAMpp`` at any named layers; the reference
  implementation, and the only one for Smooth Grad-CAM++ (the ``edf-code`` preset).

Both return maps ReLU'd and min-max normalised per image exactly as torchcam does, at native resolution.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

EPS = 1e-8  # torchcam's normalisation epsilon


@dataclass
class CamBatch:
    """Per-layer maps (N, h, w) in [0, 1], the logits (N, C) and the class each map explains (N,)."""

    maps: dict[str, torch.Tensor]
    logits: torch.Tensor
    targets: torch.Tensor


def minmax_normalize(cam: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Per-image min-max over the last two dims, in torchcam's order of operations (so results match bit for bit)."""
    cam = cam - cam.amin(dim=(-2, -1), keepdim=True)
    return cam / (cam.amax(dim=(-2, -1), keepdim=True) + eps)


def activated_fraction(maps: torch.Tensor, threshold: float = 0.5, comparison: str = ">=",
                       size: Sequence[int] | None = None) -> torch.Tensor:
    """Share of map cells at or above (``>=``) or strictly above (``>``) ``threshold``, per image (float64).

    ``size`` upsamples the maps bilinearly first (``align_corners=False``); ``None`` keeps native resolution.
    """
    if size is not None and tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    if comparison == ">=":
        hit = maps >= threshold
    elif comparison == ">":
        hit = maps > threshold
    else:
        raise ValueError(f"comparison must be '>=' or '>', got {comparison!r}")
    return hit.flatten(1).sum(1).double() / hit[0].numel()


def _choose_targets(logits: torch.Tensor, labels: torch.Tensor | None, target: str) -> torch.Tensor:
    if target == "label":
        if labels is None:
            raise ValueError("target 'label' needs the ground-truth labels")
        return labels.to(logits.device)
    if target == "predicted":
        return logits.argmax(1)
    raise ValueError(f"target must be 'label' or 'predicted', got {target!r}")


def last_block_name(model: nn.Module) -> str:
    """Name of the module whose output ``forward_features`` returns (``layer4`` for a ResNet)."""
    info = getattr(model, "feature_info", None)
    if info:
        return info[-1]["module"]
    raise ValueError(f"cannot tell the last block of {type(model).__name__}; name the layer explicitly (--layer)")


def fold_batchnorm(trunk: nn.Module) -> nn.Module:
    """A copy of ``trunk`` (eval mode) with each BatchNorm that directly follows a convolution folded into it.

    Uses torch.fx to find conv -> bn pairs in the real data flow; returns an unfolded copy if tracing fails.
    """
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(copy.deepcopy(trunk).eval())
    except Exception as e:  # fx raises many kinds of errors for untraceable code
        log.info("BatchNorm folding skipped (%s: %s)", type(e).__name__, e)
        return copy.deepcopy(trunk).eval()


class _Features(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


class FastGradCAM:
    """Plain Grad-CAM at the last block of a network with ``forward_features`` / ``forward_head`` (timm convention).

    - ``optimize`` folds BatchNorm and runs the trunk channels-last.
    - ``amp`` runs the trunk in bfloat16 autocast: on CUDA, and on CPUs with native bfloat16 about twice as fast;
      maps then differ from float32 by ~1e-2, so some cells near the threshold flip.
    - ``compile`` compiles the trunk with torch.compile (inductor, frozen weights). The first batch pays the compile
      time; smaller batches are padded to its size so nothing recompiles.

    The head and the map arithmetic always run in the model's dtype (float32).
    """

    def __init__(self, model: nn.Module, *, optimize: bool = False, amp: bool = False, compile: bool = False) -> None:
        if not (hasattr(model, "forward_features") and hasattr(model, "forward_head")):
            raise ValueError(f"{type(model).__name__} has no forward_features/forward_head; use the torchcam engine")
        self.model = model.eval()
        self.layer = last_block_name(model)
        self.layers = (self.layer,)
        self.channels_last = optimize
        self.amp = amp
        trunk: nn.Module = _Features(self.model)
        if optimize:
            trunk = fold_batchnorm(trunk).to(memory_format=torch.channels_last)
        if compile:
            trunk = torch.compile(trunk, dynamic=False, options={"freezing": True})
        self.trunk = trunk
        self.compiled = compile
        self._batch: int | None = None

    def __call__(self, x: torch.Tensor, labels: torch.Tensor | None = None, target: str = "label") -> CamBatch:
        n = x.shape[0]
        if self.compiled:
            self._batch = self._batch or n
            if n < self._batch:
                x = torch.cat([x, x.new_zeros((self._batch - n, *x.shape[1:]))])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(x.device.type, torch.bfloat16, enabled=self.amp):
            feats = self.trunk(x)[:n]
        dtype = next(self.model.parameters()).dtype
        a = feats.to(dtype).contiguous().clone().requires_grad_(True)  # clone: leave inference mode
        with torch.enable_grad():
            logits = self.model.forward_head(a)
            targets = _choose_targets(logits.detach(), labels, target)
            (grad,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), a)
        with torch.no_grad():
            weights = grad.flatten(2).mean(-1)
            cam = F.relu(torch.nansum(weights[..., None, None] * a.detach(), dim=1))
            return CamBatch({self.layer: minmax_normalize(cam)}, logits.detach(), targets)


class TorchcamCAM:
    """torchcam's ``GradCAM`` (all ``layers`` from one forward) or ``SmoothGradCAMpp`` (one extractor per layer,
    as the public EDF code ran it). Smooth Grad-CAM++ draws noise from torch's global RNG: seed it first.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], method: str = "gradcam", *,
                 num_samples: int = 4, std: float = 0.3) -> None:
        if method not in ("gradcam", "smoothgradcampp"):
            raise ValueError(f"unknown CAM method {method!r}; use 'gradcam' or 'smoothgradcampp'")
        names = dict(model.named_modules())
        bad = [name for name in layers if name not in names]
        if bad:
            raise ValueError(f"layer(s) {bad} not in the model; choose from its modules, e.g. "
                             f"{', '.join(n for n in names if n.count('.') == 0 and n)}")
        self.model = model.eval()
        self.layers = tuple(layers)
        self.method = method
        self.num_samples, self.std = num_samples, std

    def __call__(self, x: torch.Tensor, labels: torch.Tensor | None = None, target: str = "label") -> CamBatch:
        from torchcam.methods import GradCAM, SmoothGradCAMpp

        with torch.enable_grad():
            if self.method == "gradcam":
                with GradCAM(self.model, target_layer=list(self.layers)) as ext:
                    logits = self.model(x)
                    targets = _choose_targets(logits.detach(), labels, target)
                    cams = ext(class_idx=targets.tolist(), scores=logits)
                return CamBatch(dict(zip(self.layers, cams, strict=True)), logits.detach(), targets)
            maps = {}
            for layer in self.layers:
                with SmoothGradCAMpp(self.model, target_layer=layer, num_samples=self.num_samples, std=self.std,
                                     input_shape=tuple(x.shape[1:])) as ext:
                    logits = self.model(x)
                    targets = _choose_targets(logits.detach(), labels, target)
                    maps[layer] = ext(class_idx=targets.tolist(), scores=logits)[0]
            return CamBatch(maps, logits.detach(), targets)
