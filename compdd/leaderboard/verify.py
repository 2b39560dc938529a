"""Verifying a submitted result: re-run some of its seeds on its distilled set under the same protocol.

:func:`compare` is the decision, a pure function of the record and the re-run numbers; :func:`verify_record`
loads the artifact, checks it is the one the record names (sha256), trains the protocol's networks and,
when the re-run lands within tolerance, writes the record back with ``verified: true`` and the evidence.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compdd.evaluation.protocols import PROTOCOLS
from compdd.evaluation.records import ResultRecord, SeedResult

ABS_TOL = 1.0  # points of top-1: the tolerance floor, so a tiny reported std does not make verify impossible
SIGMAS = 2.0  # or this many of the record's seed standard deviations, whichever is larger
DEFAULT_SEEDS = 2


@dataclass(frozen=True)
class Verification:
    passed: bool
    submitted_mean: float
    rerun_mean: float
    tolerance: float
    rerun: list[SeedResult]
    per_seed: list[tuple[int, float | None, float]] = field(default_factory=list)  # (seed, submitted, re-run)

    @property
    def difference(self) -> float:
        return self.rerun_mean - self.submitted_mean

    def summary(self) -> str:
        verdict = "within" if self.passed else "OUTSIDE"
        return (f"re-run mean {self.rerun_mean:.2f}% vs submitted {self.submitted_mean:.2f}%: difference "
                f"{self.difference:+.2f} points, {verdict} the tolerance of ±{self.tolerance:.2f}")

    def evidence(self) -> dict[str, Any]:
        return {"seeds": [s.seed for s in self.rerun], "top1": [s.top1 for s in self.rerun],
                "rerun_mean": self.rerun_mean, "difference": self.difference, "tolerance": self.tolerance}


def tolerance(record: ResultRecord, abs_tol: float = ABS_TOL, sigmas: float = SIGMAS) -> float:
    return max(abs_tol, sigmas * (record.top1_std or 0.0))


def compare(record: ResultRecord, rerun: list[SeedResult], *, abs_tol: float = ABS_TOL,
            sigmas: float = SIGMAS) -> Verification:
    """Does the re-run mean lie within ``max(abs_tol, sigmas x record std)`` of the record's mean?"""
    if not rerun:
        raise ValueError("no re-run seeds to compare")
    submitted = {s.seed: s.top1 for s in record.per_seed}
    mean = statistics.fmean(s.top1 for s in rerun)
    tol = tolerance(record, abs_tol, sigmas)
    return Verification(
        passed=abs(mean - record.top1_mean) <= tol, submitted_mean=record.top1_mean, rerun_mean=mean, tolerance=tol,
        rerun=list(rerun), per_seed=[(s.seed, submitted.get(s.seed), s.top1) for s in rerun])


def mark_verified(record: ResultRecord, v: Verification, **context: Any) -> ResultRecord:
    """A copy of ``record`` marked verified, with the evidence (and ``context`` such as device) attached."""
    if not v.passed:
        raise ValueError("cannot mark a record verified when the re-run is outside tolerance")
    return record.model_copy(update={"verified": True, "verification": {**v.evidence(), **context}})


def rerun_seeds(record: ResultRecord, k: int) -> tuple[int, ...]:
    """The first ``k`` seeds of the record, so each re-run number has a submitted number for the same seed."""
    if k < 1:
        raise ValueError(f"--seeds must be at least 1, got {k}")
    seeds = [s.seed for s in record.per_seed]
    if not seeds:
        raise ValueError("the record has no per-seed results to re-run")
    return tuple(seeds[:k])


def _find_artifact(record: ResultRecord, record_path: Path, artifact: str | os.PathLike[str] | None) -> Path:
    if artifact is not None:
        return Path(artifact)
    if record.artifact is None or not record.artifact.path:
        raise ValueError(f"{record_path}: the record does not say where its distilled set is; pass --artifact DIR")
    p = Path(record.artifact.path)
    for cand in (p, record_path.parent / p):
        if cand.is_dir():
            return cand
    raise FileNotFoundError(f"distilled set {p} (from {record_path}) not found; pass --artifact DIR")


def verify_record(path: str | os.PathLike[str], *, imagenet_root: str | os.PathLike[str] | None,
                  artifact: str | os.PathLike[str] | None = None, seeds: int = DEFAULT_SEEDS,
                  abs_tol: float = ABS_TOL, sigmas: float = SIGMAS, device: str | None = None, write: bool = True,
                  progress: bool = True) -> Verification:
    """Re-run ``seeds`` seeds of the record at ``path`` and mark it verified in place if they agree."""
    from compdd import __version__
    from compdd.distilled import DistilledSet
    from compdd.evaluation.run import default_device, evaluate_distilled, load_split

    path = Path(path)
    record = ResultRecord.load(path)
    if record.source != "measured" or record.artifact is None or not record.artifact.sha256:
        raise ValueError(f"{path}: only a measured record with an artifact sha256 can be verified")
    if record.protocol not in PROTOCOLS:
        raise ValueError(f"{path}: protocol {record.protocol!r} is not one compdd can run "
                         f"({', '.join(PROTOCOLS.names())})")
    proto, _ = PROTOCOLS.get(record.protocol).with_overrides(**record.overrides)
    if proto.label_mode == "kd":
        raise ValueError(f"{path}: verifying a knowledge-distillation protocol needs its teacher, which verify "
                         "does not load yet")
    folder = _find_artifact(record, path, artifact)
    ds = DistilledSet.load(folder)
    if ds.sha256() != record.artifact.sha256:
        raise ValueError(f"{folder}: this distilled set has sha256 {ds.sha256()[:12]}…, but the record names "
                         f"{record.artifact.sha256[:12]}…; it is not the submitted artifact")
    chosen = rerun_seeds(record, seeds)
    test = load_split(record.subset, proto.test_split, ds.resolution, root=imagenet_root, progress=progress)
    device = device or default_device()
    rerun = evaluate_distilled(ds, test, proto, overrides={"seeds": chosen}, device=device, progress=progress)
    v = compare(record, rerun, abs_tol=abs_tol, sigmas=sigmas)
    if v.passed and write:
        mark_verified(record, v, device=str(device), compdd=__version__).save(path)
    return v
