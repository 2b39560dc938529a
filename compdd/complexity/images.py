"""Reading images for scoring: the sorted file list of a tree, and a Dataset that decodes, squashes and never crashes.

Scoring squashes every image to ``size`` x ``size`` (as the public Comp-DD scripts did), so the whole image is
measured. A file that cannot be decoded yields ``None`` and is counted by the caller, not raised: one bad file in
a million must not stop a run. Grayscale, CMYK and PNG-named-JPEG files decode to RGB (``imagenet.decode_image``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from compdd import imagenet
from compdd.data import resize_uint8

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageItem:
    path: str  # relative to the root, POSIX separators
    wnid: str
    label: int  # standard ImageNet-1K index


def list_items(root: str | os.PathLike[str], split: str, wnids: list[str], limit_per_class: int | None = None
               ) -> list[ImageItem]:
    """All images of ``wnids`` in ``root/split``, in wnid order then file-name order (the order shards follow)."""
    root = Path(root)
    items = []
    for w in sorted(wnids):
        files = imagenet.list_images(root, split, w)
        if limit_per_class is not None:
            files = files[:limit_per_class]
        items += [ImageItem(p.relative_to(root).as_posix(), w, imagenet.index_of(w)) for p in files]
    return items


def read_resized(path: str | os.PathLike[str], size: int) -> torch.Tensor:
    """uint8 (3, size, size), squashed; raises ``imagenet.UnreadableImage`` for a bad file."""
    return resize_uint8(imagenet.read_image(path), size, "squash")


class ImageDataset(torch.utils.data.Dataset):
    """``(index, image or None)`` for each item; ``None`` marks an unreadable file."""

    def __init__(self, root: str | os.PathLike[str], items: list[ImageItem], size: int) -> None:
        self.root, self.items, self.size = Path(root), items, size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str]:
        try:
            return i, read_resized(self.root / self.items[i].path, self.size), ""
        except (imagenet.UnreadableImage, OSError) as e:
            log.warning("skipping %s", e)
            return i, None, str(e)


def collate(batch: list[tuple[int, torch.Tensor | None, str]]) -> tuple[list[int], torch.Tensor, dict[int, str]]:
    """Stack the readable images; return their item indices and the errors of the others."""
    ok = [(i, img) for i, img, _ in batch if img is not None]
    bad = {i: err for i, img, err in batch if img is None}
    images = torch.stack([img for _, img in ok]) if ok else torch.empty(0, 3, 1, 1, dtype=torch.uint8)
    return [i for i, _ in ok], images, bad


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (N, 3, H, W) on any device -> float32 normalised."""
    m = torch.tensor(mean, device=images.device).view(1, 3, 1, 1) * 255
    s = torch.tensor(std, device=images.device).view(1, 3, 1, 1) * 255
    return (images.float() - m) / s
