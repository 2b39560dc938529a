"""A network used as a pure function of one flat parameter vector (the unrolled student).

Trajectory matching differentiates through many SGD steps of a student network. Keeping the student's
parameters as one flat vector ``theta`` (in ``module.parameters()`` order, the order in which the public code
and :mod:`compdd.methods.tm.experts` store expert snapshots) makes each step ``theta - lr * grad`` a single
tensor operation, and :func:`torch.func.functional_call` runs the module on any such vector without
mutating it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm


class FunctionalStudent:
    """Wrap ``module`` so that ``student(theta, x)`` runs it with parameters taken from the flat ``theta``.

    ``module`` itself is only a shell: its own parameter values are never used by :meth:`__call__`.
    Buffers (none for the instance-norm ConvNets) are taken from the module as they are.
    """

    def __init__(self, module: nn.Module):
        self.module = module
        named = list(module.named_parameters())  # shared parameters appear once, in registration order
        self.names: list[str] = [n for n, _ in named]
        self.shapes: list[torch.Size] = [p.shape for _, p in named]
        self.numels: list[int] = [p.numel() for _, p in named]
        self.num_params: int = sum(self.numels)
        # Batch norm mixes samples within a batch, so per-sample chunking of a step would change the maths.
        self.mixes_batch: bool = any(isinstance(m, _BatchNorm) for m in module.modules())

    def flatten(self, module: nn.Module | None = None) -> Tensor:
        """The parameters of ``module`` (default: the wrapped one) as one detached flat vector."""
        params = dict((module or self.module).named_parameters())
        missing = [n for n in self.names if n not in params]
        if missing:
            raise ValueError(f"module lacks parameters {missing[:3]}; it is not the student's architecture")
        return torch.cat([params[n].detach().reshape(-1) for n in self.names])

    def unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        """Views of ``theta`` shaped like the module's parameters, keyed by parameter name."""
        if theta.ndim != 1 or theta.numel() != self.num_params:
            raise ValueError(f"flat parameter vector must have shape ({self.num_params},), got {tuple(theta.shape)}")
        return {n: t.view(s) for n, t, s in zip(self.names, theta.split(self.numels), self.shapes)}

    def __call__(self, theta: Tensor, x: Tensor) -> Tensor:
        state = self.unflatten(theta)
        state.update(self.module.named_buffers())
        return functional_call(self.module, state, (x,))

    def signature(self) -> list[tuple[str, list[int]]]:
        """Parameter names and shapes, in flat order: what an expert file must match."""
        return [(n, list(s)) for n, s in zip(self.names, self.shapes)]
