"""The hook points of the trajectory-matching engine, and the built-in choices for each.

An outer iteration of :func:`compdd.methods.tm.engine.run` calls, in order:

1. ``window.sample(it, gen)`` — the expert epoch the student starts from (:class:`StartEpochWindow`).
2. the unroll and ``reduction(r, d)`` — the per-element reduction of the matching loss
   (:data:`compdd.methods.tm.unroll.Reduction`; EDF's Common Pattern Dropout plugs in here).
3. ``update_gate(loss, ctx)`` — whether to apply this iteration's update at all (DATM's loss threshold).
4. ``image_grad_transform(grad, ctx)`` — rewrite the image gradient before the optimiser step
   (EDF's Discriminative Area Enhancement plugs in here).
5. the optimiser steps, then the image EMA (``ema_decay``, FTD).
6. ``on_iteration_end(ctx)`` — logging, plotting, early stopping (raise to stop).

Before the first iteration, ``init_images`` and ``init_labels`` build the synthetic set (real samples,
noise, or real samples the experts classify correctly; hard labels, or DATM's learned soft labels).

A hook object that keeps state across iterations (e.g. DAE's activation maps) can define
``state_dict() -> dict[str, Tensor]`` and ``load_state_dict(d)``; the engine saves and restores that state
with its checkpoints, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from compdd.data import SubsetTensors
from compdd.methods.tm.unroll import Reduction, normalized_matching_loss

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------- start epoch


@dataclass(frozen=True)
class StartEpochWindow:
    """Start epochs ``t ~ UniformInt[min_start, upper_bound(it))`` (upper bound exclusive).

    Without ``initial_max`` the upper bound is ``max_start`` throughout (MTT, FTD). With it, the upper bound
    grows linearly from ``initial_max`` to ``max_start`` over the first ``expansion_end`` iterations (DATM's
    difficulty-aligned window, ``Sequential_Generation``):

        upper_bound(it) = min(max_start, initial_max + floor((max_start - initial_max) * it / expansion_end))
    """

    min_start: int = 0
    max_start: int = 10
    initial_max: int | None = None
    expansion_end: int = 0

    def __post_init__(self) -> None:
        lo = self.initial_max if self.initial_max is not None else self.max_start
        if not 0 <= self.min_start < lo <= self.max_start:
            raise ValueError(f"start-epoch window needs 0 <= min_start_epoch < initial max <= max_start_epoch, got "
                             f"{self.min_start}, {lo}, {self.max_start}")
        if self.initial_max is not None and self.initial_max < self.max_start and self.expansion_end < 1:
            raise ValueError("a growing start-epoch window needs expansion_end >= 1 iterations")

    def upper_bound(self, it: int) -> int:
        if self.initial_max is None or self.initial_max >= self.max_start:
            return self.max_start
        grown = self.initial_max + (self.max_start - self.initial_max) * it // self.expansion_end
        return min(self.max_start, grown)

    def sample(self, it: int, generator: torch.Generator) -> int:
        return int(torch.randint(self.min_start, self.upper_bound(it), (1,), generator=generator))

    def largest_start(self) -> int:
        return self.max_start - 1


# ------------------------------------------------------------------------------------ context, hooks


@dataclass
class IterationContext:
    """What a hook can see of the current outer iteration. Tensors are the live state: do not modify them."""

    iteration: int
    images: Tensor  # (C*ipc, 3, R, R), class-major
    labels: Tensor  # int64 (C*ipc,) or float soft logits (C*ipc, C)
    classes: Tensor  # int64 (C*ipc,): the class each row was made for
    wnids: tuple[str, ...]  # class map: local label -> ImageNet wnid
    ipc: int
    syn_lr: float
    generator: torch.Generator  # seeded from (run seed, iteration); for hooks that need randomness
    start_epoch: int = -1
    expert: int = -1
    loss: float = float("nan")
    updated: bool = False


class Classifier(Protocol):
    def __call__(self, x: Tensor) -> Tensor: ...


@dataclass
class InitContext:
    """What the initialisation hooks get: the real data and the experts (at ``label_init_epoch``)."""

    train: SubsetTensors
    ipc: int
    generator: torch.Generator
    device: torch.device
    num_experts: int
    expert_classifier: Callable[[int], Classifier]  # expert index -> logits function


def always_update(loss: Tensor, ctx: IterationContext) -> bool:
    return True


@dataclass
class LossThresholdGate:
    """DATM's update gate: skip the optimiser steps when the matching loss exceeds ``threshold``."""

    threshold: float

    def __call__(self, loss: Tensor, ctx: IterationContext) -> bool:
        return float(loss) <= self.threshold


@dataclass
class Hooks:
    """Everything the engine lets a method change. Defaults are MTT's."""

    window: StartEpochWindow = field(default_factory=StartEpochWindow)
    init_images: Callable[[InitContext], tuple[Tensor, list[int]]] = field(default_factory=lambda: ImageInit("real"))
    init_labels: Callable[[Tensor, Tensor, InitContext], Tensor] = field(default_factory=lambda: LabelInit("hard"))
    reduction: Reduction = normalized_matching_loss
    update_gate: Callable[[Tensor, IterationContext], bool] = always_update
    image_grad_transform: Callable[[Tensor, IterationContext], Tensor] | None = None
    ema_decay: float | None = None
    on_iteration_end: Callable[[IterationContext], None] | None = None

    def stateful(self) -> dict[str, object]:
        """Hook objects whose state goes into checkpoints (those with ``state_dict``/``load_state_dict``)."""
        names = ("init_images", "init_labels", "reduction", "update_gate", "image_grad_transform", "on_iteration_end")
        return {n: getattr(self, n) for n in names
                if hasattr(getattr(self, n), "state_dict") and hasattr(getattr(self, n), "load_state_dict")}


# ------------------------------------------------------------------------------------- initialisation


@dataclass(frozen=True)
class ImageInit:
    """Initial synthetic images: ``kind`` is ``noise``, ``real`` or ``real_correct`` (see :func:`init_images`)."""

    kind: str = "real"

    def __call__(self, ctx: InitContext) -> tuple[Tensor, list[int]]:
        return init_images(self.kind, ctx.train, ctx.ipc, ctx.generator, ctx.expert_classifier, ctx.num_experts,
                           ctx.device)


@dataclass(frozen=True)
class LabelInit:
    """Initial labels: ``hard`` (int64 classes) or ``soft`` (DATM's expert logits, :func:`init_soft_labels`)."""

    mode: str = "hard"

    def __call__(self, images: Tensor, classes: Tensor, ctx: InitContext) -> Tensor:
        if self.mode == "hard":
            return classes.clone()
        if self.mode == "soft":
            return init_soft_labels(images, classes, ctx.expert_classifier, ctx.num_experts)
        raise ValueError(f"unknown label_mode {self.mode!r}; choose hard or soft")


def init_images(kind: str, train: SubsetTensors, ipc: int, generator: torch.Generator,
                expert_classifier: Callable[[int], Classifier] | None = None, num_experts: int = 0,
                device: str | torch.device = "cpu") -> tuple[Tensor, list[int]]:
    """Initial synthetic images, class-major, and the training rows they came from ([] for noise).

    ``noise``: standard normal pixels (in the normalised space). ``real``: ``ipc`` random training images per
    class. ``real_correct`` (DATM's ``samples_predicted_correctly``): random training images of the class that
    expert 0 at its final epoch classifies correctly; if a class runs out, the next experts are tried in turn,
    and if all fail the remaining slots take random images of the class (logged), instead of looping forever.
    """
    C, R = train.num_classes, train.resolution
    if kind == "noise":
        return torch.randn(C * ipc, 3, R, R, generator=generator).to(device), []
    if kind not in ("real", "real_correct"):
        raise ValueError(f"unknown image_init {kind!r}; choose noise, real or real_correct")
    picks: list[int] = []
    for c in range(C):
        rows = train.indices_of_class(c)
        if len(rows) < ipc:
            raise ValueError(f"class {c} ({train.wnids[c]}) has {len(rows)} training images, fewer than ipc={ipc}")
        order = rows[torch.randperm(len(rows), generator=generator)]
        if kind == "real":
            picks += order[:ipc].tolist()
            continue
        if expert_classifier is None or num_experts < 1:
            raise ValueError("image_init real_correct needs experts to classify the real images")
        chosen: list[int] = []
        for e in range(num_experts):
            predict = expert_classifier(e)
            for i in range(0, len(order), 256):
                batch = order[i:i + 256]
                batch = batch[~torch.isin(batch, torch.tensor(chosen, dtype=torch.long))]
                if len(batch) == 0:
                    continue
                x = _normalized_rows(train, batch, device)
                with torch.no_grad():
                    ok = predict(x).argmax(1).cpu() == c
                chosen += batch[ok].tolist()[: ipc - len(chosen)]
                if len(chosen) == ipc:
                    break
            if len(chosen) == ipc:
                break
        if len(chosen) < ipc:
            rest = [int(r) for r in order if int(r) not in set(chosen)]
            log.warning("class %d (%s): experts classify only %d of its images correctly; filling %d slots with "
                        "random images of the class", c, train.wnids[c], len(chosen), ipc - len(chosen))
            chosen += rest[: ipc - len(chosen)]
        picks += chosen
    idx = torch.tensor(picks, dtype=torch.long)
    return _normalized_rows(train, idx, device), picks


def _normalized_rows(train: SubsetTensors, rows: Tensor, device: str | torch.device) -> Tensor:
    part = SubsetTensors(train.images[rows], train.labels[rows], train.wnids, train.subset, train.split)
    return part.normalized(device)


def init_soft_labels(images: Tensor, classes: Tensor, expert_classifier: Callable[[int], Classifier],
                     num_experts: int) -> Tensor:
    """DATM's soft-label initialisation: per image, the mean logit vector of the experts (at their final
    epoch, no augmentation) whose argmax is the image's class,

        Y_j = sum_m 1[argmax z_m(x_j) = c_j] z_m(x_j) / sum_m 1[argmax z_m(x_j) = c_j].

    An image that no expert classifies correctly gets the mean over all experts (the public code would
    divide by zero there; its images are chosen so that this cannot happen).
    """
    total = None
    correct_sum = None
    count = torch.zeros(len(images), device=images.device)
    with torch.no_grad():
        for e in range(num_experts):
            z = expert_classifier(e)(images).float()
            ok = (z.argmax(1) == classes.to(z.device)).float()
            total = z if total is None else total + z
            correct_sum = z * ok[:, None] if correct_sum is None else correct_sum + z * ok[:, None]
            count += ok
    assert total is not None and correct_sum is not None
    fallback = count == 0
    if bool(fallback.any()):
        log.warning("%d synthetic images are misclassified by every expert; their soft labels start from the mean "
                    "of all experts' logits", int(fallback.sum()))
    labels = correct_sum / count.clamp_min(1)[:, None]
    labels[fallback] = total[fallback] / num_experts
    return labels
