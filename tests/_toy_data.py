"""A tiny colour-coded split shared by the KD-method tests (learnable in a few steps at 16 px)."""

from __future__ import annotations

import torch

from compdd.data import SubsetTensors


def toy_split(classes: int = 3, per_class: int = 8, res: int = 16, seed: int = 0) -> SubsetTensors:
    g = torch.Generator().manual_seed(seed)
    colours = torch.tensor([[220, 40, 40], [40, 220, 40], [40, 40, 220]])[:classes]
    labels = torch.arange(classes).repeat_interleave(per_class)
    x = colours[labels].view(-1, 3, 1, 1).float() + 30 * torch.randn(len(labels), 3, res, res, generator=g)
    return SubsetTensors(x.clamp(0, 255).to(torch.uint8), labels, tuple(f"n{i:08d}" for i in range(classes)),
                         "toy", "train")
