"""Distilled sets in and out of other formats: other toolkits' ``.pt`` tensors, PNG folders, and grid images.

- :func:`import_pt` reads images/labels/lr saved by another toolkit with ``torch.save`` (e.g. DATM/EDF's
  ``images_best.pt``, ``labels_best.pt``, ``lr_best.pt``) with ``torch.load(weights_only=True)``, so no code
  is unpickled.
- :func:`import_png_folder` reads ``FOLDER/<class>/*.png`` where ``<class>`` is a wnid of the subset or a
  local label ``0..C-1``.
- :func:`export_png_folder` and :func:`save_grid` write a set as PNGs (one folder per wnid) or as one grid
  image (a row per class).

Class order is always the subset's (``Subset.wnids``): a local label ``c`` means ``wnids[c]``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from compdd import imagenet
from compdd.benchmark import Subset, get_subset
from compdd.distilled import DistilledSet
from compdd.paths import atomic_path, atomic_write_bytes


class ForeignSetError(ValueError):
    """A foreign file or folder cannot be turned into a distilled set; the message says why and how to fix it."""


def _normalize(pixels01: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(imagenet.MEAN).view(1, 3, 1, 1)
    std = torch.tensor(imagenet.STD).view(1, 3, 1, 1)
    return (pixels01 - mean) / std


def _load_tensor(path: Path, what: str, keys: tuple[str, ...]) -> torch.Tensor:
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError and others for files that are not plain tensors
        raise ForeignSetError(f"{path}: cannot be read as tensors with torch.load(weights_only=True) ({e}); save plain "
                           "tensors (torch.save(tensor, path)), not pickled objects") from None
    if isinstance(obj, dict):
        found = [k for k in keys if k in obj]
        if not found:
            raise ForeignSetError(f"{path} holds a dict with keys {sorted(obj)}; expected a tensor or one of {list(keys)}")
        obj = obj[found[0]]
    if not isinstance(obj, torch.Tensor):
        raise ForeignSetError(f"{path} holds a {type(obj).__name__}, not a tensor")
    return obj.detach()


def import_pt(
    images: str | os.PathLike[str],
    subset: str | Subset,
    *,
    labels: str | os.PathLike[str] | None = None,
    lr: float | str | os.PathLike[str] | None = None,
    pixel_range: bool = False,
    method: str = "imported",
) -> DistilledSet:
    """A set from ``.pt`` tensors: images (N, 3, R, R), optional labels (int (N,) or logits (N, C)), optional lr.

    Images are taken to be in the ImageNet-normalised space (as the DD code keeps them) unless
    ``pixel_range`` says they are pixels in [0, 1]. Without labels, the images must be class-major with the
    same number per class (the DD convention), and get hard labels ``0,0,..,1,1,..``. ``lr`` is a number or a
    ``.pt`` file holding a scalar tensor (DATM/EDF's learned ``syn_lr``).
    """
    sub = get_subset(subset) if isinstance(subset, str) else subset
    c = sub.num_classes
    x = _load_tensor(Path(images), "images", ("images", "image", "data", "x")).float()
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != x.shape[3]:
        raise ForeignSetError(f"{images}: images must be (N, 3, R, R), got {tuple(x.shape)}")
    if pixel_range:
        x = _normalize(x)
    n = x.shape[0]
    if labels is not None:
        y = _load_tensor(Path(labels), "labels", ("labels", "label", "targets", "y"))
        if y.is_floating_point() and y.ndim == 2:
            y = y.float()
            if y.shape != (n, c):
                raise ForeignSetError(f"{labels}: soft labels must be ({n}, {c}) for {n} images of {sub.name}, "
                                   f"got {tuple(y.shape)}")
        elif y.ndim == 1:
            y = y.long()
            if y.shape[0] != n or (n and not 0 <= int(y.min()) <= int(y.max()) < c):
                raise ForeignSetError(f"{labels}: hard labels must be {n} values in 0..{c - 1}")
        else:
            raise ForeignSetError(f"{labels}: labels must be int (N,) or float logits (N, C), got {y.dtype} {tuple(y.shape)}")
    else:
        if n % c:
            raise ForeignSetError(f"{images}: {n} images do not split evenly into {c} classes; pass --labels")
        y = torch.arange(c).repeat_interleave(n // c)
    learned = _read_lr(lr)
    meta: dict[str, Any] = {"method": method, "subset": sub.name, "subset_sha256": sub.sha256(), "ipc": n // c,
                            "imported_from": {"images": str(images), "labels": str(labels) if labels else None,
                                              "lr": str(lr) if lr is not None else None, "pixel_range": pixel_range}}
    return DistilledSet(x.contiguous(), y.contiguous(), learned, meta)


def _read_lr(lr: float | str | os.PathLike[str] | None) -> float | None:
    if lr is None:
        return None
    if isinstance(lr, (int, float)):
        return float(lr)
    if isinstance(lr, str):
        try:
            return float(lr)
        except ValueError:
            pass  # a file name
    t = _load_tensor(Path(lr), "lr", ("lr", "syn_lr"))
    if t.numel() != 1:
        raise ForeignSetError(f"{lr}: the lr file must hold one number, got shape {tuple(t.shape)}")
    return float(t.reshape(()).item())


def import_png_folder(folder: str | os.PathLike[str], subset: str | Subset, *, lr: float | None = None,
                      method: str = "imported") -> DistilledSet:
    """A set from ``folder/<class>/*.png|jpg`` (``<class>`` a wnid of the subset or a local label), hard labels."""
    sub = get_subset(subset) if isinstance(subset, str) else subset
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    by_label: dict[int, Path] = {}
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        if d.name in sub.wnids:
            c = sub.local_label(d.name)
        elif d.name.isdigit() and int(d.name) < sub.num_classes:
            c = int(d.name)
        else:
            raise ForeignSetError(f"{d}: class folders must be named by a wnid of {sub.name} or a label 0..{sub.num_classes - 1}")
        if c in by_label:
            raise ForeignSetError(f"{d} and {by_label[c]} are both class {c}")
        by_label[c] = d
    if not by_label:
        raise ForeignSetError(f"{folder} has no class folders (expected {folder}/<wnid or label>/*.png)")
    images, labels = [], []
    for c in sorted(by_label):
        files = sorted(p for p in by_label[c].iterdir() if p.suffix.lower() in imagenet.IMAGE_EXTENSIONS)
        for p in files:
            img = imagenet.read_image(p)
            if images and img.shape != images[0].shape:
                raise ForeignSetError(f"{p} is {tuple(img.shape)}, the first image was {tuple(images[0].shape)}; "
                                   "all images must have one square size")
            images.append(img)
            labels.append(c)
    if not images:
        raise ForeignSetError(f"{folder} holds no images")
    x = torch.stack(images)
    if x.shape[2] != x.shape[3]:
        raise ForeignSetError(f"images are {x.shape[2]}x{x.shape[3]}; distilled images must be square")
    counts = torch.bincount(torch.tensor(labels), minlength=sub.num_classes)
    meta = {"method": method, "subset": sub.name, "subset_sha256": sub.sha256(),
            "ipc": int(counts.min()), "imported_from": {"png_folder": str(folder)}}
    return DistilledSet(_normalize(x.float() / 255), torch.tensor(labels, dtype=torch.int64), lr, meta)


def export_png_folder(ds: DistilledSet, folder: str | os.PathLike[str], subset: str | Subset) -> Path:
    """Write ``folder/<wnid>/<i>.png`` (hard labels, or the argmax of soft ones), atomically."""
    from torchvision.io import encode_png

    sub = get_subset(subset) if isinstance(subset, str) else subset
    pixels, labels = ds.to_uint8(), ds.hard_labels()
    with atomic_path(folder) as tmp:
        for i, (img, c) in enumerate(zip(pixels, labels.tolist())):
            d = tmp / sub.wnids[c]
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{i:05d}.png").write_bytes(encode_png(img).numpy().tobytes())
    return Path(folder)


def grid_image(ds: DistilledSet, *, max_per_class: int | None = None, padding: int = 2) -> torch.Tensor:
    """uint8 (3, H, W): one row per class (by hard label), its images left to right."""
    from torchvision.utils import make_grid

    pixels, labels = ds.to_uint8(), ds.hard_labels()
    classes = sorted(set(labels.tolist()))
    rows = [pixels[labels == c][:max_per_class] for c in classes]
    width = max(len(r) for r in rows)
    blank = torch.zeros_like(pixels[0])
    cells = [img for r in rows for img in [*r, *[blank] * (width - len(r))]]
    return make_grid(torch.stack(cells), nrow=width, padding=padding, pad_value=255)


def save_grid(ds: DistilledSet, path: str | os.PathLike[str], *, max_per_class: int | None = None) -> Path:
    """Write :func:`grid_image` as a PNG, atomically."""
    from torchvision.io import encode_png

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"--out {path} must end in .png")
    atomic_write_bytes(path, encode_png(grid_image(ds, max_per_class=max_per_class)).numpy().tobytes())
    return path
