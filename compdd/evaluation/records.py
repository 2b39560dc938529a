"""Result records: one validated JSON per (method, subset, ipc, protocol).

A record is self-describing (lm-evaluation-harness style): what was run, with which config and
overrides, on what code and hardware, with per-seed numbers and the references (random real images
and the full training split) under the same protocol. Numbers quoted from a paper carry
``source: reported`` and the table they came from. The schema is versioned; readers reject records
whose ``schema_version`` they do not know.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from compdd.paths import atomic_write_text

SCHEMA_VERSION = 1


class RecordError(ValueError):
    """A result record fails its schema; the message names the file and the field."""


class SeedResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int
    top1: float = Field(ge=0, le=100)  # percent
    top5: float | None = Field(default=None, ge=0, le=100)
    train_time_s: float | None = None


class Reference(BaseModel):
    """A reference accuracy (percent) under the same protocol."""

    model_config = ConfigDict(extra="forbid")
    mean: float
    std: float | None = None
    n: int | None = None
    record: str | None = None  # where it came from (a record path or a paper table)


class Artifact(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sha256: str | None = None
    path: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    n_images: int
    label_type: Literal["hard", "soft", "teacher"] = "hard"
    learned_lr: float | None = None


class ResultRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    source: Literal["measured", "reported"]
    reported_in: str | None = None  # e.g. "EDF paper, Table 1" (required for reported)
    verified: bool = False
    verification: dict[str, Any] | None = None  # evidence from ``compdd verify``: seeds re-run, top-1, tolerance

    method: str
    method_config: dict[str, Any] = Field(default_factory=dict)
    subset: str
    subset_sha256: str | None = None
    definition: str | None = None  # e.g. "comp-dd-v1"
    ipc: int = Field(ge=1)
    resolution: int
    protocol: str  # protocol id, e.g. "dd-v1"
    protocol_config: dict[str, Any] = Field(default_factory=dict)
    overrides: dict[str, Any] = Field(default_factory=dict)

    label_mode: Literal["hard", "soft", "kd"] | None = None  # the loss the protocol used for this set
    teacher: dict[str, Any] | None = None  # KD / relabelling protocols: the teacher's id, recipe and hashes
    eval_lr: float | None = None  # the lr the evaluation networks were trained with
    distill_seed: int | None = None  # the seed the method distilled with

    per_seed: list[SeedResult] = Field(default_factory=list)
    top1_mean: float = Field(ge=0, le=100)
    top1_std: float | None = Field(default=None, ge=0)
    top5_mean: float | None = Field(default=None, ge=0, le=100)

    random_reference: Reference | None = None
    full_reference: Reference | None = None
    recovery_ratio: float | None = None  # top1_mean / full_reference.mean; filled in when both are known

    artifact: Artifact | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    git_commit: str | None = None
    hardware: dict[str, Any] = Field(default_factory=dict)
    wall_time_s: dict[str, float] = Field(default_factory=dict)  # e.g. distill, evaluate
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    notes: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ResultRecord:
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"schema_version {self.schema_version} is not supported (this compdd reads {SCHEMA_VERSION})")
        if self.source == "reported" and not self.reported_in:
            raise ValueError("a reported record must say where it was reported (reported_in)")
        if self.per_seed:
            accs = [s.top1 for s in self.per_seed]
            mean = statistics.fmean(accs)
            if not math.isclose(mean, self.top1_mean, abs_tol=1e-6):
                raise ValueError(f"top1_mean {self.top1_mean} is not the mean of per_seed ({mean})")
            seeds = [s.seed for s in self.per_seed]
            if len(set(seeds)) != len(seeds):
                raise ValueError(f"per_seed repeats a seed: {seeds}")
        ratio = None
        if self.full_reference is not None and self.full_reference.mean > 0:
            ratio = self.top1_mean / self.full_reference.mean
        if self.recovery_ratio is None:
            self.recovery_ratio = ratio
        elif ratio is None or not math.isclose(ratio, self.recovery_ratio, rel_tol=1e-6):
            raise ValueError(f"recovery_ratio {self.recovery_ratio} is not top1_mean / full_reference.mean ({ratio})")
        return self

    @property
    def nonstandard(self) -> bool:
        return bool(self.overrides)

    @property
    def gain_over_random(self) -> float | None:
        return None if self.random_reference is None else self.top1_mean - self.random_reference.mean

    @classmethod
    def from_seeds(cls, per_seed: list[SeedResult], **fields: Any) -> ResultRecord:
        accs = [s.top1 for s in per_seed]
        std = statistics.pstdev(accs) if len(accs) > 1 else 0.0
        top5 = [s.top5 for s in per_seed]
        top5_mean = statistics.fmean(top5) if top5 and None not in top5 else None
        return cls(per_seed=per_seed, top1_mean=statistics.fmean(accs), top1_std=std, top5_mean=top5_mean, **fields)

    def key(self) -> tuple[str, str, int, str]:
        return (self.method, self.subset, self.ipc, self.protocol)

    def save(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        atomic_write_text(path, self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ResultRecord:
        path = Path(path)
        try:
            doc = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            raise RecordError(f"{path}: no such result file") from None
        except json.JSONDecodeError as e:
            raise RecordError(f"{path}: not valid JSON ({e})") from None
        try:
            return cls.model_validate(doc)
        except ValidationError as e:
            err = e.errors()[0]
            raise RecordError(f"{path}: {'.'.join(map(str, err['loc'])) or 'record'}: {err['msg']}") from None
