"""Subsets as tensors: one uint8 tensor (N, 3, R, R) per split, with labels and the class map, cached.

``load_tensors(subset, split, res, source=...)`` reads from an ImageNet folder, a ``compdd export`` folder or the
Hub; ``load_tensors_from_imagenet`` is the ImageNet-folder case.

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
from collections.abc import Callable, Iterable, Iterator
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

    items = ((c, p.read_bytes, str(p.relative_to(root))) for c, p in files)
    images, labels, skipped = _decode_all(items, len(files), res, resize, f"reading {sub.name}/{split} @{res}px", progress)
    st = SubsetTensors(images, labels, sub.wnids, sub.name, split,
                       {"source": "imagenet", "root": str(root), "res": res, "resize": resize, "skipped": skipped})
    if cache:
        with atomic_path(path) as tmp:
            save_file({"images": st.images, "labels": st.labels}, str(tmp),
                      metadata={"meta": json.dumps(st.meta), "wnids": json.dumps(list(sub.wnids))})
    return st


def _decode_all(items: Iterable[tuple[int, bytes | Callable[[], bytes], str]], total: int, res: int,
                rule: ResizeRule, desc: str, progress: bool) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Decode and resize ``items`` (label, bytes or a reader, name) into uint8 (n, 3, res, res) + labels, in order.

    Undecodable images are skipped and their names returned. Items are consumed one at a time, so memory holds
    one encoded image besides the output. torch runs with one intra-op thread meanwhile: per-image ops are too small
    to share, and on a busy machine the idle threads' spin-waits made the loop 5-10x slower (bench/load_subset.py).
    """
    from tqdm.auto import tqdm

    images = torch.empty((total, 3, res, res), dtype=torch.uint8)
    labels = torch.empty(total, dtype=torch.int64)
    skipped: list[str] = []
    n, threads = 0, torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for c, data, name in tqdm(items, total=total, desc=desc, unit="img", disable=not progress):
            try:
                img = imagenet.decode_image(data() if callable(data) else data, name)
            except imagenet.UnreadableImage as e:
                log.warning("skipping %s", e)
                skipped.append(name)
                continue
            images[n], labels[n] = resize_uint8(img, res, rule), c
            n += 1
    finally:
        torch.set_num_threads(threads)
    if n < total:
        images, labels = images[:n].clone(), labels[:n].clone()
    return images, labels, skipped


def load_tensors(
    subset: str | Subset,
    split: str = "train",
    res: int = 128,
    *,
    source: Literal["imagenet", "local", "hub"] = "imagenet",
    imagenet_root: str | os.PathLike[str] | None = None,
    path: str | os.PathLike[str] | None = None,
    repo_id: str | None = None,
    revision: str | None = None,
    definition: str | os.PathLike[str] | None = None,
    resize: ResizeRule = "shorter-crop",
    cache: bool = True,
    progress: bool = True,
    endpoint: str | None = None,
    token: str | bool | None = None,
) -> SubsetTensors:
    """One split (``train`` or ``val``/``validation``) of a subset as uint8 tensors at ``res`` px, from any source.

    Sources (see :func:`compdd.hub.load_subset`): ``imagenet`` (``imagenet_root``), ``local`` (``path`` of a
    ``compdd export`` folder) or ``hub`` (``repo_id``, ``revision``). All three give identical tensors for the same
    images. The result is cached under ``COMPDD_HOME/tensors``, keyed by source, revision (the commit for ``hub``,
    file sizes and times for ``local``), the subset's hash, split, resolution and resize rule.
    """
    from compdd.hub import layout
    from compdd.hub.load import REPO_ENV, check_source, hub_snapshot, local_folder, resolve_subset

    check_source(source)
    sub = resolve_subset(subset, definition)
    in_split = layout.imagenet_split(split)
    if res < 1:
        raise ValueError(f"resolution must be positive, got {res}")
    if source == "imagenet":
        if imagenet_root is None:
            raise ValueError("source='imagenet' needs imagenet_root= (the folder holding train/ and val/)")
        return load_tensors_from_imagenet(sub, imagenet_root, in_split, res, resize=resize, cache=cache,
                                          progress=progress)
    if source == "local":
        folder = local_folder(path)
        origin = {"source": "local", "path": str(folder)}
    else:
        folder = hub_snapshot(repo_id, sub.name, revision=revision, endpoint=endpoint, token=token, split=split)
        origin = {"source": "hub", "repo_id": repo_id or os.environ.get(REPO_ENV), "revision": folder.name}
    files = layout.data_files(folder, sub.name, split)
    stamp = [(f.relative_to(folder).as_posix(), f.stat().st_size) + ((f.stat().st_mtime_ns,) if source == "local" else ())
             for f in files]
    key = {**origin, "files": stamp, "subset": sub.name, "subset_sha256": sub.sha256(), "split": in_split,
           "res": res, "resize": resize}
    cpath = _cache_path(key)
    if cache and cpath.is_file():
        return _read_cache(cpath, sub, in_split)
    total = _check_parquet(files, sub)
    desc = f"reading {sub.name}/{in_split} @{res}px"
    images, labels, skipped = _decode_all(_parquet_rows(files, sub), total, res, resize, desc, progress)
    st = SubsetTensors(images, labels, sub.wnids, sub.name, in_split,
                       {**origin, "res": res, "resize": resize, "skipped": skipped})
    if cache:
        with atomic_path(cpath) as tmp:
            save_file({"images": st.images, "labels": st.labels}, str(tmp),
                      metadata={"meta": json.dumps(st.meta), "wnids": json.dumps(list(sub.wnids))})
    return st


def _check_parquet(files: list[Path], sub: Subset) -> int:
    """Check every shard's ClassLabel names against the subset; returns the number of rows."""
    import pyarrow.parquet as pq
    from datasets import Features

    total = 0
    for f in files:
        pf = pq.ParquetFile(f)
        names = Features.from_arrow_schema(pf.schema_arrow)["label"].names
        if list(names) != list(sub.wnids):
            raise ValueError(f"{f} has classes {list(names)} but subset {sub.name!r} ({sub.definition or '?'}) lists "
                             f"{list(sub.wnids)} (order = local labels); pass definition= the file it was exported from")
        total += pf.metadata.num_rows
    return total


def _parquet_rows(files: list[Path], sub: Subset) -> Iterator[tuple[int, bytes, str]]:
    import pyarrow.parquet as pq

    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=256, columns=["image", "label", "wnid"]):
            for row in batch.to_pylist():
                label, img = row["label"], row["image"]
                if sub.wnids[label] != row["wnid"]:
                    raise ValueError(f"{f}: row {img['path']} has label {label} but wnid {row['wnid']}")
                yield label, img["bytes"], img["path"] or f.name


def _read_cache(path: Path, sub: Subset, split: str) -> SubsetTensors:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        md = f.metadata()
    if json.loads(md["wnids"]) != list(sub.wnids):
        raise RuntimeError(f"cache file {path} does not match subset {sub.name}; delete it and retry")
    t = load_file(str(path))
    return SubsetTensors(t["images"], t["labels"], sub.wnids, sub.name, split, json.loads(md["meta"]))
