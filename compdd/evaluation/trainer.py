"""The one train/evaluate loop behind every protocol and label mode.

A protocol (:class:`compdd.evaluation.protocols.Protocol`) says which network, optimiser, schedule,
augmentation and loss to use; :func:`train_and_evaluate` trains one fresh network per seed on a set of
images and reports the **final-epoch** top-1/top-5 on the whole test split (no test-set selection).

Label modes (the loss on each augmented batch ``x``, student logits ``z = f(x)``):

- ``hard``: ``CE(z, y)`` with int labels ``y``.
- ``soft``: soft cross-entropy with stored per-image label logits ``l`` (EDF/DATM):
  ``-(1/B) sum_b sum_k softmax(l_b / T)_k log softmax(z_b / T)_k`` with ``T = protocol.soft_temperature`` (1).
  Label-preserving augmentation (DSA) keeps ``l_b`` as stored.
- ``kd``: knowledge distillation from a frozen ``teacher`` run (eval mode, no grad) on the *same* augmented
  batch: ``KL(softmax(t / T) || softmax(z / T))`` averaged over the batch (``KLDivLoss(reduction='batchmean')``,
  as in SRe2L/RDED), ``T = protocol.kd["temperature"]``; ``protocol.kd["scale_t2"]`` multiplies it by ``T^2``
  (the SRe2L Tiny-ImageNet recipe). Stored labels are ignored.
- ``auto``: ``soft`` if the labels are ``(N, C)`` logits, else ``hard``.

Determinism: seed ``s`` fixes the network initialisation (``torch.manual_seed(s)`` in a forked RNG), the
shuffling (a CPU generator seeded from ``s``) and the augmentation (each batch's DSA seed is derived from
``(s, epoch, batch)``), so a run is repeatable on a device and does not depend on the global RNG or on
which other seeds run beside it.

Several seeds can be trained in lockstep as one stacked model (``torch.func.stack_module_state`` +
``vmap``): each seed sees exactly the batches and augmentations it would see alone, and SGD/Adam are
element-wise, so the result equals sequential training up to floating-point summation order.
``bench/eval_throughput.py`` measures when that is faster.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compdd import imagenet
from compdd.evaluation.protocols import AugmentSpec, Protocol
from compdd.evaluation.records import SeedResult

log = logging.getLogger(__name__)

LabelMode = Literal["hard", "soft", "kd"]
Augment = Callable[[Tensor, int], Tensor]  # (normalised batch, seed) -> augmented batch
TEST_BATCH = 500


class TrainerError(ValueError):
    """Inputs that do not fit the protocol (label shapes, resolution, a missing teacher)."""


# ----------------------------------------------------------------------------------------------- losses

def soft_cross_entropy(logits: Tensor, target_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``-(1/B) sum_b sum_k softmax(target/T)_bk * log_softmax(logits/T)_bk``."""
    p = F.softmax(target_logits / temperature, dim=-1)
    return -(p * F.log_softmax(logits / temperature, dim=-1)).sum(-1).mean()


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0,
            scale_t2: bool = False) -> Tensor:
    """``KL(softmax(t/T) || softmax(s/T))`` averaged over the batch; times ``T^2`` if ``scale_t2``."""
    loss = F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                    F.log_softmax(teacher_logits / temperature, dim=-1), reduction="batchmean", log_target=True)
    return loss * temperature**2 if scale_t2 else loss


def resolve_label_mode(protocol: Protocol, labels: Tensor, teacher: nn.Module | None) -> LabelMode:
    mode = protocol.label_mode
    if mode == "auto":
        mode = "soft" if labels.ndim == 2 else "hard"
    if mode == "kd" and teacher is None:
        raise TrainerError(f"protocol {protocol.id} trains with knowledge distillation; pass a teacher module")
    if mode == "soft" and labels.ndim != 2:
        raise TrainerError(f"protocol {protocol.id} uses soft labels, but the labels are hard (shape {tuple(labels.shape)})")
    return mode


# ----------------------------------------------------------------------------------------------- seeds

def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integers (e.g. run seed, stream, epoch, batch)."""
    a, b = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return (int(a) << 31) ^ int(b)


_SHUFFLE, _AUGMENT = 1, 2  # seed streams


def init_model(name: str, num_classes: int, res: int, seed: int) -> nn.Module:
    """Build a registered model with its initialisation fixed by ``seed`` (the global RNG is left as it was)."""
    from compdd.models import create_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(name, num_classes=num_classes, res=res)


# ----------------------------------------------------------------------------------------------- augmentation

def make_augment(spec: AugmentSpec, device: torch.device) -> Augment | None:
    """The protocol's per-batch augmentation as ``f(x, seed)``; ``None`` for no augmentation."""
    if spec.name == "none":
        return None
    if spec.name == "dsa":
        from compdd.augment import DSA

        return DSA(spec.strategy, crop_ratio=spec.crop_ratio)
    if spec.name == "kd-crop-cutmix":
        from functools import partial

        from compdd.teachers import kd_crop_cutmix

        return partial(kd_crop_cutmix, crop_scale=spec.crop_scale, flip=spec.flip, cutmix_beta=spec.cutmix_beta)
    raise TrainerError(f"augmentation {spec.name!r} is not available in this trainer")


# ----------------------------------------------------------------------------------------------- model stacks

class ModelStack:
    """S networks of one architecture trained in lockstep; ``stack(x)`` maps (S, B, ...) to (S, B, C).

    With one model it calls the module directly; with several it stacks their parameters and vmaps a
    functional forward over them.
    """

    def __init__(self, models: Sequence[nn.Module], device: torch.device):
        self.size = len(models)
        models = [m.to(device) for m in models]
        if self.size == 1:
            self.module: nn.Module | None = models[0]
            self.params = dict(models[0].named_parameters())
            self.buffers = dict(models[0].named_buffers())
            self._base = models[0]
        else:
            from torch.func import stack_module_state

            self.module = None
            self.params, self.buffers = stack_module_state(list(models))
            self._base = copy.deepcopy(models[0]).to("meta")
        # parameter rank in the unstacked model: biases and norm weights are rank 1
        self._rank = {n: p.ndim - (self.size > 1) for n, p in self.params.items()}

    def param_groups(self, decay_bias_and_norm: bool, weight_decay: float) -> list[dict]:
        if decay_bias_and_norm:
            return [{"params": list(self.params.values()), "weight_decay": weight_decay}]
        decay = [p for n, p in self.params.items() if self._rank[n] > 1]
        rest = [p for n, p in self.params.items() if self._rank[n] <= 1]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]

    def train(self, mode: bool = True) -> None:
        self._base.train(mode)

    def __call__(self, x: Tensor) -> Tensor:
        if self.module is not None:
            return self.module(x[0]).unsqueeze(0)
        from torch.func import functional_call, vmap

        def f(p: dict, b: dict, xi: Tensor) -> Tensor:
            return functional_call(self._base, (p, b), (xi,))

        return vmap(f, randomness="different")(self.params, self.buffers, x)

    def unstack(self, i: int) -> nn.Module:
        """Model ``i`` as an ordinary module (a copy)."""
        if self.module is not None:
            return copy.deepcopy(self.module)
        m = copy.deepcopy(self._base).to_empty(device=next(iter(self.params.values())).device)
        state = {n: t[i].detach() for n, t in {**self.params, **self.buffers}.items()}
        m.load_state_dict(state)
        return m


# ----------------------------------------------------------------------------------------------- the loop

def _normalize(x: Tensor) -> Tensor:
    """uint8 pixels to the ImageNet-normalised space; float input is taken as already normalised."""
    if x.dtype != torch.uint8:
        return x
    mean = torch.tensor(imagenet.MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(imagenet.STD, device=x.device).view(1, 3, 1, 1)
    return (x.float().div_(255) - mean) / std


def train_stack(
    images: Tensor,
    labels: Tensor,
    protocol: Protocol,
    seeds: Sequence[int],
    *,
    num_classes: int,
    lr: float | None = None,
    teacher: nn.Module | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> ModelStack:
    """Train one network per seed in lockstep under ``protocol``; see the module docstring for the losses.

    ``images``: float32 (N, 3, R, R) in the normalised space, or uint8 pixels (normalised per batch, which
    keeps the full training split small on the device). ``labels``: int64 (N,) or float32 (N, C) logits.
    ``lr``: the set's learned lr, used if the protocol takes learned lrs.
    """
    device = torch.device(device)
    if images.ndim != 4 or images.shape[1] != 3:
        raise TrainerError(f"images must be (N, 3, R, R), got {tuple(images.shape)}")
    if labels.shape[0] != images.shape[0]:
        raise TrainerError(f"{labels.shape[0]} labels for {images.shape[0]} images")
    if labels.ndim == 2 and labels.shape[1] != num_classes:
        raise TrainerError(f"soft labels have {labels.shape[1]} classes, the task has {num_classes}")
    mode = resolve_label_mode(protocol, labels, teacher)
    res = int(images.shape[-1])
    model_name = protocol.model_for(res)
    stack = ModelStack([init_model(model_name, num_classes, res, s) for s in seeds], device)

    x_all, y_all = images.to(device), labels.to(device)
    if mode == "hard" and y_all.ndim == 2:
        y_all = y_all.argmax(1)
    if teacher is not None:
        teacher = teacher.to(device).eval()
    augment = make_augment(protocol.augmentation, device)
    opt_spec = protocol.optimizer
    lr0 = protocol.eval_lr(lr)
    groups = stack.param_groups(opt_spec.decay_bias_and_norm, opt_spec.weight_decay)
    if opt_spec.name == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=lr0, momentum=opt_spec.momentum)
    elif opt_spec.name == "adam":
        opt = torch.optim.Adam(groups, lr=lr0)
    else:
        opt = torch.optim.AdamW(groups, lr=lr0)
    kd_t = float(protocol.kd.get("temperature", 1.0))
    kd_t2 = bool(protocol.kd.get("scale_t2", False))

    n, bs, epochs = x_all.shape[0], protocol.batch_size, protocol.epochs
    shufflers = [torch.Generator().manual_seed(derive_seed(s, _SHUFFLE)) for s in seeds]
    stack.train(True)
    from tqdm.auto import tqdm

    label = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {','.join(map(str, seeds))}"
    bar = tqdm(range(epochs), desc=f"train {model_name} {label}", unit="ep", disable=not progress, leave=False)
    for epoch in bar:
        for g in opt.param_groups:
            g["lr"] = lr0 * protocol.schedule.factor(epoch, epochs)
        perms = torch.stack([torch.randperm(n, generator=g) for g in shufflers]).to(device)  # (S, N)
        total = torch.zeros((), device=device)  # summed on the device: one host sync per epoch, not per batch
        for b, start in enumerate(range(0, n, bs)):
            idx = perms[:, start:start + bs]
            x = torch.stack([_normalize(x_all[i]) for i in idx])  # (S, B, 3, R, R)
            if augment is not None:
                x = torch.stack([augment(xs, derive_seed(s, _AUGMENT, epoch, b)) for xs, s in zip(x, seeds)])
            out = stack(x).flatten(0, 1)  # (S*B, C)
            if mode == "kd":
                with torch.no_grad():
                    t = teacher(x.flatten(0, 1))
                loss = kd_loss(out, t, kd_t, kd_t2)
            elif mode == "soft":
                loss = soft_cross_entropy(out, y_all[idx].flatten(0, 1), protocol.soft_temperature)
            else:
                loss = F.cross_entropy(out, y_all[idx].flatten(0, 1))
            # every seed's batch has the same size, so S x (mean over S*B) = sum over seeds of each seed's mean
            loss = loss * stack.size
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() / stack.size
        mean_loss = float(total) / math.ceil(n / bs)
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"training diverged at epoch {epoch} (loss {mean_loss}); lr {lr0} may be too high")
        if progress:
            bar.set_postfix(loss=f"{mean_loss:.4f}")
    stack.train(False)
    return stack


@torch.no_grad()
def evaluate_stack(stack: ModelStack, images: Tensor, labels: Tensor, device: str | torch.device = "cpu",
                   batch_size: int = TEST_BATCH) -> list[tuple[float, float | None]]:
    """(top-1, top-5) in percent for every model of the stack on the whole test set (top-5 needs > 5 classes)."""
    device = torch.device(device)
    stack.train(False)
    correct1 = torch.zeros(stack.size, dtype=torch.long)
    correct5 = torch.zeros(stack.size, dtype=torch.long)
    num_classes = None
    for start in range(0, images.shape[0], batch_size):
        x = _normalize(images[start:start + batch_size].to(device))
        y = labels[start:start + batch_size].to(device)
        out = stack(x.unsqueeze(0).expand(stack.size, *x.shape))  # (S, B, C)
        num_classes = out.shape[-1]
        top = out.topk(min(5, num_classes), dim=-1).indices  # (S, B, k)
        hit = top == y.view(1, -1, 1)
        correct1 += hit[..., 0].sum(1).cpu()
        correct5 += hit.any(-1).sum(1).cpu()
    n = images.shape[0]
    return [(100.0 * c1 / n, 100.0 * c5 / n if num_classes and num_classes > 5 else None)
            for c1, c5 in zip(correct1.tolist(), correct5.tolist())]


def train_and_evaluate(
    images: Tensor,
    labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    protocol: Protocol,
    *,
    num_classes: int,
    lr: float | None = None,
    teacher: nn.Module | None = None,
    seeds: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    batched: bool = False,
    progress: bool = True,
) -> list[SeedResult]:
    """Train and score one network per seed (default: the protocol's seeds); final epoch, whole test split.

    ``test_images`` are uint8 pixels or normalised floats at the training resolution; ``test_labels`` int64.
    ``batched``: train the seeds stacked in one vmapped model instead of one by one (same results up to
    float summation order; slower on CPU, see ``bench/eval_throughput.py``).
    """
    device = torch.device(device)
    seeds = list(protocol.seeds if seeds is None else seeds)
    if test_images.shape[-1] != images.shape[-1]:
        raise TrainerError(f"test images are {test_images.shape[-1]} px but the set is {images.shape[-1]} px")
    groups = [seeds] if batched else [[s] for s in seeds]
    results: list[SeedResult] = []
    for group in groups:
        t0 = time.perf_counter()
        stack = train_stack(images, labels, protocol, group, num_classes=num_classes, lr=lr, teacher=teacher,
                            device=device, progress=progress)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = (time.perf_counter() - t0) / len(group)
        for s, (top1, top5) in zip(group, evaluate_stack(stack, test_images, test_labels, device)):
            results.append(SeedResult(seed=s, top1=top1, top5=top5, train_time_s=round(dt, 3)))
            log.info("seed %d: top-1 %.2f%%", s, top1)
    return results
