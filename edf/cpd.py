"""Common Pattern Dropout (CPD): trajectory matching on the high-error parameters only.

The trajectory-matching engine hands a loss reduction two flat vectors with one entry per scalar
parameter of the student network (``P`` of them, 615,690 for ConvNetD5 at 128 px):

    r_i = (theta_N,i - target_i)**2      the student's end-point error (differentiable)
    d_i = (start_i  - target_i)**2       the expert's start-to-target distance (constant)

DATM scores ``sum(r) / sum(d)``. CPD drops ``k = floor(alpha * P)`` elements and normalises what is left
by the start-to-target distance over the **same kept elements** (EDF's public code, spec §5.1):

    L_CPD = sum_{i in kept} r_i / sum_{i in kept} d_i

With the paper's criterion (``loss``) the dropped elements are the ``k`` smallest ``r_i``, i.e. the
supervision the student already matches ("common patterns"); ``alpha = 0`` is exactly DATM's loss.
The other criteria are the paper's Table 7 ablation. Selecting the ``k`` smallest needs no full sort:
``torch.topk`` is a partial selection, about four times faster than ``argsort`` at ``P`` = 615,690 on a
CPU (``bench/edf_overhead.py`` prints the figures).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

CRITERIA: tuple[str, ...] = ("loss", "random", "first", "middle", "last", "uniform")
"""Which elements CPD drops (paper Table 7):

``loss``     the ``k`` elements with the smallest error ``r_i``, re-chosen every iteration (EDF).
``random``   ``k`` elements drawn uniformly from the whole vector, re-drawn every iteration.
``first``    the first ``k`` elements in parameter order (the first layers), fixed.
``middle``   ``k`` contiguous elements centred in the vector (the middle layers), fixed.
``last``     the last ``k`` elements (the last layers, classifier first), fixed.
``uniform``  ``k`` evenly spaced elements, so every layer loses the same share ``alpha``, fixed.
"""


def num_dropped(alpha: float, num_params: int) -> int:
    """``floor(alpha * P)``, the public code's ``int(loss_threshold * P)``."""
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"CPD drop ratio alpha must be in [0, 1), got {alpha} (alpha = 1 drops everything: 0/0)")
    return int(math.floor(alpha * num_params))


def dropped_indices(r: Tensor, k: int, criterion: str = "loss", generator: torch.Generator | None = None) -> Tensor:
    """Flat indices of the ``k`` elements ``criterion`` drops, on ``r``'s device.

    ``generator`` (a CPU generator) drives ``random``; the other criteria are deterministic.
    """
    n = r.numel()
    if not 0 <= k < n:
        raise ValueError(f"cannot drop {k} of {n} elements")
    device = r.device
    if criterion == "loss":
        # Partial selection of the k smallest; the selection itself is not differentiated.
        return torch.topk(r.detach(), k, largest=False, sorted=False).indices
    if criterion == "random":
        return torch.randperm(n, generator=generator)[:k].to(device)
    if criterion == "first":
        return torch.arange(k, device=device)
    if criterion == "last":
        return torch.arange(n - k, n, device=device)
    if criterion == "middle":
        lo = (n - k) // 2
        return torch.arange(lo, lo + k, device=device)
    if criterion == "uniform":
        # floor(i * n / k) for i < k: distinct, evenly spread, each layer losing about alpha of its elements
        return torch.arange(k, device=device) * n // k
    raise ValueError(f"unknown CPD dropout criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")


def cpd_loss(r: Tensor, d: Tensor, alpha: float, criterion: str = "loss",
             generator: torch.Generator | None = None) -> Tensor:
    """``sum(r[kept]) / sum(d[kept])`` after dropping ``floor(alpha * P)`` elements chosen by ``criterion``.

    Gradients reach only the kept entries of ``r``. ``alpha = 0`` returns ``r.sum() / d.sum()``, the very
    expression DATM uses, so EDF without CPD is bit-identical to DATM.
    """
    if r.shape != d.shape or r.ndim != 1:
        raise ValueError(f"r and d must be flat vectors of the same length, got {tuple(r.shape)} and {tuple(d.shape)}")
    k = num_dropped(alpha, r.numel())
    if k == 0:
        return r.sum() / d.sum()
    keep = torch.ones(r.shape, dtype=torch.bool, device=r.device)
    keep[dropped_indices(r, k, criterion, generator)] = False
    return torch.where(keep, r, 0.0).sum() / torch.where(keep, d, 0.0).sum()


class CommonPatternDropout:
    """CPD as the engine's loss reduction: ``reduction(r, d) -> L``.

    Holds the generator of the ``random`` criterion, seeded explicitly, so a run is reproducible, and
    saves it with the engine's checkpoints.
    """

    def __init__(self, alpha: float, criterion: str = "loss", seed: int = 0):
        if criterion not in CRITERIA:
            raise ValueError(f"unknown CPD dropout criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
        num_dropped(alpha, 1)  # validates alpha
        self.alpha = float(alpha)
        self.criterion = criterion
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, r: Tensor, d: Tensor) -> Tensor:
        return cpd_loss(r, d, self.alpha, self.criterion, self.generator)

    # The engine checkpoints hooks that have these, so a resumed ``random`` run draws what it would have.
    def state_dict(self) -> dict[str, Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"].cpu())

    def __repr__(self) -> str:
        return f"CommonPatternDropout(alpha={self.alpha}, criterion={self.criterion!r})"
