"""Evaluation protocols: versioned YAML files that fix how a distilled set is scored.

A protocol pins the model (by resolution), epochs, optimiser and schedule, batch size, augmentation,
label mode, seeds and model selection (always the final epoch: no test-set selection). Changing any
number means a new protocol version; a run that overrides epochs or seeds is marked non-standard.
Protocol files ship in ``compdd/resources/protocols/<id>.yaml``; ``id`` is ``<name>-v<version>``.
"""

from __future__ import annotations

import math
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from compdd.registry import Registry


class ProtocolError(ValueError):
    """A protocol file or override is invalid."""


class OptimizerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    use_learned_lr: bool = True  # a distilled set's learned lr replaces ``lr``
    # False exempts biases and normalisation weights from weight decay (SRe2L/RDED AdamW recipes)
    decay_bias_and_norm: bool = True


class ScheduleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # step: lr x gamma from each milestone epoch on; cosine: lr0 * (1 + cos(pi e / E)) / 2;
    # half_cosine (RDED): lr0 * (1 + cos(pi e / 2E)) / 2, which ends at lr0 / 2
    name: Literal["step", "cosine", "half_cosine", "constant"] = "step"
    milestones: tuple[float, ...] = (0.5,)  # fractions of the epochs
    gamma: float = 0.1

    def factor(self, epoch: int, epochs: int) -> float:
        """The lr multiplier during 0-based ``epoch`` of ``epochs``."""
        if self.name == "step":
            return self.gamma ** sum(epoch >= round(m * epochs) for m in self.milestones)
        if self.name == "cosine":
            return 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        if self.name == "half_cosine":
            return 0.5 * (1 + math.cos(math.pi * epoch / (2 * epochs)))
        return 1.0


class AugmentSpec(BaseModel):
    """The per-batch augmentation. ``strategy``/``crop_ratio`` configure ``dsa``; ``crop_scale``/``flip``/
    ``cutmix_beta`` configure ``kd-crop-cutmix`` (per-image RandomResizedCrop + flip, then CutMix on the batch)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["dsa", "none", "kd-crop-cutmix"] = "dsa"
    strategy: str = "color_crop_cutout_flip_scale_rotate"
    crop_ratio: float = 0.125
    crop_scale: tuple[float, float] = (0.08, 1.0)
    flip: bool = True
    cutmix_beta: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _fields_of_another_augmentation(self) -> AugmentSpec:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {list(self.crop_scale)}")
        defaults = AugmentSpec.model_construct()
        owners = {"dsa": ("strategy", "crop_ratio"), "kd-crop-cutmix": ("crop_scale", "flip", "cutmix_beta")}
        for owner, keys in owners.items():
            stray = [k for k in keys if self.name != owner and getattr(self, k) != getattr(defaults, k)]
            if stray:
                raise ValueError(f"{', '.join(stray)} configure {owner}, not {self.name!r}")
        return self


class Protocol(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: int
    description: str = ""
    models: dict[int, str]  # resolution -> registered model name
    epochs: int
    batch_size: int = 256
    optimizer: OptimizerSpec = OptimizerSpec()
    schedule: ScheduleSpec = ScheduleSpec()
    augmentation: AugmentSpec = AugmentSpec()
    # auto: hard CE for int labels, soft CE for logit labels; kd: a teacher's outputs on each augmented batch
    label_mode: Literal["auto", "hard", "soft", "kd"] = "auto"
    soft_temperature: float = Field(1.0, gt=0)  # soft CE on softmax(labels / T) (EDF/DATM use 1)
    # label_mode kd: ``temperature`` (float, default 1), ``scale_t2`` (bool, default false: multiply the KL by T^2),
    # plus whatever the teacher provider records (teacher name, training recipe)
    kd: dict[str, Any] = Field(default_factory=dict)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    selection: Literal["final_epoch"] = "final_epoch"
    test_split: str = "validation"

    @property
    def id(self) -> str:
        return f"{self.name}-v{self.version}"

    def eval_lr(self, learned_lr: float | None) -> float:
        """The lr a set is trained with: its learned lr if the protocol takes it and it has one, else the fixed lr."""
        if self.optimizer.use_learned_lr and learned_lr is not None:
            return float(learned_lr)
        return self.optimizer.lr

    def model_for(self, res: int) -> str:
        if res not in self.models:
            raise ProtocolError(f"protocol {self.id} has no model for {res} px; it covers {sorted(self.models)} px")
        return self.models[res]

    def with_overrides(self, **overrides: Any) -> tuple[Protocol, dict[str, Any]]:
        """Return (protocol with ``overrides`` applied, the overrides actually set).

        A non-empty second value marks a result as non-standard.
        """
        allowed = {"epochs", "seeds", "batch_size"}
        bad = set(overrides) - allowed
        if bad:
            raise ProtocolError(f"cannot override {sorted(bad)}; allowed overrides: {sorted(allowed)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        if "seeds" in given:
            seeds = tuple(int(s) for s in given["seeds"])
            if not seeds or len(set(seeds)) != len(seeds):
                raise ProtocolError(f"seeds override {list(seeds)} must be non-empty and without repeats")
            given["seeds"] = seeds
        for k in ("epochs", "batch_size"):
            if k in given and int(given[k]) < 1:
                raise ProtocolError(f"{k} override must be at least 1, got {given[k]}")
        applied = {k: v for k, v in given.items() if v != getattr(self, k)}
        return self.model_copy(update=applied), applied


def _load(reg: Registry[Protocol]) -> None:
    for f in sorted(resources.files("compdd.resources").joinpath("protocols").iterdir(), key=lambda f: f.name):
        if f.name.endswith(".yaml"):
            p = parse_protocol(yaml.safe_load(f.read_text("utf-8")), f.name)
            if f.name != f"{p.id}.yaml":
                raise ProtocolError(f"protocol file {f.name} must be named {p.id}.yaml")
            reg.add(p.id, p)


def parse_protocol(doc: dict[str, Any], src: str = "<protocol>") -> Protocol:
    try:
        return Protocol(**doc)
    except ValidationError as e:
        err = e.errors()[0]
        raise ProtocolError(f"{src}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


PROTOCOLS: Registry[Protocol] = Registry("protocol", _load)


def list_protocols(pattern: str = "*") -> list[str]:
    return PROTOCOLS.names(pattern)


def get_protocol(name: str) -> Protocol:
    return PROTOCOLS.get(name)
