"""``full``: the whole real training split, the upper reference (recovery ratio = accuracy / full accuracy).

``ipc`` is ignored (every image is kept); images are in the normalised space with hard labels. At 128 px a
13k-image subset is about 2.5 GB of float32, so the evaluation pipeline scores the full-data reference from
the uint8 tensors directly and uses this method only when asked for by name.
"""

from __future__ import annotations

from compdd.data import SubsetTensors
from compdd.distilled import DistilledSet
from compdd.methods import Method, MethodConfig, register_method


@register_method
class FullData(Method):
    name = "full"
    description = "the whole real training split (ipc ignored), hard labels: the full-data reference"
    Config = MethodConfig

    def distill(self, train: SubsetTensors, ipc: int, *, seed: int = 0, device="cpu",
                progress: bool = True) -> DistilledSet:
        return DistilledSet(train.normalized(), train.labels.clone(), None,
                            {"method": self.name, "config": self.config.model_dump(), "subset": train.subset,
                             "ipc": ipc, "seed": seed})
