"""The trajectory-matching engine shared by MTT, FTD, DATM (``compdd.methods.mtt/ftd/datm``) and EDF.

Modules, one concern each:

- :mod:`~compdd.methods.tm.student` — any ``nn.Module`` run as a function of one flat parameter vector;
- :mod:`~compdd.methods.tm.unroll` — the unrolled student and the meta-gradient (``plain``, exact
  memory-saving ``exact``, approximate ``tesla``);
- :mod:`~compdd.methods.tm.hooks` — the hook points (window, init, labels, loss reduction, update gate,
  image-gradient transform, EMA) and their built-in choices;
- :mod:`~compdd.methods.tm.engine` — the outer loop, ``TMConfig``, presets, checkpoints, and
  ``TrajectoryMatchingMethod``, the base class of the methods;
- :mod:`~compdd.methods.tm.experts` — training, storing and reading expert trajectories;
- :mod:`~compdd.methods.tm.gsam` — the GSAM step of FTD/DATM experts;
- :mod:`~compdd.methods.tm.memory` — measuring autograd's saved-tensor memory.

See ``docs/trajectory-matching.md``.
"""

from compdd.methods.tm.engine import DivergenceError, TMConfig, TrajectoryMatchingMethod, run
from compdd.methods.tm.experts import ExpertConfig, ExpertError, ExpertSet, train_experts
from compdd.methods.tm.hooks import Hooks, InitContext, IterationContext, StartEpochWindow
from compdd.methods.tm.student import FunctionalStudent
from compdd.methods.tm.unroll import matching_gradients, normalized_matching_loss

__all__ = [
    "DivergenceError",
    "ExpertConfig",
    "ExpertError",
    "ExpertSet",
    "FunctionalStudent",
    "Hooks",
    "InitContext",
    "IterationContext",
    "StartEpochWindow",
    "TMConfig",
    "TrajectoryMatchingMethod",
    "matching_gradients",
    "normalized_matching_loss",
    "run",
    "train_experts",
]
