"""The evaluation pipeline: distil with a method, score the set under a protocol, add the references, write a record.

- :func:`evaluate_distilled` scores a :class:`~compdd.distilled.DistilledSet` on a test split (per-seed results).
- :func:`reference` scores the ``random`` (at the same IPC) and ``full`` references under the same protocol and
  caches them under ``COMPDD_HOME/references``, keyed by everything that determines them: the protocol as run
  (with overrides), the subset hash, the resolution, a fingerprint of the train and test tensors, the IPC (random),
  the teacher (kd), the device type and the compdd version.
- :func:`run_evaluation` is ``compdd evaluate``: distil, save the set, score it and the references, write the
  :class:`~compdd.evaluation.records.ResultRecord`. :func:`run_eval_distilled` is ``compdd eval-distilled``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from compdd.benchmark import Subset, get_subset
from compdd.data import SubsetTensors
from compdd.distilled import DistilledSet
from compdd.evaluation import trainer
from compdd.evaluation.protocols import Protocol, get_protocol, parse_protocol
from compdd.evaluation.records import Artifact, Reference, ResultRecord, SeedResult
from compdd.paths import compdd_home

log = logging.getLogger(__name__)

DEFAULT_PROTOCOL = "dd-v1"
RANDOM_REFERENCE_SEED = 0  # the random reference draws its images with this seed (recorded as distill_seed)
RESULT_FILE = "result.json"
DISTILLED_DIR = "distilled"
ANALYSIS_DIR = "analysis"
REFERENCE_KINDS = ("random", "full")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_protocol(protocol: str | os.PathLike[str] | Protocol,
                     overrides: Mapping[str, Any] | None = None) -> tuple[Protocol, dict[str, Any]]:
    """A protocol by id (``dd-v1``), by YAML file, or as an object, with ``overrides`` applied.

    Returns (effective protocol, the overrides that changed something); the latter marks a run non-standard.
    """
    if isinstance(protocol, Protocol):
        proto = protocol
    elif str(protocol).endswith((".yaml", ".yml")):
        import yaml

        path = Path(protocol)
        if not path.is_file():
            raise FileNotFoundError(f"protocol file {path} does not exist")
        proto = parse_protocol(yaml.safe_load(path.read_text("utf-8")), str(path))
    else:
        proto = get_protocol(str(protocol))
    return proto.with_overrides(**dict(overrides or {}))


@dataclass(frozen=True)
class DataSource:
    """Where the real images come from (see :func:`compdd.data.load_tensors`): an ImageNet folder, a local
    ``compdd export`` folder, or a Hub dataset repo."""

    source: str = "imagenet"
    imagenet_root: str | os.PathLike[str] | None = None
    path: str | os.PathLike[str] | None = None  # source="local"
    repo_id: str | None = None  # source="hub"
    revision: str | None = None

    def load(self, subset: str | Subset, split: str, res: int, *, progress: bool = True) -> SubsetTensors:
        return load_split(subset, split, res, source=self.source, root=self.imagenet_root, path=self.path,
                          repo_id=self.repo_id, revision=self.revision, progress=progress)


def load_split(subset: str | Subset, split: str, res: int, *, source: str = "imagenet",
               root: str | os.PathLike[str] | None = None, path: str | os.PathLike[str] | None = None,
               repo_id: str | None = None, revision: str | None = None, progress: bool = True) -> SubsetTensors:
    """One split (``train`` or ``validation``/``val``) of a subset as uint8 tensors at ``res`` px.

    ``root`` is the ImageNet folder for ``source="imagenet"``; ``path`` the export folder for ``local``;
    ``repo_id``/``revision`` the dataset repo for ``hub``.
    """
    from compdd.data import load_tensors

    if source == "imagenet" and root is None:
        raise ValueError("no ImageNet root given; pass --imagenet-root DIR (a folder with train/ and val/), "
                         "or use --source local/hub")
    return load_tensors(subset, split, res, source=source, imagenet_root=root, path=path, repo_id=repo_id,
                        revision=revision, progress=progress)


# ----------------------------------------------------------------------------------------------- teachers

TeacherLike = Any  # an nn.Module, a compdd.teachers.Teacher, or None


def resolve_teacher(proto: Protocol, teacher: TeacherLike, train: SubsetTensors | None, test: SubsetTensors | None,
                    device: torch.device, progress: bool = True) -> TeacherLike:
    """The teacher ``proto`` scores with: ``teacher`` if given; else, for a KD or relabelling protocol, its cached
    teacher trained on ``train`` by the protocol's recipe (:func:`compdd.teachers.protocol_teacher`); else None."""
    from compdd.teachers import protocol_needs_teacher, protocol_teacher

    if teacher is not None or not protocol_needs_teacher(proto):
        return teacher
    if train is None:
        raise ValueError(f"protocol {proto.id} scores with a teacher trained on the real training split; "
                         "load the training split (or pass teacher=)")
    return protocol_teacher(proto, train, val=test, device=device, progress=progress)


def teacher_parts(teacher: TeacherLike) -> tuple[nn.Module | None, dict[str, Any] | None]:
    """(the module, what a record keeps about it) for an ``nn.Module`` or a :class:`compdd.teachers.Teacher`."""
    from compdd.teachers import Teacher

    if teacher is None:
        return None, None
    if isinstance(teacher, Teacher):
        return teacher.model, teacher.summary()
    return teacher, {"id": None, "weights_fingerprint": module_fingerprint(teacher)}


def _training_labels(proto: Protocol, teacher: nn.Module | None, images: torch.Tensor,
                     labels: torch.Tensor) -> torch.Tensor:
    """The labels the protocol trains with: the set's own, or the teacher's logits (static relabelling)."""
    from compdd.teachers import protocol_labels

    return protocol_labels(proto, teacher, images, labels)


# ----------------------------------------------------------------------------------------------- scoring

def _check_fits(ds: DistilledSet, test: SubsetTensors) -> None:
    if ds.resolution != test.resolution:
        raise ValueError(f"the distilled set is {ds.resolution} px but the test split was loaded at "
                         f"{test.resolution} px; evaluate at --res {ds.resolution}")
    if ds.labels.ndim == 2 and ds.labels.shape[1] != test.num_classes:
        raise ValueError(f"the set's soft labels have {ds.labels.shape[1]} classes; {test.subset} has {test.num_classes}")
    if ds.labels.ndim == 1 and len(ds) and not 0 <= int(ds.labels.min()) <= int(ds.labels.max()) < test.num_classes:
        raise ValueError(f"the set's labels must lie in 0..{test.num_classes - 1} (the class map of {test.subset})")
    subset = ds.meta.get("subset")
    if subset and subset != test.subset:
        raise ValueError(f"the set was distilled from {subset!r} but is being scored on {test.subset!r}")


def evaluate_distilled(
    distilled: DistilledSet,
    test: SubsetTensors,
    protocol: str | os.PathLike[str] | Protocol = DEFAULT_PROTOCOL,
    *,
    overrides: Mapping[str, Any] | None = None,
    teacher: TeacherLike = None,
    device: str | torch.device | None = None,
    batched: bool = False,
    progress: bool = True,
) -> list[SeedResult]:
    """Train one network per protocol seed on ``distilled`` and score it on the whole ``test`` split (final epoch).

    KD and relabelling protocols need ``teacher`` (a module or a :class:`compdd.teachers.Teacher`).
    """
    proto, _ = resolve_protocol(protocol, overrides)
    _check_fits(distilled, test)
    module, _ = teacher_parts(teacher)
    labels = _training_labels(proto, module, distilled.images, distilled.labels)
    return trainer.train_and_evaluate(
        distilled.images, labels, test.images, test.labels, proto, num_classes=test.num_classes,
        lr=distilled.lr, teacher=module, device=device or default_device(), batched=batched, progress=progress)


def tensor_fingerprint(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        flat = t.detach().cpu().contiguous().reshape(-1)  # 0-d tensors (BN step counts) cannot be viewed as bytes
        h.update(flat.view(torch.uint8).numpy().data if flat.numel() else b"")
    return h.hexdigest()


def module_fingerprint(module: nn.Module) -> str:
    return tensor_fingerprint(*[t for _, t in sorted(module.state_dict().items())])


def reference(
    kind: Literal["random", "full"],
    train: SubsetTensors,
    test: SubsetTensors,
    protocol: str | os.PathLike[str] | Protocol = DEFAULT_PROTOCOL,
    *,
    ipc: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    teacher: TeacherLike = None,
    device: str | torch.device | None = None,
    batched: bool = False,
    cache: bool = True,
    progress: bool = True,
) -> tuple[ResultRecord, Path | None]:
    """The ``random`` (``ipc`` per class, drawn with seed 0) or ``full`` reference under the protocol, cached.

    Returns (its result record, the cache file or None).
    """
    if kind not in REFERENCE_KINDS:
        raise ValueError(f"reference kind must be 'random' or 'full', got {kind!r}")
    if kind == "random" and not ipc:
        raise ValueError("the random reference needs an ipc")
    proto, applied = resolve_protocol(protocol, overrides)
    device = torch.device(device or default_device())
    module, teacher_info = teacher_parts(resolve_teacher(proto, teacher, train, test, device, progress))
    sub = get_subset(train.subset)
    from compdd import __version__

    key = {
        "kind": kind, "protocol": proto.model_dump(mode="json"), "overrides": applied, "subset": sub.name,
        "subset_sha256": sub.sha256(), "res": train.resolution, "ipc": ipc if kind == "random" else None,
        "draw_seed": RANDOM_REFERENCE_SEED if kind == "random" else None,
        "data": tensor_fingerprint(train.images, train.labels, test.images, test.labels),
        "teacher": module_fingerprint(module) if module is not None else None,
        "device": device.type, "compdd": __version__,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    name = f"{sub.name}-{kind}{f'-ipc{ipc}' if kind == 'random' else ''}-{train.resolution}px-{proto.id}-{digest[:16]}"
    path = compdd_home() / "references" / f"{name}.json"
    if cache and path.is_file():
        log.info("%s reference from cache %s", kind, path)
        return ResultRecord.load(path), path

    from compdd.methods import create_method

    t0 = time.perf_counter()
    if kind == "random":
        ds = create_method("random").distill(train, ipc, seed=RANDOM_REFERENCE_SEED, progress=False)
        images, labels = ds.images, ds.labels
    else:
        images, labels = train.images, train.labels  # uint8, normalised per batch: no float copy of the split
    labels = _training_labels(proto, module, images, labels)
    log.info("training the %s reference (%d images) under %s", kind, len(images), proto.id)
    seeds = trainer.train_and_evaluate(images, labels, test.images, test.labels, proto, num_classes=test.num_classes,
                                       teacher=module, device=device, batched=batched, progress=progress)
    record = ResultRecord.from_seeds(
        seeds, source="measured", method=kind, subset=sub.name, subset_sha256=sub.sha256(), definition=sub.definition,
        ipc=ipc if kind == "random" else max(1, len(train) // train.num_classes), resolution=train.resolution,
        protocol=proto.id, protocol_config=proto.model_dump(mode="json"), overrides=_jsonable(applied),
        label_mode=trainer.resolve_label_mode(proto, labels, module), teacher=teacher_info,
        eval_lr=proto.eval_lr(None), distill_seed=RANDOM_REFERENCE_SEED if kind == "random" else None,
        artifact=Artifact(n_images=len(images), label_type="teacher" if module is not None else "hard"),
        versions=versions(), git_commit=git_commit(), hardware=hardware(device),
        wall_time_s={"evaluate": round(time.perf_counter() - t0, 3)},
        notes=f"reference cache key: {json.dumps(key, sort_keys=True)}")
    if cache:
        record.save(path)
    return record, path if cache else None


def _as_reference(record: ResultRecord, path: Path | None) -> Reference:
    return Reference(mean=record.top1_mean, std=record.top1_std, n=len(record.per_seed),
                     record=str(path) if path else None)


def _jsonable(overrides: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}


# ----------------------------------------------------------------------------------------------- records

def versions() -> dict[str, str]:
    import numpy

    from compdd.distilled import versions as base

    return {**base(), "numpy": numpy.__version__}


def git_commit() -> str | None:
    """The commit of the compdd checkout, if it is one (installed packages have none)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def hardware(device: str | torch.device) -> dict[str, Any]:
    device = torch.device(device)
    hw: dict[str, Any] = {"device": device.type, "platform": platform.platform(), "cpu_count": os.cpu_count(),
                          "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(device)
        hw["cuda"] = torch.version.cuda
    else:
        hw["cpu"] = platform.processor() or platform.machine()
    return hw


def score_set(
    distilled: DistilledSet,
    artifact_dir: Path,
    train: SubsetTensors | None,
    test: SubsetTensors,
    protocol: str | os.PathLike[str] | Protocol = DEFAULT_PROTOCOL,
    *,
    method: str,
    method_config: Mapping[str, Any] | None = None,
    ipc: int,
    overrides: Mapping[str, Any] | None = None,
    teacher: TeacherLike = None,
    device: str | torch.device | None = None,
    batched: bool = False,
    references: bool | Collection[str] = True,
    wall_time_s: Mapping[str, float] | None = None,
    progress: bool = True,
) -> ResultRecord:
    """Score a saved set (``artifact_dir`` holds it), add the references (needs ``train``), build the record.

    ``protocol`` is the standard one and ``overrides`` the changes to it, so the record can say what was changed.
    ``references``: ``True`` for both (``random`` and ``full``), ``False`` for none, or the kinds to run.
    """
    proto, applied = resolve_protocol(protocol, overrides)
    device = torch.device(device or default_device())
    sub = get_subset(test.subset)
    teacher = resolve_teacher(proto, teacher, train, test, device, progress)
    module, teacher_info = teacher_parts(teacher)
    t0 = time.perf_counter()
    seeds = evaluate_distilled(distilled, test, proto, teacher=teacher, device=device, batched=batched,
                               progress=progress)
    walls = {**(wall_time_s or {}), "evaluate": round(time.perf_counter() - t0, 3)}
    refs: dict[str, Reference] = {}
    kinds = reference_kinds(references)
    if kinds:
        if train is None:
            raise ValueError("references need the training split")
        t0 = time.perf_counter()
        for kind in kinds:
            rec, path = reference(kind, train, test, protocol, ipc=ipc, overrides=overrides, teacher=teacher,
                                  device=device, batched=batched, progress=progress)
            refs[kind] = _as_reference(rec, path)
        walls["references"] = round(time.perf_counter() - t0, 3)
    relabelled = proto.kd.get("relabel") == "static"  # trained on teacher logits, whatever its own labels
    labels = torch.empty(0, test.num_classes) if relabelled else distilled.labels
    return ResultRecord.from_seeds(
        seeds, source="measured", method=method, method_config=dict(method_config or {}), subset=sub.name,
        subset_sha256=sub.sha256(), definition=sub.definition, ipc=ipc, resolution=distilled.resolution,
        protocol=proto.id, protocol_config=proto.model_dump(mode="json"), overrides=_jsonable(applied),
        label_mode=trainer.resolve_label_mode(proto, labels, module), teacher=teacher_info,
        eval_lr=proto.eval_lr(distilled.lr), distill_seed=distilled.meta.get("seed"),
        random_reference=refs.get("random"), full_reference=refs.get("full"),
        artifact=Artifact(sha256=distilled.sha256(), path=str(artifact_dir), n_images=len(distilled),
                          label_type=distilled.label_type, learned_lr=distilled.lr),
        versions=versions(), git_commit=git_commit(), hardware=hardware(device), wall_time_s=walls)


def reference_kinds(references: bool | Collection[str]) -> tuple[str, ...]:
    """The reference kinds to run, in order, from ``True`` (both), ``False`` (none) or a collection of kinds."""
    if isinstance(references, bool):
        return REFERENCE_KINDS if references else ()
    bad = sorted(set(references) - set(REFERENCE_KINDS))
    if bad:
        raise ValueError(f"unknown reference kind(s) {bad}; choose from {', '.join(REFERENCE_KINDS)}")
    return tuple(k for k in REFERENCE_KINDS if k in references)


def _needs_train(proto: Protocol, references: bool | Collection[str], teacher: TeacherLike) -> bool:
    from compdd.teachers import protocol_needs_teacher

    return bool(reference_kinds(references)) or (teacher is None and protocol_needs_teacher(proto))


def run_evaluation(
    method: str,
    subset: str,
    ipc: int,
    *,
    protocol: str | os.PathLike[str] | Protocol = DEFAULT_PROTOCOL,
    res: int = 128,
    source: str | DataSource = "imagenet",
    imagenet_root: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    method_config: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    teacher: TeacherLike = None,
    device: str | torch.device | None = None,
    batched: bool = False,
    references: bool | Collection[str] = True,
    analysis: bool = False,
    progress: bool = True,
) -> ResultRecord:
    """Distil ``ipc`` images per class of ``subset`` with ``method``, then score them (``compdd evaluate``).

    Writes ``out/distilled/`` (the set) and ``out/result.json`` (the record) when ``out`` is given; the record is
    returned either way. ``analysis=True`` (needs ``out``) also writes the method's analysis files into
    ``out/analysis/`` (see :meth:`Method.write_analysis`). The method gets its shipped preset for
    (subset, ipc, res), overridden by ``method_config``.
    ``source`` is ``"imagenet"`` (with ``imagenet_root``) or a :class:`DataSource` for local/Hub data.
    """
    from compdd.methods import ConfigError, create_method

    data = source if isinstance(source, DataSource) else DataSource(source, imagenet_root)
    proto, _ = resolve_protocol(protocol, overrides)
    proto.model_for(res)  # fail before any work if the protocol has no model at this resolution
    device = torch.device(device or default_device())
    m = create_method(method, subset=subset, ipc=ipc, res=res, **dict(method_config or {}))
    if analysis and not m.has_analysis():
        raise ConfigError(f"method {method!r} has no analysis outputs; drop --analysis")
    if analysis and out is None:
        raise ConfigError("analysis needs an output folder (out) to write into")
    train = data.load(subset, "train", res, progress=progress)
    test = data.load(subset, proto.test_split, res, progress=progress)

    t0 = time.perf_counter()
    ds = m.distill(train, ipc, seed=seed, device=device, progress=progress)
    distill_s = round(time.perf_counter() - t0, 3)
    ds.meta = {**ds.meta, "method": method, "config": m.config.model_dump(mode="json"), "subset": subset,
               "subset_sha256": get_subset(subset).sha256(), "ipc": ipc, "seed": seed}
    with tempfile.TemporaryDirectory(prefix="compdd-eval-") as tmp:
        folder = Path(out) / DISTILLED_DIR if out is not None else Path(tmp) / DISTILLED_DIR
        ds.save(folder)
        ds = DistilledSet.load(folder)  # score exactly what was written
        if analysis:
            m.write_analysis(ds, train, folder.parent / ANALYSIS_DIR)
        record = score_set(ds, folder, train, test, protocol, method=method,
                           method_config=m.config.model_dump(mode="json"), ipc=ipc, overrides=overrides,
                           teacher=teacher, device=device, batched=batched,
                           references=references, wall_time_s={"distill": distill_s}, progress=progress)
    if out is None:
        record.artifact.path = None
    else:
        record.save(Path(out) / RESULT_FILE)
    return record


def run_eval_distilled(
    folder: str | os.PathLike[str],
    subset: str,
    *,
    protocol: str | os.PathLike[str] | Protocol = DEFAULT_PROTOCOL,
    source: str | DataSource = "imagenet",
    imagenet_root: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    teacher: TeacherLike = None,
    device: str | torch.device | None = None,
    batched: bool = False,
    references: bool | Collection[str] = True,
    progress: bool = True,
) -> ResultRecord:
    """Score a distilled-set folder made elsewhere (``compdd eval-distilled``); write ``out`` (a JSON file) if given."""
    data = source if isinstance(source, DataSource) else DataSource(source, imagenet_root)
    folder = Path(folder)
    ds = DistilledSet.load(folder)
    sub = get_subset(subset)
    ipc = int(ds.meta.get("ipc") or len(ds) // sub.num_classes)
    if ipc < 1:
        raise ValueError(f"{folder} holds {len(ds)} images, fewer than one per class of {subset}")
    proto, _ = resolve_protocol(protocol, overrides)
    test = data.load(subset, proto.test_split, ds.resolution, progress=progress)
    _check_fits(ds, test)
    train = data.load(subset, "train", ds.resolution, progress=progress) \
        if _needs_train(proto, references, teacher) else None
    record = score_set(ds, folder, train, test, protocol, method=str(ds.meta.get("method") or "imported"),
                       method_config=ds.meta.get("config") or {}, ipc=ipc, overrides=overrides, teacher=teacher,
                       device=device, batched=batched, references=references, progress=progress)
    if out is not None:
        record.save(out)
    return record


def summary_rows(record: ResultRecord) -> list[tuple[str, str]]:
    """(label, value) lines for a terminal summary of a record."""
    def pm(mean: float, std: float | None) -> str:
        return f"{mean:6.2f} ± {std or 0:.2f}"

    rows = [("method", f"{record.method} (ipc {record.ipc}, {record.resolution} px, {record.subset})"),
            ("protocol", record.protocol + (f"  NON-STANDARD {record.overrides}" if record.overrides else ""))]
    rows += [(f"seed {s.seed}", f"{s.top1:6.2f}" + (f"   top-5 {s.top5:6.2f}" if s.top5 is not None else ""))
             for s in record.per_seed]
    rows.append(("top-1", pm(record.top1_mean, record.top1_std)))
    if record.random_reference:
        rows.append((f"random ipc {record.ipc}", pm(record.random_reference.mean, record.random_reference.std)))
    if record.full_reference:
        rows.append(("full data", pm(record.full_reference.mean, record.full_reference.std)))
    if record.recovery_ratio is not None:
        rows.append(("recovery", f"{100 * record.recovery_ratio:6.1f} % of full"))
    if record.gain_over_random is not None:
        rows.append(("over random", f"{record.gain_over_random:+6.2f} points"))
    rows.append(("wall time", ", ".join(f"{k} {v:.1f}s" for k, v in record.wall_time_s.items())))
    return rows


__all__: Sequence[str] = ["DataSource", "default_device", "evaluate_distilled", "load_split", "reference",
                          "resolve_protocol", "resolve_teacher", "run_eval_distilled", "run_evaluation", "score_set"]
