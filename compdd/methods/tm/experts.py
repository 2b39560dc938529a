"""Expert trajectories: training them on the real subset, storing them, and reading them back.

An expert is a network trained from a seeded random initialisation on the whole real training split;
its trajectory is its flat parameter vector (``module.parameters()`` order) before training and after each
epoch. Trajectory matching starts students at epoch ``t`` and matches them to epoch ``t + M``.

On disk, one folder per expert set::

    manifest.json              settings, parameter layout, data fingerprint, one entry per finished expert
    expert_0000.safetensors    "trajectory" [saved epochs, P] (float32 or float16), "epochs" int64 [saved epochs]
    expert_0001.safetensors    ...

Each expert file is written atomically and carries its own metadata, so a run that stops is resumed
expert by expert: finished experts are kept, the rest are trained. Default folder:
``COMPDD_HOME/experts/<subset>/<res>px/<model>/<optimizer>-<augmentation>`` (:func:`default_experts_dir`).

The per-epoch accuracy recorded for each expert is measured on the **validation split** when one is given:
experts train on the whole training split (as in the public code), so a held-out part of train would
change the trajectories being matched; the accuracy is a diagnostic only, and nothing in compdd selects
or weights experts by it.

Storage options and their cost:

- ``storage_dtype="float16"`` halves the disk. Each stored parameter is rounded to ~3 significant digits
  (relative error up to 4.9e-4), which is of the same order as what one epoch changes in many parameters,
  so the start-to-target distances the matching loss divides by get noisier. Each expert's manifest entry
  records ``storage_error``, the measured relative error of its epoch-to-epoch changes after rounding.
- ``keep_epochs=K`` stores epochs 0..K and the final epoch only. Distillation then cannot start students
  beyond ``K - expert_epochs``; the final epoch stays available for DATM's image and label initialisation.
  The DATM/EDF ImageNet windows never go past epoch 41 of 100.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from safetensors import safe_open
from safetensors.torch import save_file

from compdd.data import SubsetTensors
from compdd.methods.tm.gsam import gsam_gradients
from compdd.methods.tm.student import FunctionalStudent
from compdd.paths import atomic_path, atomic_write_text, compdd_home

log = logging.getLogger(__name__)

FORMAT = "compdd-experts/1"
MANIFEST = "manifest.json"
DEFAULT_EPOCHS = {"sgd": 50, "gsam": 100}  # MTT's and FTD/DATM/EDF's expert lengths


class ExpertError(ValueError):
    """An expert folder is missing, incomplete, or does not fit the distillation asked of it."""


class ExpertConfig(BaseModel):
    """How experts are trained and stored (defaults: the public FTD/DATM/EDF buffers)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="registered model name, e.g. convnet_d5")
    optimizer: Literal["sgd", "gsam"] = "gsam"
    epochs: int = Field(100, ge=1)
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = Field(256, ge=1)
    rho: float = 0.01  # GSAM perturbation radius (constant)
    alpha: float = 0.3  # GSAM ascent weight (DATM/EDF scripts; FTD's argparse default is 0.4)
    adaptive: bool = True  # GSAM: ASAM-style perturbation (always on in the public code)
    dsa: bool = True
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    dsa_crop_ratio: float = 0.125  # every public buffer script uses 0.125, EDF's included
    storage_dtype: Literal["float32", "float16"] = "float32"
    keep_epochs: int | None = Field(None, ge=0, description="store epochs 0..K and the final one only")
    seed: int = 0

    @property
    def augmentation_tag(self) -> str:
        return f"dsa{self.dsa_crop_ratio:g}" if self.dsa else "noaug"

    def saved_epochs(self) -> list[int]:
        if self.keep_epochs is None or self.keep_epochs >= self.epochs:
            return list(range(self.epochs + 1))
        return list(range(self.keep_epochs + 1)) + [self.epochs]


def default_experts_dir(subset: str, res: int, model: str, optimizer: str, augmentation: str = "dsa0.125") -> Path:
    return compdd_home() / "experts" / subset / f"{res}px" / model / f"{optimizer}-{augmentation}"


def experts_command(subset: str, res: int, optimizer: str, model: str | None = None, epochs: int | None = None,
                    num_experts: int | None = None) -> str:
    """The ``compdd experts`` command line that trains the experts a distillation is missing."""
    cmd = f"compdd experts --subset {subset} --res {res} --optimizer {optimizer}"
    if model:
        cmd += f" --model {model}"
    if num_experts:
        cmd += f" --num-experts {num_experts}"
    if epochs:
        cmd += f" --epochs {epochs}"
    return cmd + " --imagenet-root PATH"


def expert_seed(base: int, index: int) -> int:
    digest = hashlib.sha256(f"compdd-expert:{base}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def data_fingerprint(train: SubsetTensors) -> str:
    """sha256 of the training tensors: tells later users whether experts saw the same data."""
    h = hashlib.sha256()
    h.update(json.dumps([train.subset, list(train.wnids), list(train.images.shape)]).encode())
    h.update(train.labels.numpy().tobytes())
    h.update(train.images.contiguous().numpy().tobytes())
    return h.hexdigest()


def disk_bytes(num_params: int, config: ExpertConfig, num_experts: int) -> int:
    per = 2 if config.storage_dtype == "float16" else 4
    return num_params * len(config.saved_epochs()) * per * num_experts


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    raise AssertionError


# --------------------------------------------------------------------------------------------- training


def _header(config: ExpertConfig, train: SubsetTensors, student: FunctionalStudent, fingerprint: str) -> dict:
    header = {
        "format": FORMAT,
        "subset": train.subset,
        "wnids": list(train.wnids),
        "num_classes": train.num_classes,
        "res": train.resolution,
        "num_train_images": len(train),
        "data_fingerprint": fingerprint,
        "config": config.model_dump(),
        "num_params": student.num_params,
        "parameters": student.signature(),
        "saved_epochs": config.saved_epochs(),
        "accuracy_split": "validation (diagnostic only; never used to select or weight experts)",
    }
    return json.loads(json.dumps(header))  # the form it has when read back from disk


def _same_settings(a: dict, b: dict) -> list[str]:
    keys = ("subset", "wnids", "res", "config", "parameters", "data_fingerprint")
    return [k for k in keys if a.get(k) != b.get(k)]


def _accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 500) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), batch):
            correct += int((model(images[i:i + batch]).argmax(1) == labels[i:i + batch]).sum())
    model.train()
    return 100.0 * correct / max(1, len(images))


def _build_model(config: ExpertConfig, num_classes: int, res: int, seed: int) -> torch.nn.Module:
    from compdd.models import create_model

    # The initialisation comes from the expert's own seed, not from (and without touching) the global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(config.model, num_classes=num_classes, res=res)


def train_experts(
    train: SubsetTensors,
    out_dir: str | os.PathLike[str],
    config: ExpertConfig,
    num_experts: int,
    *,
    val: SubsetTensors | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> ExpertSet:
    """Train experts ``0..num_experts-1`` into ``out_dir``, skipping those already there; return the set.

    Expert ``i`` is fully determined by ``(config.seed, i)``: its initialisation, batch order and
    augmentation draws come from generators seeded with :func:`expert_seed`.
    """
    from tqdm.auto import tqdm

    from compdd.augment import DSA

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    shell = _build_model(config, train.num_classes, train.resolution, 0)
    student = FunctionalStudent(shell)
    header = _header(config, train, student, data_fingerprint(train))
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        diff = _same_settings(old, header)
        if diff:
            raise ExpertError(f"{out} holds experts trained with different {', '.join(diff)}; "
                              "pass another folder (--experts DIR) or delete this one")
    augment = DSA(config.dsa_strategy, crop_ratio=config.dsa_crop_ratio) if config.dsa else None
    X = train.normalized(device)
    Y = train.labels.to(device)
    Xv = val.normalized(device) if val is not None else None
    Yv = val.labels.to(device) if val is not None else None
    saved = config.saved_epochs()
    dtype = torch.float16 if config.storage_dtype == "float16" else torch.float32

    todo = [i for i in range(num_experts) if _read_entry(out / _file_name(i), header) is None]
    if len(todo) < num_experts:
        log.info("%d of %d experts already in %s; training %d", num_experts - len(todo), num_experts, out, len(todo))
    steps_per_epoch = -(-len(train) // config.batch_size)
    bar = tqdm(total=len(todo) * config.epochs, desc=f"experts ({config.optimizer})", unit="epoch",
               disable=not progress)
    for i in todo:
        seed = expert_seed(config.seed, i)
        t0 = time.time()
        model = _build_model(config, train.num_classes, train.resolution, seed).to(device)
        params = [p for _, p in model.named_parameters()]
        opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
        gen = torch.Generator().manual_seed(seed)
        rows = [student.flatten(model).cpu()]
        accuracy = [_accuracy(model, Xv, Yv)] if Xv is not None else []
        losses: list[float] = []
        for epoch in range(1, config.epochs + 1):
            total = 0.0
            for idx in torch.randperm(len(train), generator=gen).split(config.batch_size):
                idx = idx.to(device)
                x = X[idx] if augment is None else augment(X[idx], gen)
                y = Y[idx]
                if config.optimizer == "gsam":
                    loss, grads = gsam_gradients(params, lambda m=model, x=x, y=y: F.cross_entropy(m(x), y),
                                                 rho=config.rho, alpha=config.alpha, adaptive=config.adaptive)
                    for p, g in zip(params, grads):
                        p.grad = g
                else:
                    opt.zero_grad(set_to_none=True)
                    loss = F.cross_entropy(model(x), y)
                    loss.backward()
                opt.step()
                total += float(loss.detach())
            if not torch.isfinite(torch.tensor(total)):
                raise ExpertError(f"expert {i} diverged in epoch {epoch} (loss {total}); lower the learning rate "
                                  f"(lr={config.lr})")
            losses.append(total / steps_per_epoch)
            if epoch in saved:
                rows.append(student.flatten(model).cpu())
            if Xv is not None:
                accuracy.append(_accuracy(model, Xv, Yv))
            bar.update(1)
            bar.set_postfix(expert=i, loss=f"{losses[-1]:.3f}", acc=f"{accuracy[-1]:.1f}" if accuracy else "-")
        trajectory = torch.stack(rows)
        entry = {"index": i, "file": _file_name(i), "seed": seed, "train_loss": losses,
                 "accuracy": accuracy or None, "seconds": round(time.time() - t0, 2),
                 "storage_error": storage_error(trajectory, dtype)}
        with atomic_path(out / _file_name(i)) as tmp:
            save_file({"trajectory": trajectory.to(dtype).contiguous(), "epochs": torch.tensor(saved)}, str(tmp),
                      metadata={"header": json.dumps(header), "entry": json.dumps(entry)})
        _write_manifest(out, header)
    bar.close()
    _write_manifest(out, header)
    return ExpertSet(out)


def storage_error(trajectory: torch.Tensor, dtype: torch.dtype) -> float:
    """Largest relative error, after rounding to ``dtype``, of the change between consecutive stored epochs.

    That change is what a student is matched against, so this is the cost of lossy storage (0 for float32).
    """
    if dtype == trajectory.dtype or len(trajectory) < 2:
        return 0.0
    exact = trajectory[1:] - trajectory[:-1]
    stored = trajectory.to(dtype).float()
    err = (stored[1:] - stored[:-1] - exact).norm(dim=1) / exact.norm(dim=1).clamp_min(1e-30)
    return float(err.max())


def _file_name(i: int) -> str:
    return f"expert_{i:04d}.safetensors"


def _read_entry(path: Path, header: dict | None = None) -> dict | None:
    """The entry of a finished expert file (None if absent, unreadable or trained with other settings)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            md = f.metadata() or {}
        file_header, entry = json.loads(md["header"]), json.loads(md["entry"])
    except Exception as e:  # a truncated or foreign file is retrained, not fatal
        log.warning("ignoring unreadable expert file %s (%s)", path, e)
        return None
    if header is not None and _same_settings(file_header, header):
        return None
    return entry


def _write_manifest(out: Path, header: dict) -> None:
    entries = []
    for path in sorted(out.glob("expert_*.safetensors")):
        entry = _read_entry(path, header)
        if entry is not None:
            entries.append(entry)
    atomic_write_text(out / MANIFEST, json.dumps({**header, "num_experts": len(entries), "experts": entries},
                                                 indent=1) + "\n")


# --------------------------------------------------------------------------------------------- reading


class ExpertSet:
    """A folder of stored trajectories; :meth:`params` reads one epoch of one expert (memory-mapped)."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.is_file():
            raise ExpertError(f"{self.folder}: no {MANIFEST}; this is not an expert folder written by `compdd experts`")
        self.manifest: dict[str, Any] = json.loads(path.read_text())
        if self.manifest.get("format") != FORMAT:
            raise ExpertError(f"{path}: format {self.manifest.get('format')!r} is not {FORMAT!r}")
        self.entries: list[dict] = self.manifest["experts"]
        self.saved_epochs: list[int] = list(self.manifest["saved_epochs"])
        self._row = {e: r for r, e in enumerate(self.saved_epochs)}
        self.config = ExpertConfig(**self.manifest["config"])

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def final_epoch(self) -> int:
        return self.saved_epochs[-1]

    @property
    def num_params(self) -> int:
        return int(self.manifest["num_params"])

    def sha256(self) -> str:
        return hashlib.sha256((self.folder / MANIFEST).read_bytes()).hexdigest()

    def params(self, expert: int, epoch: int) -> torch.Tensor:
        """Flat float32 parameters of ``expert`` after ``epoch`` (0 = initialisation; -1 = final)."""
        epoch = self.final_epoch if epoch == -1 else epoch
        if epoch not in self._row:
            raise ExpertError(f"{self.folder}: epoch {epoch} is not stored (stored: {_ranges(self.saved_epochs)})")
        with safe_open(str(self.folder / self.entries[expert]["file"]), "pt") as f:
            row = self._row[epoch]
            return f.get_slice("trajectory")[row:row + 1][0].float()

    def check(self, *, student: FunctionalStudent | None = None, wnids: Sequence[str] | None = None,
              epochs: Sequence[int] = (), command: str = "") -> None:
        """Raise :class:`ExpertError` if these experts cannot serve a distillation with these needs."""
        hint = f"\n  {command}" if command else ""
        if len(self) == 0:
            raise ExpertError(f"{self.folder}: no finished experts; train them with:{hint}")
        if student is not None and [list(x) for x in self.manifest["parameters"]] != [list(x) for x in student.signature()]:
            raise ExpertError(f"{self.folder}: experts are {self.config.model} networks whose parameters do not match "
                              f"the student ({student.num_params} parameters); use experts of the student's model")
        if wnids is not None and list(wnids) != list(self.manifest["wnids"]):
            raise ExpertError(f"{self.folder}: experts were trained on classes of {self.manifest['subset']!r}, "
                              "not on this subset's classes (in this order)")
        missing = sorted({e for e in epochs if e != -1 and e not in self._row})
        if missing:
            raise ExpertError(f"{self.folder}: the distillation needs expert epochs up to {max(missing)} but only "
                              f"{_ranges(self.saved_epochs)} are stored; train longer experts or lower "
                              f"max_start_epoch / expert_epochs:{hint}")


def _ranges(epochs: Sequence[int]) -> str:
    out, i = [], 0
    while i < len(epochs):
        j = i
        while j + 1 < len(epochs) and epochs[j + 1] == epochs[j] + 1:
            j += 1
        out.append(f"{epochs[i]}" if i == j else f"{epochs[i]}-{epochs[j]}")
        i = j + 1
    return ", ".join(out)
