"""Subsets as tensors: one uint8 tensor (N, 3, R, R) per split, with labels and the class map, cached.

Resize rule: the shorter side is resized to R (bilinear, antialiased) and the centre R x R is cropped,
so aspect ratio is kept. (The public DD code squashes to R x R; ``resize="squash"`` reproduces that.)
Tensors are cached under ``COMPDD_HOME/tensors`` keyed by source, revision, subset hash, split,
resolution and resize rule, written atomically, so a second read of a 13k-image subset takes seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file

from compdd import imagenet
from compdd.benchmark import Subset, get_subset
from compdd.paths import atomic_path, compdd_home

log = logging.getLogger(__name__)

ResizeRule = Literal["shorter-crop", "squash"]


@dataclass
class SubsetTensors:
    """One split of a subset in memory. ``labels[i]`` indexes ``wnids`` (the class map)."""

    images: torch.Tensor  # uint8 (N, 3, R, R)
    labels: torch.Tensor  # int64 (N,)
    wnids: tuple[str, ...]
    subset: str
    split: str
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels shape {tuple(self.labels.shape)} does not match {self.images.shape[0]} images")

    @property
    def num_classes(self) -> int:
        return len(self.wnids)

    @property
    def resolution(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def normalized(self, device: str | torch.device = "cpu") -> torch.Tensor:
        """Float images in the ImageNet-normalised space the DD methods work in."""
        x = self.images.to(device).float().div_(255)
        mean = torch.tensor(imagenet.MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(imagenet.STD, device=device).view(1, 3, 1, 1)
        return (x - mean) / std

    def indices_of_class(self, c: int) -> torch.Tensor:
        return torch.nonzero(self.labels == c).flatten()


def resize_uint8(img: torch.Tensor, res: int, rule: ResizeRule = "shorter-crop") -> torch.Tensor:
    """Resize one uint8 (3, H, W) image to (3, res, res) by ``rule``."""
    import torchvision.transforms.v2.functional as F

    if rule == "squash":
        return F.resize(img, [res, res], antialias=True)
    if rule != "shorter-crop":
        raise ValueError(f"unknown resize rule {rule!r}; use 'shorter-crop' or 'squash'")
    return F.center_crop(F.resize(img, res, antialias=True), [res, res])


def _cache_path(key: dict) -> Path:
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return compdd_home() / "tensors" / f"{key['subset']}-{key['split']}-{key['res']}-{h}.safetensors"


def load_tensors_from_imagenet(
    subset: str | Subset,
    root: str | os.PathLike[str],
    split: str = "train",
    res: int = 128,
    *,
    resize: ResizeRule = "shorter-crop",
    cache: bool = True,
    progress: bool = True,
) -> SubsetTensors:
    """Read one split of a subset from an ImageNet folder (``root/split/<wnid>/``).

    Unreadable files are skipped and counted in ``meta["skipped"]`` rather than failing the run.
    """
    sub = get_subset(subset) if isinstance(subset, str) else subset
    root = Path(root).resolve()
    files = [(c, p) for c, w in enumerate(sub.wnids) for p in imagenet.list_images(root, split, w)]
    key = {
        "source": "imagenet", "root": str(root), "subset": sub.name, "subset_sha256": sub.sha256(),
        "split": split, "res": res, "resize": resize,
        # file list + sizes: a changed tree gets a new cache entry
        "files": hashlib.sha256("".join(f"{p}:{p.stat().st_size}" for _, p in files).encode()).hexdigest(),
    }
    path = _cache_path(key)
    if cache and path.is_file():
        return _read_cache(path, sub, split)

    from tqdm.auto import tqdm

    images = torch.empty((len(files), 3, res, res), dtype=torch.uint8)
    labels = torch.empty(len(files), dtype=torch.int64)
    n, skipped = 0, []
    for c, p in tqdm(files, desc=f"reading {sub.name}/{split} @{res}px", unit="img", disable=not progress):
        try:
            img = imagenet.read_image(p)
        except imagenet.UnreadableImage as e:
            log.warning("skipping %s", e)
            skipped.append(str(p.relative_to(root)))
            continue
        images[n] = resize_uint8(img, res, resize)
        labels[n] = c
        n += 1
    st = SubsetTensors(images[:n].clone(), labels[:n].clone(), sub.wnids, sub.name, split,
                       {"source": "imagenet", "root": str(root), "res": res, "resize": resize, "skipped": skipped})
    if cache:
        with atomic_path(path) as tmp:
            save_file({"images": st.images, "labels": st.labels}, str(tmp),
                      metadata={"meta": json.dumps(st.meta), "wnids": json.dumps(list(sub.wnids))})
    return st


def _read_cache(path: Path, sub: Subset, split: str) -> SubsetTensors:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        md = f.metadata()
    if json.loads(md["wnids"]) != list(sub.wnids):
        raise RuntimeError(f"cache file {path} does not match subset {sub.name}; delete it and retry")
    t = load_file(str(path))
    return SubsetTensors(t["images"], t["labels"], sub.wnids, sub.name, split, json.loads(md["meta"]))
