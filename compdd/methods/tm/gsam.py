"""GSAM (surrogate-gap guided sharpness-aware minimisation), as FTD and DATM train their experts.

One step on a fixed batch (FTD's ``gsam.py`` with ``adaptive=True``, constant rho):

1. ``g = grad L(w)``.
2. Perturb ``w <- w + e`` with ``e = rho * g * w**2 / (||(|w| * g)|| + 1e-12)`` (adaptive, ASAM-style;
   the norm runs over all tensors) or ``e = rho * g / (||g|| + 1e-12)`` (not adaptive).
3. ``g_p = grad L(w + e)``.
4. ``cos = <g, g_p> / (||g_p|| ||g|| + 1e-12)``; ``v = g - cos * ||g|| * g_p / (||g_p|| + 1e-12)`` (the part of
   ``g`` orthogonal to ``g_p``); the step direction is ``g_p - alpha * v``.
5. Restore ``w`` (exactly: a copy, not ``w + e - e``); the caller's base optimiser (plain SGD in the experts) takes the step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

EPS = 1e-12


def _global_norm(tensors: Sequence[Tensor]) -> Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


def gsam_gradients(params: Sequence[Tensor], loss_fn: Callable[[], Tensor], *, rho: float, alpha: float,
                   adaptive: bool = True) -> tuple[Tensor, list[Tensor]]:
    """Return (loss at ``w``, GSAM step direction per parameter); ``params`` are left unchanged.

    ``loss_fn`` must compute the loss of the same batch (same augmentation) each time it is called.
    """
    params = list(params)
    loss = loss_fn()
    g = torch.autograd.grad(loss, params)
    with torch.no_grad():
        original = [p.detach().clone() for p in params]
        if adaptive:
            scale = rho / (_global_norm([p.abs() * gi for p, gi in zip(params, g)]) + EPS)
            e = [gi * p.pow(2) * scale for p, gi in zip(params, g)]
        else:
            scale = rho / (_global_norm(g) + EPS)
            e = [gi * scale for gi in g]
        for p, ei in zip(params, e):
            p.add_(ei)
    try:
        g_p = torch.autograd.grad(loss_fn(), params)
    finally:
        with torch.no_grad():  # restore exactly (w + e - e can be off by one ulp)
            for p, w in zip(params, original):
                p.copy_(w)
    with torch.no_grad():
        norm_g, norm_p = _global_norm(g), _global_norm(g_p)
        cos = sum((a * b).sum() for a, b in zip(g, g_p)) / (norm_p * norm_g + EPS)
        out = [gp - alpha * (gi - cos * norm_g * gp / (norm_p + EPS)) for gi, gp in zip(g, g_p)]
    return loss.detach(), out
