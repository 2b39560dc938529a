"""``random``: real training images drawn at random, ``ipc`` per class (the reference every method must beat).

The draw is seeded (a CPU generator from ``seed``), class-major (rows ``c*ipc .. (c+1)*ipc-1`` are class
``c``), in the normalised space, with hard labels and no learned lr. ``meta["source_indices"]`` lists the
training rows drawn.
"""

from __future__ import annotations

import torch

from compdd.data import SubsetTensors
from compdd.distilled import DistilledSet
from compdd.methods import Method, MethodConfig, register_method


@register_method
class RandomReal(Method):
    name = "random"
    description = "random real images per class (seeded), hard labels: the random-real reference"
    Config = MethodConfig

    def distill(self, train: SubsetTensors, ipc: int, *, seed: int = 0, device="cpu",
                progress: bool = True) -> DistilledSet:
        if ipc < 1:
            raise ValueError(f"ipc must be at least 1, got {ipc}")
        g = torch.Generator().manual_seed(seed)
        picks = []
        for c, wnid in enumerate(train.wnids):
            rows = train.indices_of_class(c)
            if len(rows) < ipc:
                raise ValueError(f"class {c} ({wnid}) of {train.subset}/{train.split} has {len(rows)} images, "
                                 f"fewer than ipc={ipc}")
            picks.append(rows[torch.randperm(len(rows), generator=g)[:ipc]])
        idx = torch.cat(picks)
        part = SubsetTensors(train.images[idx], train.labels[idx], train.wnids, train.subset, train.split)
        return DistilledSet(part.normalized(), part.labels.clone(), None,
                            {"method": self.name, "config": self.config.model_dump(), "subset": train.subset,
                             "ipc": ipc, "seed": seed, "source_indices": idx.tolist()})
