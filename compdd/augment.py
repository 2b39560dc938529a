"""Training-time augmentation: DSA, the differentiable siamese augmentation of the DD code.

A :class:`DSA` turns a strategy string such as ``"color_crop_cutout_flip_scale_rotate"`` into a batched,
differentiable (w.r.t. the images) augmentation that runs on the images' device. Randomness is always
explicit: every call takes a seed or a CPU ``torch.Generator``; the global RNG is never touched. Sampling
(:meth:`DSA.sample`) is separate from applying (:meth:`DSA.apply`), so one draw can be applied to a real
and a synthetic batch alike ("siamese"), and the same seed gives the same transform on any device.

Semantics follow the public ``DiffAugment``/``ParamDiffAug`` (trajectory-matching spec §7.3): in the
default ``mode="single"`` each call picks one group of the strategy uniformly for the whole batch and
draws that group's parameters per sample. The ops are also available as plain functions with explicit
parameters (:func:`brightness`, :func:`translate`, :func:`rotate`, ...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

STANDARD_STRATEGY = "color_crop_cutout_flip_scale_rotate"
GROUPS = ("color", "crop", "cutout", "flip", "scale", "rotate")
MODES = ("single", "all")


# --- the ops, with explicit per-sample parameters (tensors of shape [B]) ---------------------------------


def _per_sample(v: Tensor, x: Tensor) -> Tensor:
    return v.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def brightness(x: Tensor, shift: Tensor) -> Tensor:
    """Add ``shift[b]`` to every value of sample ``b``."""
    return x + _per_sample(shift, x)


def saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Scale each pixel's deviation from its channel mean by ``factor[b]`` (0 gives grey)."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * _per_sample(factor, x) + mean


def contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Scale each sample's deviation from its overall mean by ``factor[b]``."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _per_sample(factor, x) + mean


def translate(x: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
    """Move sample ``b``'s content down by ``dy[b]`` and right by ``dx[b]`` whole pixels; the uncovered
    border is 0 (the dataset mean in normalised space). This is DSA's "crop"."""
    b, _, h, w = x.shape
    dy = dy.to(x.device, torch.long).view(b, 1, 1)
    dx = dx.to(x.device, torch.long).view(b, 1, 1)
    rows = torch.arange(h, device=x.device).view(1, h, 1) - dy  # source row of each output row
    cols = torch.arange(w, device=x.device).view(1, 1, w) - dx
    valid = ((rows >= 0) & (rows < h)) & ((cols >= 0) & (cols < w))  # [B, H, W]
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    # Advanced indices around the channel slice put the indexed dims first: [B, H, W, C].
    moved = x[batch, :, rows.clamp(0, h - 1), cols.clamp(0, w - 1)].permute(0, 3, 1, 2)
    return moved * valid.unsqueeze(1).to(x.dtype)


def cutout(x: Tensor, cy: Tensor, cx: Tensor, size: tuple[int, int]) -> Tensor:
    """Zero a ``size`` = (height, width) rectangle centred at (``cy[b]``, ``cx[b]``) in every channel,
    clipped at the borders (rows ``cy - height // 2 .. cy - height // 2 + height - 1``)."""
    b, _, h, w = x.shape
    top = cy.to(x.device, torch.long).view(b, 1, 1) - size[0] // 2
    left = cx.to(x.device, torch.long).view(b, 1, 1) - size[1] // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + size[0]) & (cols >= left) & (cols < left + size[1])
    return x * (~inside).unsqueeze(1).to(x.dtype)


def hflip(x: Tensor, mask: Tensor) -> Tensor:
    """Mirror (along the width) the samples where ``mask[b]`` is true."""
    return torch.where(mask.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)


def affine(x: Tensor, theta: Tensor) -> Tensor:
    """Resample with per-sample 2x3 matrices: the output at normalised point p reads the input at
    ``theta @ [p, 1]`` (bilinear, zeros outside, ``align_corners=True``, as in the DD code)."""
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def scale(x: Tensor, sx: Tensor, sy: Tensor) -> Tensor:
    """Sample the input at ``(sx·u, sy·v)``: factors above 1 shrink the content, below 1 enlarge it."""
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, zero], -1), torch.stack([zero, sy, zero], -1)], 1)
    return affine(x, theta)


def rotate(x: Tensor, angle: Tensor) -> Tensor:
    """Rotate by ``angle[b]`` radians about the centre (matrix [[cos, -sin], [sin, cos]] on the sampling
    grid: on screen, with rows growing downwards, a positive angle turns the content anticlockwise)."""
    c, s, zero = torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([c, -s, zero], -1), torch.stack([s, c, zero], -1)], 1)
    return affine(x, theta)


# --- sampling ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AugOp:
    """One op with its drawn per-sample parameters (CPU tensors of length B, or 1 when shared)."""

    name: str
    args: dict[str, Tensor]
    size: tuple[int, int] | None = None  # cutout rectangle, in pixels


@dataclass(frozen=True)
class DSAParams:
    """A drawn transform: the ops in order, for images of ``shape`` = (B, C, H, W)."""

    shape: tuple[int, int, int, int]
    ops: tuple[AugOp, ...] = field(default_factory=tuple)

    @property
    def names(self) -> list[str]:
        return [op.name for op in self.ops]


def _generator(rng: int | torch.Generator) -> torch.Generator:
    if isinstance(rng, torch.Generator):
        if rng.device.type != "cpu":
            raise ValueError("DSA draws its parameters on the CPU; pass a CPU torch.Generator or an int seed")
        return rng
    if isinstance(rng, bool) or not isinstance(rng, int):
        raise TypeError(f"rng must be an int seed or a torch.Generator, got {type(rng).__name__}")
    return torch.Generator().manual_seed(rng)


class DSA:
    """Differentiable siamese augmentation.

    Args:
        strategy: groups joined by ``_`` from color, crop, cutout, flip, scale, rotate; ``""`` or ``"none"``
            is the identity.
        mode: ``"single"`` (public ``aug_mode='S'``, the default everywhere in the DD code): one group per call,
            chosen uniformly and shared by the batch. ``"all"`` (public ``'M'``): every group, in strategy order.
        per_sample: draw parameters per sample (public default). ``False`` shares one draw across the batch,
            like the public seeded mode, so it also applies to batches of another size.
        crop_ratio: largest translation as a fraction of the side, ``int(side·ratio + 0.5)`` pixels
            (0.125 standard; 0.25 in EDF's distillation and evaluation code).
        scale: factors uniform in ``[1/scale, scale]``, drawn independently for x and y.
        rotate: angle uniform in ``[-rotate, rotate]`` degrees.
        cutout: side of the zeroed square as a fraction of the image side.
        flip: probability of a horizontal flip.
        brightness: shift ``(u - 0.5)·brightness``; saturation: factor ``u·saturation``;
            contrast: factor ``u + contrast``; each ``u ~ U(0, 1)``.
    """

    def __init__(self, strategy: str = STANDARD_STRATEGY, *, mode: str = "single", per_sample: bool = True,
                 crop_ratio: float = 0.125, scale: float = 1.2, rotate: float = 15.0, cutout: float = 0.5,
                 flip: float = 0.5, brightness: float = 1.0, saturation: float = 2.0, contrast: float = 0.5):
        self.groups = parse_strategy(strategy)
        if mode not in MODES:
            raise ValueError(f"unknown DSA mode {mode!r}; choose one of {', '.join(MODES)}")
        if not 0 <= crop_ratio < 1 or not 0 <= cutout <= 1 or not 0 <= flip <= 1 or scale < 1:
            raise ValueError("DSA needs 0 <= crop_ratio < 1, 0 <= cutout <= 1, 0 <= flip <= 1 and scale >= 1")
        self.strategy, self.mode, self.per_sample = "_".join(self.groups), mode, per_sample
        self.crop_ratio, self.scale_ratio, self.rotate_deg, self.cutout_ratio = crop_ratio, scale, rotate, cutout
        self.flip_prob, self.brightness, self.saturation, self.contrast = flip, brightness, saturation, contrast

    def __repr__(self) -> str:
        return (f"DSA({self.strategy!r}, mode={self.mode!r}, per_sample={self.per_sample}, "
                f"crop_ratio={self.crop_ratio}, scale={self.scale_ratio}, rotate={self.rotate_deg}, "
                f"cutout={self.cutout_ratio}, flip={self.flip_prob}, brightness={self.brightness}, "
                f"saturation={self.saturation}, contrast={self.contrast})")

    def __call__(self, x: Tensor, rng: int | torch.Generator) -> Tensor:
        """Augment ``x`` [B, C, H, W] with a transform drawn from ``rng`` (a seed, or a CPU generator that
        is advanced)."""
        return self.apply(x, self.sample(x.shape, rng))

    def sample(self, shape: Sequence[int], rng: int | torch.Generator) -> DSAParams:
        """Draw a transform for images of ``shape`` (B, C, H, W); nothing is drawn from the global RNG."""
        if len(shape) != 4:
            raise ValueError(f"DSA works on image batches [B, C, H, W], got shape {tuple(shape)}")
        shape4 = (int(shape[0]), int(shape[1]), int(shape[2]), int(shape[3]))
        if not self.groups:
            return DSAParams(shape4)
        g = _generator(rng)
        groups = self.groups
        if self.mode == "single":
            groups = (groups[int(torch.randint(len(groups), (1,), generator=g))],)
        n = shape4[0] if self.per_sample else 1
        ops: list[AugOp] = []
        for group in groups:
            ops += self._draw(group, n, shape4[2], shape4[3], g)
        return DSAParams(shape4, tuple(ops))

    def _draw(self, group: str, n: int, h: int, w: int, g: torch.Generator) -> list[AugOp]:
        def u() -> Tensor:
            return torch.rand(n, generator=g)

        if group == "color":
            return [AugOp("brightness", {"shift": (u() - 0.5) * self.brightness}),
                    AugOp("saturation", {"factor": u() * self.saturation}),
                    AugOp("contrast", {"factor": u() + self.contrast})]
        if group == "crop":
            sy, sx = int(h * self.crop_ratio + 0.5), int(w * self.crop_ratio + 0.5)
            return [AugOp("translate", {"dy": torch.randint(-sy, sy + 1, (n,), generator=g),
                                        "dx": torch.randint(-sx, sx + 1, (n,), generator=g)})]
        if group == "cutout":
            size = (int(h * self.cutout_ratio + 0.5), int(w * self.cutout_ratio + 0.5))
            # Centres range over H+1 values for an even side (H for odd), as in the public code.
            return [AugOp("cutout", {"cy": torch.randint(0, h + 1 - size[0] % 2, (n,), generator=g),
                                     "cx": torch.randint(0, w + 1 - size[1] % 2, (n,), generator=g)}, size)]
        if group == "flip":
            return [AugOp("hflip", {"mask": u() < self.flip_prob})]
        if group == "scale":
            r = self.scale_ratio
            return [AugOp("scale", {"sx": u() * (r - 1 / r) + 1 / r, "sy": u() * (r - 1 / r) + 1 / r})]
        assert group == "rotate"
        return [AugOp("rotate", {"angle": (u() - 0.5) * 2 * math.radians(self.rotate_deg)})]

    def apply(self, x: Tensor, params: DSAParams) -> Tensor:
        """Apply a drawn transform to ``x``; differentiable w.r.t. ``x``. A per-sample draw needs a batch of
        the size it was drawn for; a shared draw (``per_sample=False``) applies to any batch size."""
        if x.ndim != 4 or tuple(x.shape[2:]) != params.shape[2:]:
            raise ValueError(f"DSA params were drawn for images of shape {params.shape}, got {tuple(x.shape)}")
        b = x.shape[0]
        for op in params.ops:
            args = {k: _batch(v, b, params) for k, v in op.args.items()}
            if op.name == "cutout":
                assert op.size is not None
                x = cutout(x, args["cy"], args["cx"], op.size)
            else:
                x = _OPS[op.name](x, **args)
        return x


def _batch(v: Tensor, b: int, params: DSAParams) -> Tensor:
    if v.shape[0] == b:
        return v
    if v.shape[0] == 1:
        return v.expand(b)
    raise ValueError(f"DSA params were drawn per sample for a batch of {params.shape[0]}, got a batch of {b}; "
                     "draw them for this batch or use per_sample=False to share one draw")


_OPS = {"brightness": brightness, "saturation": saturation, "contrast": contrast, "translate": translate,
        "hflip": hflip, "scale": scale, "rotate": rotate}


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """``"color_crop"`` -> ``("color", "crop")``; ``""``/``"none"`` -> ``()``; unknown groups raise."""
    if strategy.strip().lower() in ("", "none"):
        return ()
    groups = tuple(strategy.strip().lower().split("_"))
    bad = [s for s in groups if s not in GROUPS]
    if bad:
        raise ValueError(f"unknown DSA group(s) {', '.join(map(repr, bad))} in strategy {strategy!r}; "
                         f"known groups: {', '.join(GROUPS)}")
    return groups
