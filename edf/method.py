"""The ``edf`` method: DATM plus Common Pattern Dropout and Discriminative Area Enhancement.

EDF (Emphasize Discriminative Features, the Comp-DD paper) is DATM on compdd's trajectory-matching
engine with two hooks filled in:

* ``reduction`` <- :class:`edf.cpd.CommonPatternDropout` (``alpha``, ``dropout_criterion``);
* ``image_grad_transform`` <- :class:`edf.dae.DiscriminativeAreaEnhancement` (``beta``, ``cam_interval``,
  ``cam_threshold`` and the CAM model/method/target keys).

Everything else (experts, image and soft-label initialisation, the growing start-epoch window, the loss
threshold, checkpoints) is DATM's. ``alpha=0`` with ``no_dae=true`` gives DATM's images bit for bit.
Hyper-parameters per (subset, IPC): DATM's preset with ``edf/configs/edf.yaml`` on top.

This package uses compdd's public API only and registers through the ``compdd.methods`` entry point, so it
is also the example to copy for a third-party method.
"""

from __future__ import annotations

import hashlib
import logging
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import Field, field_validator, model_validator

import compdd
from compdd.data import SubsetTensors
from compdd.distilled import DistilledSet
from compdd.methods import ConfigError
from compdd.methods.datm import DATM, DATMConfig
from compdd.methods.tm.hooks import Hooks
from edf.cam import CamNet, imagenet_cam_net, subset_cam_net
from edf.cpd import CRITERIA, CommonPatternDropout
from edf.dae import DiscriminativeAreaEnhancement

log = logging.getLogger(__name__)

EXPERT = "expert"
EDF_CODE_CAM_WEIGHTS = "resnet18.tv_in1k"  # torchvision resnet18 IMAGENET1K_V1, what the public code loads


class EDFConfig(DATMConfig):
    dsa_crop_ratio: float = Field(0.25, description="EDF distils with DSA crop ratio 0.25 (DATM/MTT: 0.125)")
    # Common Pattern Dropout
    alpha: float = Field(0.0, ge=0.0, lt=1.0, description="CPD: share of per-parameter matching errors dropped "
                                                          "(public loss_threshold); 0: no dropout")
    dropout_criterion: Literal[CRITERIA] = Field(  # type: ignore[valid-type]
        "loss", description="which errors CPD drops: loss (smallest, EDF), random, first, middle, last, uniform")
    no_cpd: bool = Field(False, description="ablation: plain DATM loss whatever alpha is")
    # Discriminative Area Enhancement
    beta: float = Field(1.0, ge=0.0, description="DAE enhancement factor: weight beta + M above the threshold")
    cam_interval: int = Field(50, ge=1, description="K: recompute the activation maps every K iterations")
    cam_threshold: Literal["mean"] | float = Field("mean", description="'mean' (per image, the paper) or a fixed "
                                                                       "value in [0, 1] (Table 6b)")
    no_dae: bool = Field(False, description="ablation: leave image gradients unweighted")
    cam_weights: str = Field(EXPERT, description="CAM model: 'expert' (the final snapshot of expert cam_expert, "
                                                 "trained on the real subset; offline) or an ImageNet-1k "
                                                 "classifier as `compdd score --weights` takes it: a timm name "
                                                 "with tag (resnet18.tv_in1k), a local file, or random (tests)")
    cam_arch: str | None = Field(None, description="timm architecture of a foreign cam_weights file (resnet18)")
    cam_layer: str | None = Field(None, description="sub-module whose output the CAM weighs; default: last block")
    cam_expert: int = Field(0, ge=0, description="which expert serves as CAM model when cam_weights=expert")
    cam_method: Literal["gradcam", "smoothgradcampp"] = "gradcam"
    cam_target: Literal["class", "label-argmax"] = Field(
        "class", description="CAM for the image's own class (paper) or the argmax of its learned soft label")
    cam_compat: Literal["none", "edf-code"] = Field(
        "none", description="edf-code: the public code's CAM -- Smooth Grad-CAM++ on resnet18.tv_in1k for the "
                            "soft label's argmax used as an ImageNet index without mapping (its bug)")
    cam_batch: int = Field(64, ge=1, description="images per CAM forward")

    @field_validator("cam_threshold")
    @classmethod
    def _threshold_range(cls, v: Any) -> Any:
        if v != "mean" and not 0.0 <= float(v) <= 1.0:
            raise ValueError("a fixed cam_threshold must be in [0, 1] (maps are min-max normalised)")
        return v

    @model_validator(mode="before")
    @classmethod
    def _compat(cls, data: Any) -> Any:
        """``cam_compat=edf-code`` fixes the CAM keys, so the saved config says exactly what ran."""
        if not isinstance(data, dict) or data.get("cam_compat") != "edf-code":
            return data
        want = {"cam_method": "smoothgradcampp", "cam_target": "label-argmax"}
        clash = [f"{k}={data[k]}" for k, v in want.items() if k in data and data[k] != v]
        if clash:
            raise ValueError(f"cam_compat=edf-code uses {want}; drop {', '.join(clash)}")
        out = {**data, **want}
        if out.get("cam_weights", EXPERT) == EXPERT:
            out["cam_weights"] = EDF_CODE_CAM_WEIGHTS
        return out


def edf_preset(subset: str, ipc: int) -> dict[str, Any]:
    """EDF's own keys for (subset, ipc) from ``edf/configs/edf.yaml`` (see the file for sources and rules)."""
    doc = yaml.safe_load(resources.files("edf").joinpath("configs", "edf.yaml").read_text("utf-8"))
    table = doc["ipc_defaults"]
    ipcs = sorted(int(k) for k in table)
    k = max([i for i in ipcs if i <= ipc], default=ipcs[0])
    out: dict[str, Any] = dict(doc.get("defaults", {}))
    out.update(table[k])
    out.update(doc.get("subsets", {}).get(subset, {}).get(k, {}))
    return out


class EDF(DATM):
    name = "edf"
    description = "EDF: DATM + Common Pattern Dropout + Discriminative Area Enhancement (Comp-DD paper)"
    Config = EDFConfig

    def __init__(self, **config: Any):
        super().__init__(**config)
        self._seed = 0
        self._hooks: Hooks | None = None  # the last run's hooks, for its metadata

    @property
    def edf(self) -> EDFConfig:
        assert isinstance(self.config, EDFConfig)
        return self.config

    @classmethod
    def preset(cls, subset: str, ipc: int, res: int) -> dict[str, Any]:
        return {**DATM.preset(subset, ipc, res), **edf_preset(subset, ipc)}

    # ----------------------------------------------------------------------------------- the hooks

    def hooks(self, train: SubsetTensors, ipc: int) -> Hooks:
        h = super().hooks(train, ipc)
        c = self.edf
        if not c.no_cpd:
            h.reduction = CommonPatternDropout(c.alpha, c.dropout_criterion, seed=self._seed)
        if not c.no_dae:
            # the public code runs Smooth Grad-CAM++ class by class (32 images at a time above IPC 50)
            batch = (ipc if ipc <= 50 else 32) if c.cam_compat == "edf-code" else c.cam_batch
            h.image_grad_transform = DiscriminativeAreaEnhancement(
                self.cam_net(train), c.beta, c.cam_interval, c.cam_threshold, method=c.cam_method,
                target=c.cam_target, compat_edf_code=c.cam_compat == "edf-code", batch_size=batch)
        self._hooks = h
        return h

    def cam_net(self, train: SubsetTensors) -> CamNet:
        """The CAM model the config asks for, with its local-label -> output-index map."""
        c = self.edf
        if c.cam_weights != EXPERT:
            return imagenet_cam_net(c.cam_weights, train.wnids, arch=c.cam_arch, layer=c.cam_layer)
        experts = self.find_experts(train)
        if c.cam_expert >= len(experts):
            raise ConfigError(f"cam_expert={c.cam_expert} but {experts.folder} holds {len(experts)} experts")
        name = c.model_for(train.resolution)
        with torch.random.fork_rng(devices=[]):  # the random init is overwritten; keep the global RNG as it was
            model = compdd.create_model(name, num_classes=train.num_classes, res=train.resolution)
        theta = experts.params(c.cam_expert, -1)
        torch.nn.utils.vector_to_parameters(theta, model.parameters())
        net = subset_cam_net(model, train.num_classes, c.cam_layer,
                             name=f"expert {c.cam_expert} ({name}, epoch {experts.final_epoch})")
        net.sha256 = hashlib.sha256(theta.numpy().tobytes()).hexdigest()
        return net

    def settings(self, cam: CamNet | None = None) -> dict[str, Any]:
        """What EDF ran with, for the distilled set's metadata."""
        c = self.edf
        out: dict[str, Any] = {
            "cpd": None if c.no_cpd else {"alpha": c.alpha, "criterion": c.dropout_criterion},
            "dae": None if c.no_dae else {"beta": c.beta, "interval": c.cam_interval, "threshold": c.cam_threshold,
                                          "cam_method": c.cam_method, "cam_target": c.cam_target,
                                          "cam_compat": c.cam_compat, "cam_weights": c.cam_weights},
        }
        if cam is not None and out["dae"] is not None:
            out["dae"].update(cam_model=cam.name, cam_kind=cam.kind, cam_layer=cam.layer, cam_sha256=cam.sha256)
        return out

    # ------------------------------------------------------------------------------------ distil

    def distill(self, train: SubsetTensors, ipc: int, *, seed: int = 0, device: str | torch.device = "cpu",
                progress: bool = True) -> DistilledSet:
        self._seed = seed  # CPD's random criterion draws from a generator seeded with the run seed
        self._hooks = None
        ds = super().distill(train, ipc, seed=seed, device=device, progress=progress)
        dae = self._hooks.image_grad_transform if self._hooks is not None else None
        ds.meta["edf"] = self.settings(dae.cam_net if dae is not None else None)
        if dae is not None:
            ds.meta["edf"]["dae"]["cam_refreshes"] = dae.refreshes
        return ds

    # ---------------------------------------------------------------------------------- analysis

    def write_analysis(self, distilled: DistilledSet, train: SubsetTensors, folder: str | Path) -> list[Path]:
        """Discriminative-area percentages before/after distillation and CAM overlays (paper Fig. 5b).

        See :func:`edf.analysis.write_analysis`; the CAM model and settings are this config's.
        """
        from edf.analysis import write_analysis

        c = self.edf
        return write_analysis(distilled, train, self.cam_net(train), folder, method=c.cam_method,
                              target=c.cam_target, compat_edf_code=c.cam_compat == "edf-code",
                              batch_size=c.cam_batch)
