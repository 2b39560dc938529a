"""Evaluation protocols: versioned YAML files that fix how a distilled set is scored.

A protocol pins the model (by resolution), epochs, optimiser and schedule, batch size, augmentation,
label mode, seeds and model selection (always the final epoch: no test-set selection). Changing any
number means a new protocol version; a run that overrides epochs or seeds is marked non-standard.
Protocol files ship in ``compdd/resources/protocols/<id>.yaml``; ``id`` is ``<name>-v<version>``.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


class ScheduleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["step", "cosine", "constant"] = "step"
    milestones: tuple[float, ...] = (0.5,)  # fractions of the epochs
    gamma: float = 0.1


class AugmentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["dsa", "none", "kd-crop-cutmix"] = "dsa"
    strategy: str = "color_crop_cutout_flip_scale_rotate"
    crop_ratio: float = 0.125


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
    label_mode: Literal["auto", "hard", "soft", "kd"] = "auto"
    kd: dict[str, Any] = Field(default_factory=dict)  # teacher, temperature, ... for label_mode kd
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    selection: Literal["final_epoch"] = "final_epoch"
    test_split: str = "validation"

    @property
    def id(self) -> str:
        return f"{self.name}-v{self.version}"

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
        applied = {k: v for k, v in overrides.items() if v is not None and v != getattr(self, k)}
        if "seeds" in applied:
            applied["seeds"] = tuple(applied["seeds"])
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
