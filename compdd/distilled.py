"""Distilled sets: what a method returns, and its on-disk form.

A distilled set is a folder with ``images.safetensors`` (float32 images in the ImageNet-normalised
space, N x 3 x R x R), ``labels.safetensors`` (``labels``: int64 hard labels, or float32 N x C soft
logits; optional scalar ``lr``), and ``meta.json`` (method, config, subset, ipc, resolution, seed,
versions, sha256 of both tensor files). Loading checks the hashes, so what comes back is bit-identical
to what was saved or an error says which file changed.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from compdd import imagenet
from compdd.paths import atomic_path, sha256_file

IMAGES_FILE = "images.safetensors"
LABELS_FILE = "labels.safetensors"
META_FILE = "meta.json"


class DistilledSetError(ValueError):
    """A distilled-set folder is missing a file, has the wrong shapes, or fails its hash check."""


@dataclass
class DistilledSet:
    images: torch.Tensor  # float32 (N, 3, R, R), normalised space
    labels: torch.Tensor  # int64 (N,) hard, or float32 (N, C) soft logits
    lr: float | None = None  # learned student learning rate, if the method learns one
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1] != 3:
            raise DistilledSetError(f"images must be (N, 3, H, W), got {tuple(self.images.shape)}")
        n = self.images.shape[0]
        if self.labels.shape[0] != n or self.labels.ndim not in (1, 2):
            raise DistilledSetError(f"labels shape {tuple(self.labels.shape)} does not fit {n} images")
        if self.labels.ndim == 1 and self.labels.dtype != torch.int64:
            raise DistilledSetError(f"hard labels must be int64, got {self.labels.dtype}")

    @property
    def label_type(self) -> str:
        return "soft" if self.labels.ndim == 2 else "hard"

    @property
    def resolution(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def hard_labels(self) -> torch.Tensor:
        return self.labels if self.labels.ndim == 1 else self.labels.argmax(1)

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the set to ``folder`` atomically (the folder appears complete or not at all)."""
        folder = Path(folder)
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            save_file({"images": self.images.detach().cpu().float().contiguous()}, str(tmp / IMAGES_FILE))
            lab = {"labels": self.labels.detach().cpu().contiguous()}
            if self.lr is not None:
                lab["lr"] = torch.tensor(float(self.lr), dtype=torch.float64)
            save_file(lab, str(tmp / LABELS_FILE))
            meta = {
                **self.meta,
                "n_images": len(self),
                "resolution": self.resolution,
                "label_type": self.label_type,
                "lr": self.lr,
                "normalization": {"mean": list(imagenet.MEAN), "std": list(imagenet.STD)},
                "versions": versions(),
                "sha256": {IMAGES_FILE: sha256_file(tmp / IMAGES_FILE), LABELS_FILE: sha256_file(tmp / LABELS_FILE)},
            }
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
        self.meta = json.loads(json.dumps(meta, default=str))  # what was written, so sha256() works after save
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str], *, verify: bool = True) -> DistilledSet:
        folder = Path(folder)
        for name in (IMAGES_FILE, LABELS_FILE, META_FILE):
            if not (folder / name).is_file():
                raise DistilledSetError(f"{folder}: missing {name}; is this a folder written by DistilledSet.save / compdd evaluate?")
        meta = json.loads((folder / META_FILE).read_text())
        if verify:
            sums = meta.get("sha256") or {}
            missing = [n for n in (IMAGES_FILE, LABELS_FILE) if n not in sums]
            if missing:
                raise DistilledSetError(f"{folder / META_FILE} has no sha256 for {', '.join(missing)}, so the tensors "
                                        "cannot be checked; load with verify=False if you trust the folder")
            for name, want in sums.items():
                got = sha256_file(folder / name)
                if got != want:
                    raise DistilledSetError(f"{folder / name}: sha256 {got[:12]}… does not match meta.json ({want[:12]}…); the file changed after saving")
        images = load_file(str(folder / IMAGES_FILE))["images"]
        lab = load_file(str(folder / LABELS_FILE))
        lr = float(lab["lr"].item()) if "lr" in lab else None
        return cls(images, lab["labels"], lr, meta)

    def sha256(self) -> str:
        """Hash identifying the artifact: the hashes of its two tensor files, as written by :meth:`save`."""
        import hashlib

        sums = self.meta.get("sha256")
        if not sums:
            raise DistilledSetError("the set has not been saved; save it first to get its sha256")
        return hashlib.sha256(json.dumps(sums, sort_keys=True).encode()).hexdigest()

    def to_uint8(self) -> torch.Tensor:
        """Images back in pixel space, clamped to [0, 255] (for viewing; training uses the float images)."""
        mean = torch.tensor(imagenet.MEAN).view(1, 3, 1, 1)
        std = torch.tensor(imagenet.STD).view(1, 3, 1, 1)
        x = self.images.detach().cpu().float() * std + mean
        return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def versions() -> dict[str, str]:
    import torchvision

    from compdd import __version__

    return {"compdd": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version()}
