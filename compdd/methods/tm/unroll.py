"""The unrolled student and the meta-gradient of the parameter-matching loss.

One outer iteration of trajectory matching starts a student at an expert's parameters ``theta_0 = start``,
takes ``N`` SGD steps on augmented batches of the synthetic images,

    theta_{n+1} = theta_n - eta * g_n,    g_n = d/dtheta CE(student(theta_n, aug_n(S[idx_n])), Y[idx_n]),

and scores the end point against the expert's later parameters ``target``:

    L = reduction(r, d),  r = (theta_N - target)**2,  d = (start - target)**2   (element-wise)

with the default reduction ``sum(r) / sum(d)``. :func:`matching_gradients` returns ``L`` and its gradients
with respect to the images ``S``, the student learning rate ``eta`` and (soft) labels ``Y``, in one of
three modes:

``plain``
    Autograd through the whole unroll (``create_graph=True`` at every step), as the public MTT/FTD/DATM
    code does. The graph of all ``N`` steps is alive at once: about 48 MiB per image per step for
    ConvNetD5 at 128 px.
``exact``
    The same gradient (to float rounding) with the memory of one step. The forward pass keeps only the
    parameter vectors ``theta_n`` (``N x P`` floats); the backward pass walks the steps in reverse,
    recomputes step ``n`` and back-propagates the adjoint ``lam_{n+1} = dL/dtheta_{n+1}``:

        dL/deta      += -<lam_{n+1}, g_n>
        dL/dx_n      += -eta * d<g_n, lam_{n+1}>/dx_n         (then through the augmentation into S)
        dL/dY        += -eta * d<g_n, lam_{n+1}>/dY
        lam_n         = lam_{n+1} - eta * d<g_n, lam_{n+1}>/dtheta_n   (a Hessian-vector product)

    Because the loss of a step is a mean over per-sample terms and the instance-norm ConvNets never mix
    samples, a step can further be split into chunks of ``chunk_size`` images whose contributions add up:
    peak memory is then that of ``chunk_size`` images for a single step.
``tesla``
    **Approximate** (TESLA, Cui et al. 2023, DATM's ``DATM_tesla.py``): as ``exact`` but with the
    Hessian-vector term dropped, i.e. ``lam_n = lam_N`` for every step. Cheaper, not the MTT gradient.

Randomness is fixed per step (:class:`InnerStep` carries the batch indices and an augmentation seed), so
recomputing a step in the backward pass sees exactly the batch and augmentation of the forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from compdd.methods.tm.student import FunctionalStudent

Mode = Literal["plain", "exact", "tesla"]
MODES: tuple[str, ...] = ("plain", "exact", "tesla")

Augment = Callable[[Tensor, torch.Generator], Tensor]
"""A differentiable augmentation ``augment(x, generator) -> x'``; all its randomness comes from ``generator``."""

Reduction = Callable[[Tensor, Tensor], Tensor]
"""Per-element loss reduction ``reduction(r, d) -> L``.

``r`` = ``(theta_N - target)**2`` (differentiable) and ``d`` = ``(start - target)**2`` (constant) are flat
vectors with one entry per scalar parameter. The default is :func:`normalized_matching_loss`; EDF's Common
Pattern Dropout keeps only the largest entries of ``r`` (and the same entries of ``d``).
"""


def normalized_matching_loss(r: Tensor, d: Tensor) -> Tensor:
    """MTT's loss ``||theta_N - target||^2 / ||start - target||^2``."""
    return r.sum() / d.sum()


@dataclass(frozen=True)
class InnerStep:
    """One student step: which synthetic images it uses and the seed of their augmentation."""

    indices: Tensor  # int64 (b,), rows of the synthetic set
    seed: int


def plan_inner_steps(num_images: int, syn_steps: int, batch_syn: int | None, generator: torch.Generator) -> list[InnerStep]:
    """Batches for ``syn_steps`` student steps, as the public code draws them.

    The images are shuffled and cut into chunks of ``batch_syn`` (the last may be shorter); the chunks are
    used in turn and a new shuffle starts when they run out. ``batch_syn=None`` (or >= ``num_images``)
    means every step uses all images, in a new order.
    """
    if syn_steps < 1 or num_images < 1:
        raise ValueError(f"need syn_steps >= 1 and at least one image, got {syn_steps} and {num_images}")
    size = num_images if batch_syn is None else max(1, min(int(batch_syn), num_images))
    steps: list[InnerStep] = []
    queue: list[Tensor] = []
    while len(steps) < syn_steps:
        if not queue:
            queue = list(torch.randperm(num_images, generator=generator).split(size))
        idx = queue.pop(0)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        steps.append(InnerStep(idx, seed))
    return steps


def inner_loss(logits: Tensor, targets: Tensor, denom: int) -> Tensor:
    """Sum of per-sample cross-entropies divided by ``denom`` (the full step batch, so chunks add up).

    Integer ``targets`` are hard labels; float ``targets`` are soft-label logits, scored as DATM does:
    ``-sum_k log_softmax(logits)_k * softmax(targets)_k``.
    """
    if targets.is_floating_point():
        return -(F.log_softmax(logits, dim=1) * F.softmax(targets, dim=1)).sum() / denom
    return F.cross_entropy(logits, targets, reduction="sum") / denom


@dataclass
class MatchResult:
    loss: Tensor  # 0-d, detached
    grad_images: Tensor
    grad_lr: Tensor  # 0-d
    grad_labels: Tensor | None  # None for hard labels or when not requested


def _augmented(x: Tensor, step: InnerStep, augment: Augment | None) -> Tensor:
    if augment is None:
        return x
    return augment(x, torch.Generator().manual_seed(step.seed))


def _chunks(n: int, chunk_size: int | None) -> list[slice]:
    size = n if chunk_size is None else max(1, int(chunk_size))
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def matching_gradients(
    student: FunctionalStudent,
    start: Tensor,
    target: Tensor,
    images: Tensor,
    labels: Tensor,
    syn_lr: Tensor,
    steps: Sequence[InnerStep],
    *,
    augment: Augment | None = None,
    reduction: Reduction = normalized_matching_loss,
    mode: Mode = "exact",
    chunk_size: int | None = None,
    label_grad: bool = True,
) -> MatchResult:
    """The matching loss after unrolling ``steps`` from ``start`` and its gradients (see the module doc).

    ``images`` (n, 3, H, W) and ``labels`` (n,) int64 or (n, C) float logits are the synthetic set;
    ``syn_lr`` is the 0-d student learning rate. Nothing is modified in place and no ``.grad`` is set.
    """
    if mode not in MODES:
        raise ValueError(f"unknown memory mode {mode!r}; choose one of {', '.join(MODES)}")
    if chunk_size is not None and student.mixes_batch and mode != "plain":
        raise ValueError("chunk_size needs a network that treats samples independently; this one has batch norm")
    want_labels = label_grad and labels.is_floating_point()
    start, target = start.detach(), target.detach()
    steps = [InnerStep(s.indices.to(images.device), s.seed) for s in steps]
    if mode == "plain":
        return _plain(student, start, target, images, labels, syn_lr, steps, augment, reduction, want_labels)
    return _adjoint(student, start, target, images, labels, syn_lr, steps, augment, reduction, want_labels,
                    chunk_size, hessian=(mode == "exact"))


def _plain(student, start, target, images, labels, syn_lr, steps, augment, reduction, want_labels) -> MatchResult:
    S = images.detach().requires_grad_()
    Y = labels.detach().requires_grad_(want_labels)
    eta = syn_lr.detach().requires_grad_()
    theta = start.requires_grad_()
    for st in steps:
        x = _augmented(S[st.indices], st, augment)
        loss = inner_loss(student(theta, x), Y[st.indices], len(st.indices))
        (g,) = torch.autograd.grad(loss, theta, create_graph=True)
        theta = theta - eta * g
    L = reduction((theta - target) ** 2, (start.detach() - target) ** 2)
    grads = torch.autograd.grad(L, [S, eta, Y] if want_labels else [S, eta])
    return MatchResult(L.detach(), grads[0], grads[1], grads[2] if want_labels else None)


def _adjoint(student, start, target, images, labels, syn_lr, steps, augment, reduction, want_labels,
             chunk_size, hessian: bool) -> MatchResult:
    S, Y, eta = images.detach(), labels.detach(), syn_lr.detach()

    # Forward: keep only the parameter vectors.
    thetas = [start]
    for st in steps:
        theta = thetas[-1].detach().requires_grad_()
        with torch.no_grad():
            x = _augmented(S[st.indices], st, augment)
        y = Y[st.indices]
        g = torch.zeros_like(theta)
        for c in _chunks(len(st.indices), chunk_size):
            loss = inner_loss(student(theta, x[c]), y[c], len(st.indices))
            g += torch.autograd.grad(loss, theta)[0]
        thetas.append((theta - eta * g).detach())

    theta_end = thetas[-1].requires_grad_()
    L = reduction((theta_end - target) ** 2, (start - target) ** 2)
    (lam,) = torch.autograd.grad(L, theta_end)

    # Backward: recompute each step and push the adjoint through it.
    grad_S = torch.zeros_like(S)
    grad_Y = torch.zeros_like(Y) if want_labels else None
    grad_eta = torch.zeros((), dtype=eta.dtype, device=eta.device)
    for n in reversed(range(len(steps))):
        st = steps[n]
        theta = thetas[n].detach().requires_grad_()
        sub = S[st.indices].detach().requires_grad_()
        x = _augmented(sub, st, augment)
        y = Y[st.indices].detach().requires_grad_(want_labels)
        grad_x = torch.zeros_like(x)
        hvp = torch.zeros_like(theta) if hessian else None
        for c in _chunks(len(st.indices), chunk_size):
            xc = x[c].detach().requires_grad_()
            loss = inner_loss(student(theta, xc), y[c], len(st.indices))
            (g,) = torch.autograd.grad(loss, theta, create_graph=True)
            dot = (g * lam).sum()
            grad_eta -= dot.detach()
            inputs = [xc] + ([theta] if hessian else []) + ([y] if want_labels else [])
            outs = list(torch.autograd.grad(dot, inputs, allow_unused=True))
            grad_x[c] = outs.pop(0)
            if hessian:
                hvp += outs.pop(0)
            if want_labels:
                # a chunk only touches its own label rows; unused ones come back as None or zeros
                gy = outs.pop(0)
                if gy is not None:
                    grad_Y.index_add_(0, st.indices, -eta * gy)
        if x is sub:
            g_sub = grad_x
        else:
            (g_sub,) = torch.autograd.grad(x, sub, grad_outputs=grad_x)
        grad_S.index_add_(0, st.indices, -eta * g_sub)
        if hessian:
            lam = lam - eta * hvp
    return MatchResult(L.detach(), grad_S, grad_eta, grad_Y)
