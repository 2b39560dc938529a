"""A generated sample ImageNet: the embedded default for the main job and the integration-test fixture.

It writes the standard layout (``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG``) for the classes of
chosen subsets. Each class is a textured, coloured shape (shape, hue and texture derived from its
ImageNet index), so a CNN can learn it. The benchmark's easy/hard structure is reproduced for a reason:
classes of a ``-hard`` Comp-DD subset draw **small objects on busy backgrounds** (many distractor
shapes, strong noise), classes of an ``-easy`` subset **large objects on plain backgrounds**. A class
in neither (the classic subsets) sits in between. Grad-CAM complexity, 1 - share of activated pixels,
is therefore higher for hard classes because their discriminative area is smaller.

Everything is a pure function of ``seed``: the same arguments give the same pixels.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from compdd import benchmark, imagenet
from compdd.paths import atomic_path

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring", "star", "bar")
TEXTURES = ("solid", "stripes", "checker")


@dataclass(frozen=True)
class Style:
    """How hard images of a class are to read: object scale range and background clutter."""

    difficulty: str
    scale: tuple[float, float]  # object diameter as a fraction of the image side
    distractors: tuple[int, int]
    noise: float  # std of pixel noise, in 0..255 units


STYLES = {
    "easy": Style("easy", (0.60, 0.85), (0, 1), 6.0),
    "medium": Style("medium", (0.40, 0.55), (2, 4), 12.0),
    "hard": Style("hard", (0.22, 0.32), (8, 14), 24.0),
}


@dataclass(frozen=True)
class ClassLook:
    wnid: str
    shape: str
    texture: str
    hue: float
    style: Style


def class_look(wnid: str, difficulty: str) -> ClassLook:
    idx = imagenet.index_of(wnid)
    return ClassLook(wnid, SHAPES[idx % len(SHAPES)], TEXTURES[(idx // len(SHAPES)) % len(TEXTURES)],
                     (idx * 0.6180339887) % 1.0, STYLES[difficulty])


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]) * 255


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r = np.hypot(u, v)
    if shape == "circle":
        return r <= 1
    if shape == "square":
        return np.maximum(abs(u), abs(v)) <= 0.8
    if shape == "triangle":
        return (v <= 0.7) & (abs(u) <= 0.55 * (v + 0.9))
    if shape == "diamond":
        return abs(u) + abs(v) <= 1
    if shape == "cross":
        return ((abs(u) <= 0.3) & (abs(v) <= 0.95)) | ((abs(v) <= 0.3) & (abs(u) <= 0.95))
    if shape == "ring":
        return (r <= 1) & (r >= 0.55)
    if shape == "star":
        return r <= 0.5 + 0.45 * np.cos(5 * np.arctan2(v, u))
    if shape == "bar":
        return (u / 1.0) ** 2 + (v / 0.4) ** 2 <= 1
    raise ValueError(shape)


def _paint(img: np.ndarray, rng: np.random.Generator, shape: str, texture: str, color: np.ndarray,
           diameter: float, center: tuple[float, float]) -> None:
    h, w, _ = img.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    rad = diameter / 2
    dx, dy = (xx - center[0]) / rad, (yy - center[1]) / rad
    u = np.cos(ang) * dx + np.sin(ang) * dy
    v = -np.sin(ang) * dx + np.cos(ang) * dy
    mask = _shape_mask(shape, u, v)
    if texture == "stripes":
        dark = np.sin(u * 7) > 0
    elif texture == "checker":
        dark = (np.floor(u * 2.5) + np.floor(v * 2.5)) % 2 == 0
    else:
        dark = np.zeros_like(mask)
    col = np.where(dark[..., None], color * 0.45, color)
    img[mask] = col[mask]


def render(look: ClassLook, rng: np.random.Generator, size: int) -> np.ndarray:
    """One image of class ``look`` as uint8 (size, size, 3)."""
    st = look.style
    base = _hsv_to_rgb(rng.uniform(), rng.uniform(0.05, 0.3), rng.uniform(0.35, 0.75))
    ramp = np.linspace(0.8, 1.2, size, dtype=np.float32)
    img = np.ones((size, size, 3), np.float32) * base * (ramp[:, None, None] if rng.uniform() < 0.5 else ramp[None, :, None])
    for _ in range(rng.integers(st.distractors[0], st.distractors[1] + 1)):
        col = _hsv_to_rgb(rng.uniform(), rng.uniform(0.1, 0.45), rng.uniform(0.3, 0.95))
        d = size * rng.uniform(0.1, 0.3)
        _paint(img, rng, SHAPES[rng.integers(len(SHAPES))], TEXTURES[rng.integers(len(TEXTURES))], col,
               d, (rng.uniform(0, size), rng.uniform(0, size)))
    hue = (look.hue + rng.normal(0, 0.02)) % 1.0
    color = _hsv_to_rgb(hue, rng.uniform(0.75, 1.0), rng.uniform(0.8, 1.0))
    d = size * rng.uniform(*st.scale)
    margin = d / 2
    c = (rng.uniform(margin, size - margin), rng.uniform(margin, size - margin))
    _paint(img, rng, look.shape, look.texture, color, d, c)
    img += rng.normal(0, st.noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def difficulties(subset_names: list[str]) -> dict[str, str]:
    """wnid -> difficulty for the classes of ``subset_names`` (Comp-DD role wins over 'medium')."""
    out: dict[str, str] = {}
    for name in subset_names:
        s = benchmark.get_subset(name)
        for w in s.wnids:
            d = s.difficulty or "medium"
            if out.get(w, "medium") == "medium":
                out[w] = d
    return out


@dataclass
class SampleInfo:
    root: str
    subsets: list[str]
    num_classes: int
    train_per_class: int
    val_per_class: int
    size: int
    seed: int


def make_sample_imagenet(
    out: str | os.PathLike[str],
    subsets: list[str] | None = None,
    *,
    train_per_class: int = 40,
    val_per_class: int = 10,
    size: int = 64,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> SampleInfo:
    """Write a sample ImageNet tree at ``out`` (atomically: it appears complete or not at all)."""
    from PIL import Image
    from tqdm.auto import tqdm

    subsets = list(subsets) if subsets else benchmark.list_subsets("*-easy") + benchmark.list_subsets("*-hard")
    for name in subsets:
        benchmark.get_subset(name)  # unknown names fail before any work
    if size < 16:
        raise ValueError(f"--size {size} is too small; use at least 16 px")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} already exists and is not empty; pass --overwrite or choose another folder")
    roles = difficulties(subsets)
    jobs = [(split, w, i) for w in sorted(roles) for split, n in (("train", train_per_class), ("val", val_per_class))
            for i in range(n)]
    with atomic_path(out) as tmp:
        for split, w, i in tqdm(jobs, desc="generating sample ImageNet", unit="img", disable=not progress):
            look = class_look(w, roles[w])
            ss = np.random.SeedSequence([seed, imagenet.index_of(w), 0 if split == "train" else 1, i])
            arr = render(look, np.random.default_rng(ss), size)
            d = tmp / split / w
            d.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="JPEG", quality=90)
            name = f"{w}_{i}.JPEG" if split == "train" else f"ILSVRC2012_val_{w}_{i:05d}.JPEG"
            (d / name).write_bytes(buf.getvalue())
        info = SampleInfo(str(out), subsets, len(roles), train_per_class, val_per_class, size, seed)
        looks = {w: {**asdict(class_look(w, roles[w])), "style": roles[w]} for w in sorted(roles)}
        (tmp / "sample-info.json").write_text(json.dumps({**asdict(info), "classes": looks}, indent=1))
    return info
