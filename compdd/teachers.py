"""Teachers: BatchNorm classifiers trained on a subset's real training split, cached under ``COMPDD_HOME``.

SRe2L recovers images from a teacher's BatchNorm statistics, RDED scores real crops with one, and the KD
protocols (``kd-v1``, ``soft-static-v1``) label the student's batches with one. All of them ask
:func:`get_teacher` for the teacher of (training tensors, recipe): it is found in
``COMPDD_HOME/teachers/<subset>-<res>px-<model>-<id>/`` or trained there on first use (with a message and a
progress bar) and written atomically. ``<id>`` is a hash of everything that made the teacher: the class
map, the resolution, the sha256 of the training tensors, the model and the full recipe (or the sha256 of
the weights file it was imported from). Changing any of them gives a new teacher, never a stale one.

A teacher folder holds ``model.safetensors`` (the state dict) and ``teacher.json`` (the key, the recipe,
train/validation accuracy, the normalisation it expects, package versions). Teachers read and emit images
in the ImageNet-normalised space every compdd tensor uses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from compdd import imagenet
from compdd.paths import atomic_path, compdd_home, sha256_file

if TYPE_CHECKING:
    from compdd.data import SubsetTensors
    from compdd.evaluation.protocols import Protocol

log = logging.getLogger(__name__)

# BatchNorm ConvNets of the benchmark's depth-by-resolution rule: RDED's conv3/conv4/conv5 observers,
# the ConvNet-5-BN teacher of DD-Ranking's SRe2L port at 128 px.
DEFAULT_MODELS = {32: "convnet_d3_bn", 64: "convnet_d4_bn", 128: "convnet_d5_bn"}
MODEL_FILE = "model.safetensors"
INFO_FILE = "teacher.json"


class TeacherError(ValueError):
    """A teacher cannot be built, loaded or imported (bad recipe, weights that do not fit the model)."""


class TeacherRecipe(BaseModel):
    """How a teacher is trained on the real training split. Every field is part of the teacher's hash.

    SGD with momentum and a full cosine schedule, random crop with zero padding (``pad`` x the side) and
    horizontal flip per image: the CIFAR squeeze recipe of SRe2L (kd spec §1.2) at any resolution.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = None  # None: DEFAULT_MODELS by resolution
    model_kwargs: dict[str, Any] = Field(default_factory=dict)  # e.g. {"width": 32}
    epochs: int = Field(60, ge=1)
    batch_size: int = Field(128, ge=2)
    lr: float = Field(0.05, gt=0)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["cosine", "constant"] = "cosine"
    pad: float = Field(0.125, ge=0, lt=1)  # random-crop padding as a fraction of the side (4 px at 32)
    flip: bool = True
    seed: int = 0

    def model_for(self, res: int) -> str:
        if self.model is not None:
            return self.model
        if res not in DEFAULT_MODELS:
            raise TeacherError(f"no default teacher model for {res} px (defaults: {DEFAULT_MODELS}); "
                               f"set the teacher recipe's 'model'")
        return DEFAULT_MODELS[res]


def parse_recipe(overrides: dict[str, Any] | TeacherRecipe | None, src: str = "teacher recipe") -> TeacherRecipe:
    if isinstance(overrides, TeacherRecipe):
        return overrides
    try:
        return TeacherRecipe(**(overrides or {}))
    except ValidationError as e:
        err = e.errors()[0]
        raise TeacherError(f"{src}: {'.'.join(map(str, err['loc']))}: {err['msg']}; "
                           f"known keys: {', '.join(TeacherRecipe.model_fields)}") from None


@dataclass
class Teacher:
    """A frozen classifier (eval mode, no parameter gradients) and the record of how it was made."""

    model: nn.Module
    info: dict[str, Any]
    path: Path | None = None
    found: bool = False  # True when get_teacher found it in the cache instead of making it

    @property
    def id(self) -> str:
        return self.info["id"]

    @property
    def name(self) -> str:
        return self.info["model"]

    def to(self, device: str | torch.device) -> Teacher:
        self.model.to(device)
        return self

    def logits(self, images: Tensor, batch_size: int = 256) -> Tensor:
        """Teacher logits (float32, on the CPU) for images (normalised floats or uint8 pixels), in batches."""
        return teacher_logits(self.model, images, batch_size)

    def summary(self) -> dict[str, Any]:
        """What a result record or a distilled set's meta keeps about the teacher."""
        keys = ("id", "model", "model_kwargs", "res", "subset", "source", "recipe", "weights_sha256",
                "data_sha256", "train_top1", "val_top1")
        return {k: self.info.get(k) for k in keys}


@torch.no_grad()
def teacher_logits(model: nn.Module, images: Tensor, batch_size: int = 256) -> Tensor:
    """``model``'s logits (float32, CPU) in eval mode for normalised float images or uint8 pixels."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i:i + batch_size].to(device)
        out.append(model(_normalize(x) if x.dtype == torch.uint8 else x).float().cpu())
    return torch.cat(out)


def _frozen(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def tensors_sha256(train: SubsetTensors) -> str:
    """sha256 of the training tensors (pixels, labels, class map): which data a teacher saw."""
    h = hashlib.sha256()
    h.update(json.dumps(list(train.wnids)).encode())
    h.update(str(tuple(train.images.shape)).encode())
    h.update(train.images.contiguous().numpy().tobytes())
    h.update(train.labels.contiguous().numpy().tobytes())
    return h.hexdigest()


def teachers_dir() -> Path:
    return compdd_home() / "teachers"


def _key(train: SubsetTensors, model: str, model_kwargs: dict[str, Any], recipe: TeacherRecipe | None,
         weights_sha: str | None) -> dict[str, Any]:
    return {
        "kind": "compdd-teacher/1",
        "subset": train.subset,
        "wnids": list(train.wnids),
        "res": train.resolution,
        "model": model,
        "model_kwargs": model_kwargs,
        # a trained teacher is a function of the data and the recipe; an imported one only of its weights
        "data_sha256": tensors_sha256(train) if weights_sha is None else None,
        "recipe": recipe.model_dump(mode="json") if recipe is not None else None,
        "weights_sha256": weights_sha,
    }


def _folder_for(key: dict[str, Any]) -> tuple[str, Path]:
    tid = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return tid, teachers_dir() / f"{key['subset']}-{key['res']}px-{key['model']}-{tid}"


def get_teacher(
    train: SubsetTensors,
    recipe: TeacherRecipe | dict[str, Any] | None = None,
    *,
    weights: str | os.PathLike[str] | None = None,
    model: str | None = None,
    val: SubsetTensors | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> Teacher:
    """The teacher for ``train`` under ``recipe`` (cached), or imported from a ``weights`` file.

    ``model`` overrides the recipe's model. ``val``, if given, is scored once and recorded (accuracy only;
    nothing is selected on it). The returned teacher is frozen, in eval mode, on ``device``.
    """
    recipe = parse_recipe(recipe)
    if model is not None:
        recipe = recipe.model_copy(update={"model": model})
    name = recipe.model_for(train.resolution)
    weights_sha = None
    if weights is not None:
        weights = Path(weights)
        if not weights.is_file():
            raise FileNotFoundError(f"--weights {weights}: no such file; give a .safetensors or .pt/.pth state dict")
        weights_sha = sha256_file(weights)
    key = _key(train, name, dict(recipe.model_kwargs), recipe if weights is None else None, weights_sha)
    tid, folder = _folder_for(key)
    if (folder / INFO_FILE).is_file():
        teacher = load_teacher(folder, device=device)
        teacher.found = True
        log.info("teacher %s found at %s", tid, folder)
    else:
        if weights is None:
            msg = (f"training teacher {name} on {train.subset} ({len(train)} images, {train.resolution} px, "
                   f"{recipe.epochs} epochs); first use, cached at {folder}")
            if progress:
                print(msg, file=sys.stderr)
            log.info(msg)
            net = train_teacher(train, recipe, device=device, progress=progress)
            source = "trained"
        else:
            net = create_model_for(name, train.num_classes, train.resolution, recipe.model_kwargs)
            load_weights_into(net, weights)
            source = "weights"
        info = {**key, "id": tid, "source": source, "num_classes": train.num_classes,
                "weights_file": str(weights) if weights is not None else None,
                "normalization": {"mean": list(imagenet.MEAN), "std": list(imagenet.STD)},
                "versions": _versions()}
        net = _frozen(net.to(device))
        info["train_top1"] = accuracy(net, train, device=device)
        if val is not None:
            info["val_top1"] = accuracy(net, val, device=device)
        _save(folder, net, info)
        teacher = Teacher(net, info, folder)
        log.info("teacher %s: train top-1 %.2f%%", tid, info["train_top1"])
    if val is not None and teacher.info.get("val_top1") is None:
        teacher.info["val_top1"] = accuracy(teacher.model, val, device=device)
        _save(folder, teacher.model, teacher.info)
    return teacher


def load_teacher(folder: str | os.PathLike[str], device: str | torch.device = "cpu") -> Teacher:
    """A teacher folder written by :func:`get_teacher` (or ``compdd teacher``)."""
    folder = Path(folder)
    if not (folder / INFO_FILE).is_file() or not (folder / MODEL_FILE).is_file():
        raise FileNotFoundError(f"{folder}: not a teacher folder (needs {INFO_FILE} and {MODEL_FILE}); "
                                f"create one with `compdd teacher`")
    info = json.loads((folder / INFO_FILE).read_text("utf-8"))
    net = create_model_for(info["model"], info["num_classes"], info["res"], info.get("model_kwargs") or {})
    net.load_state_dict(load_file(str(folder / MODEL_FILE)))
    return Teacher(_frozen(net.to(device)), info, folder)


def create_model_for(name: str, num_classes: int, res: int, model_kwargs: dict[str, Any]) -> nn.Module:
    from compdd.models import create_model

    return create_model(name, num_classes=num_classes, res=res, **model_kwargs)


def _save(folder: Path, net: nn.Module, info: dict[str, Any]) -> None:
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        save_file(state, str(tmp / MODEL_FILE))
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2, default=str), "utf-8")


def load_weights_into(net: nn.Module, path: Path) -> None:
    """Load a foreign state dict: safetensors, or a torch checkpoint read with ``weights_only=True``."""
    if path.suffix == ".safetensors":
        state: Any = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a pickle with objects, a truncated file: say which file and why
            raise TeacherError(f"--weights {path}: cannot be read as a plain state dict ({e})") from None
    if isinstance(state, dict):
        for k in ("model", "state_dict"):
            if k in state and isinstance(state[k], dict):
                state = state[k]
                break
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise TeacherError(f"--weights {path}: expected a state dict of tensors (optionally under 'model' "
                           f"or 'state_dict')")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        raise TeacherError(f"--weights {path} does not fit {type(net).__name__}: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}, wrong shapes {sorted(shapes)[:5]}; check --model and --res")
    net.load_state_dict(state)


# ----------------------------------------------------------------------------------------------- training

def _crop_flip(x: Tensor, pad: int, flip: bool, g: torch.Generator) -> Tensor:
    """Per-image random crop of a zero-padded uint8 batch (zero = black pixels, as CIFAR's RandomCrop) + flip."""
    b, _, h, w = x.shape
    if pad > 0:
        x = F.pad(x, (pad, pad, pad, pad))
        ij = torch.randint(0, 2 * pad + 1, (b, 2), generator=g)
        x = torch.stack([x[k, :, i:i + h, j:j + w] for k, (i, j) in enumerate(ij.tolist())])
    if flip:
        f = torch.rand(b, generator=g) < 0.5
        x = torch.where(f.view(b, 1, 1, 1), x.flip(-1), x)
    return x


def _normalize(x: Tensor) -> Tensor:
    mean = torch.tensor(imagenet.MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(imagenet.STD, device=x.device).view(1, 3, 1, 1)
    return (x.float() / 255 - mean) / std


def train_teacher(train: SubsetTensors, recipe: TeacherRecipe, *, device: str | torch.device = "cpu",
                  progress: bool = True) -> nn.Module:
    """Train a fresh classifier on ``train`` by ``recipe``; deterministic in ``recipe.seed`` on a device."""
    from tqdm.auto import tqdm

    device = torch.device(device)
    name = recipe.model_for(train.resolution)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        net = create_model_for(name, train.num_classes, train.resolution, recipe.model_kwargs).to(device)
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        log.warning("teacher model %s has no BatchNorm layer; SRe2L cannot recover images from it", name)
    opt = torch.optim.SGD(net.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    g = torch.Generator().manual_seed(recipe.seed)
    pad = round(recipe.pad * train.resolution)
    n, bs = len(train), min(recipe.batch_size, len(train))
    net.train()
    bar = tqdm(range(recipe.epochs), desc=f"teacher {name} on {train.subset}", unit="ep", disable=not progress)
    for epoch in bar:
        factor = 0.5 * (1 + math.cos(math.pi * epoch / recipe.epochs)) if recipe.schedule == "cosine" else 1.0
        for group in opt.param_groups:
            group["lr"] = recipe.lr * factor
        perm = torch.randperm(n, generator=g)
        total, steps = 0.0, 0
        for start in range(0, n, bs):
            idx = perm[start:start + bs]
            if len(idx) < 2:  # BatchNorm cannot train on a batch of one
                continue
            x = _normalize(_crop_flip(train.images[idx], pad, recipe.flip, g).to(device))
            loss = F.cross_entropy(net(x), train.labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, steps = total + float(loss.detach()), steps + 1
        if not math.isfinite(total):
            raise FloatingPointError(f"teacher training diverged at epoch {epoch}; lower the recipe's lr ({recipe.lr})")
        bar.set_postfix(loss=f"{total / max(steps, 1):.3f}")
    return net.eval()


@torch.no_grad()
def accuracy(net: nn.Module, data: SubsetTensors, *, device: str | torch.device = "cpu", batch_size: int = 500) -> float:
    """Top-1 (percent) of ``net`` in eval mode on the un-augmented images of ``data``."""
    net.eval()
    correct = 0
    for start in range(0, len(data), batch_size):
        x = _normalize(data.images[start:start + batch_size].to(device))
        correct += int((net(x).argmax(1).cpu() == data.labels[start:start + batch_size]).sum())
    return 100.0 * correct / max(len(data), 1)


def _versions() -> dict[str, str]:
    from compdd.distilled import versions

    return versions()


# ----------------------------------------------------------------------------------------------- protocols

def protocol_needs_teacher(protocol: Protocol) -> bool:
    """True for KD protocols (teacher online) and static-relabel protocols (teacher logits stored once)."""
    return protocol.label_mode == "kd" or protocol.kd.get("relabel") == "static"


def protocol_teacher(protocol: Protocol, train: SubsetTensors, *, val: SubsetTensors | None = None,
                     device: str | torch.device = "cpu", progress: bool = True) -> Teacher | None:
    """The teacher ``protocol`` scores with, trained on the real ``train`` split by ``protocol.kd['teacher']``.

    ``None`` when the protocol needs no teacher. Methods that use the default recipe share this teacher.
    """
    if not protocol_needs_teacher(protocol):
        return None
    recipe = parse_recipe(protocol.kd.get("teacher"), f"protocol {protocol.id}: kd.teacher")
    return get_teacher(train, recipe, val=val, device=device, progress=progress)


def protocol_labels(protocol: Protocol, teacher: nn.Module | None, images: Tensor, labels: Tensor) -> Tensor:
    """The labels a set is trained with under ``protocol``: teacher logits for static relabelling, else its own.

    Static relabelling (``kd.relabel: static``, kd spec §3.5 (3)) replaces every set's labels, learned soft
    labels included, by the teacher's logits on the un-augmented images (float or uint8), so methods and the
    random-real reference are compared under one label source.
    """
    if protocol.kd.get("relabel") != "static":
        return labels
    if teacher is None:
        raise TeacherError(f"protocol {protocol.id} relabels with a teacher; pass the teacher from protocol_teacher()")
    return teacher_logits(teacher, images)


# ----------------------------------------------------------------------------------------------- KD augmentation

def kd_crop_cutmix(x: Tensor, seed: int, *, crop_scale: tuple[float, float] = (0.08, 1.0), flip: bool = True,
                   cutmix_beta: float = 1.0) -> Tensor:
    """The KD protocols' batch augmentation (SRe2L/RDED): per image a RandomResizedCrop (``crop_scale``, ratio
    3/4..4/3, resized back bilinearly) and a horizontal flip with p = 0.5, then CutMix on the whole batch
    (lambda ~ Beta(beta, beta), one box, one permutation). Returns a new tensor; ``x`` is untouched (RDED's
    public loop mixed its batch in place, R4). All draws come from ``seed``; the same seed gives the same
    batch. Meant for label mode ``kd``, where the teacher labels the mixed pixels themselves.
    """
    from compdd.methods.sre2l import cutmix_box, paste, sample_resized_crop_box

    b, _, h, w = x.shape
    g = torch.Generator().manual_seed(seed)
    theta = torch.zeros(b, 2, 3, dtype=torch.float64)
    for k in range(b):
        i, j, ch, cw = sample_resized_crop_box(h, w, crop_scale, (3 / 4, 4 / 3), g)
        sign = -1.0 if flip and float(torch.rand(1, generator=g)) < 0.5 else 1.0
        # output pixel u samples input column j + (u + 0.5) * cw / w - 0.5 (align_corners=False coordinates)
        theta[k, 0] = torch.tensor([sign * cw / w, 0.0, (2 * j + cw) / w - 1])
        theta[k, 1] = torch.tensor([0.0, ch / h, (2 * i + ch) / h - 1])
    grid = F.affine_grid(theta.to(x.device, x.dtype), [b, 3, h, w], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if b > 1:
        rng = np.random.default_rng(seed)
        lam = float(rng.beta(cutmix_beta, cutmix_beta))
        box = cutmix_box(h, w, lam, rng)
        perm = torch.from_numpy(rng.permutation(b)).to(x.device)
        out = paste(out, perm, box)
    return out
