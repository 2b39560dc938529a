"""ImageNet-1K: the 1000 classes (wnid, standard index, names) and reading images from an ImageNet folder.

The standard index of a class is its position in the sorted list of wnids, which is also the order
``torchvision.datasets.ImageFolder`` gives over ``train/``. The table ships as package data
(``resources/imagenet_classes.tsv``: index, wnid, names), so nothing here needs timm or the network.
"""

from __future__ import annotations

import functools
import io
import logging
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

log = logging.getLogger(__name__)

NUM_CLASSES = 1000
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageNetClass:
    index: int
    wnid: str
    names: tuple[str, ...]

    @property
    def name(self) -> str:
        """The first (most common) human-readable name."""
        return self.names[0]


@functools.cache
def classes() -> tuple[ImageNetClass, ...]:
    """All 1000 classes in standard index order."""
    text = resources.files("compdd.resources").joinpath("imagenet_classes.tsv").read_text("utf-8")
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        idx, wnid, names = line.split("\t")
        out.append(ImageNetClass(int(idx), wnid, tuple(n.strip() for n in names.split(","))))
    assert [c.index for c in out] == list(range(NUM_CLASSES)), "imagenet_classes.tsv is corrupt"
    return tuple(out)


@functools.cache
def _by_wnid() -> dict[str, ImageNetClass]:
    return {c.wnid: c for c in classes()}


def wnids() -> list[str]:
    return [c.wnid for c in classes()]


def is_wnid(wnid: str) -> bool:
    return wnid in _by_wnid()


def lookup(key: str | int) -> ImageNetClass:
    """A class by wnid (``"n01440764"``) or by standard index (``0``)."""
    if isinstance(key, int):
        if not 0 <= key < NUM_CLASSES:
            raise KeyError(f"ImageNet-1K index {key} is out of range 0..999")
        return classes()[key]
    try:
        return _by_wnid()[key]
    except KeyError:
        raise KeyError(f"{key!r} is not an ImageNet-1K wnid (expected e.g. 'n01440764')") from None


def index_of(wnid: str) -> int:
    return lookup(wnid).index


def name_of(key: str | int) -> str:
    return lookup(key).name


def find_by_name(name: str) -> list[ImageNetClass]:
    """Classes any of whose names equals ``name`` (case-insensitive)."""
    low = name.strip().lower()
    return [c for c in classes() if any(n.lower() == low for n in c.names)]


# ---------------------------------------------------------------------------------------------
# Reading an ImageNet folder


def split_dir(root: str | os.PathLike[str], split: str) -> Path:
    """``root/split``, with an error that says what layout is expected."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"ImageNet root {str(root)!r} does not exist; pass --imagenet-root pointing at the folder holding train/ and val/")
    d = root / split
    if not d.is_dir():
        raise FileNotFoundError(
            f"{str(d)!r} is missing: an ImageNet root must hold {split}/<wnid>/*.JPEG "
            f"(for a flat val/ folder, sort it into wnid folders first)"
        )
    return d


def list_images(root: str | os.PathLike[str], split: str, wnid: str) -> list[Path]:
    """Image files of one class in one split, sorted by name (a stable order for seeds and shards)."""
    d = split_dir(root, split) / wnid
    if not d.is_dir():
        raise FileNotFoundError(f"class folder {str(d)!r} is missing from the ImageNet tree at {str(root)!r}")
    return sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


class UnreadableImage(ValueError):
    """The file is not an image we can decode (truncated, empty, not an image format)."""


def decode_image(data: bytes, source: str = "<bytes>") -> torch.Tensor:
    """Decode JPEG/PNG bytes to a uint8 RGB tensor (3, H, W).

    ``torchvision.io.decode_image`` handles JPEG (grayscale/CMYK are converted to RGB) and PNG
    whatever the file extension says; PIL is the fallback for the rest. Raises ``UnreadableImage``.
    """
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_image as tv_decode

    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else None
    if buf is None:
        raise UnreadableImage(f"{source}: empty file")
    try:
        return tv_decode(buf, mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as first:
        try:
            from PIL import Image

            with Image.open(io.BytesIO(data)) as im:
                arr = torch.frombuffer(bytearray(im.convert("RGB").tobytes()), dtype=torch.uint8)
                w, h = im.size
            return arr.view(h, w, 3).permute(2, 0, 1).contiguous()
        except Exception as second:  # PIL raises many types for bad files
            raise UnreadableImage(f"{source}: cannot decode ({first}; PIL: {second})") from second


def read_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read one image file as uint8 RGB (3, H, W); raises ``UnreadableImage`` for a bad file."""
    p = Path(path)
    return decode_image(p.read_bytes(), str(p))
