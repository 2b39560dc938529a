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


# ---------------------------------------------------------------------------------------------
# Checking and preparing an ImageNet tree

TRAIN_IMAGES = 1_281_167
VAL_IMAGES = 50_000
VAL_PER_CLASS = 50


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a tree: ``severity`` is ``error`` (scoring will fail) or ``warning``."""

    severity: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.severity}: {self.message}" + (f"\n  fix: {self.fix}" if self.fix else "")


@dataclass
class TreeCheck:
    """What ``check_imagenet`` found: per-split image counts per wnid, problems, and decode statistics."""

    root: str
    counts: dict[str, dict[str, int]]
    problems: list[Problem]
    decode: dict[str, int] | None = None
    odd_files: dict[str, list[str]] | None = None

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    def summary(self) -> str:
        lines = [f"ImageNet tree at {self.root}"]
        for split, per in self.counts.items():
            n = sum(per.values())
            lo, hi = (min(per.values()), max(per.values())) if per else (0, 0)
            lines.append(f"  {split}: {len(per)} of {NUM_CLASSES} classes, {n:,} images (per class {lo}..{hi})")
        if self.decode is not None:
            lines.append("  decoded: " + ", ".join(f"{k} {v:,}" for k, v in self.decode.items()))
        lines += [f"  {p}".replace("\n", "\n  ") for p in self.problems]
        lines.append("  OK" if self.ok else "  NOT OK: fix the errors above")
        return "\n".join(lines)


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()


def classify_image_file(path: str | os.PathLike[str]) -> str:
    """``ok``, ``grayscale``, ``cmyk``, ``png-named-jpeg`` or ``unreadable`` (full decode, as scoring does).

    The first three kinds decode fine through :func:`read_image` (converted to RGB); they are reported because
    ImageNet's train split holds a few of each and other readers trip over them.
    """
    from PIL import Image

    p = Path(path)
    try:
        with Image.open(p) as im:
            fmt, mode = im.format, im.mode
        read_image(p)
    except (UnreadableImage, OSError, ValueError, SyntaxError):
        return "unreadable"
    if fmt == "PNG" and p.suffix.lower() in (".jpeg", ".jpg"):
        return "png-named-jpeg"
    if mode in ("L", "LA", "1", "I", "I;16"):
        return "grayscale"
    if mode == "CMYK":
        return "cmyk"
    return "ok"


def check_imagenet(root: str | os.PathLike[str], splits: tuple[str, ...] = ("train", "val"), *,
                   full: bool = False, decode: bool = False, workers: int | None = None,
                   progress: bool = True) -> TreeCheck:
    """Check the standard layout ``root/<split>/<wnid>/*.JPEG`` and say what is wrong and how to fix it.

    ``full`` requires all 1000 classes and the standard image counts (else a partial tree only warns).
    ``decode`` reads every image and counts grayscale, CMYK, PNG-named-JPEG and unreadable files.
    """
    root = Path(root)
    problems: list[Problem] = []
    counts: dict[str, dict[str, int]] = {}
    if not root.is_dir():
        problems.append(Problem("error", f"{root} does not exist or is not a folder",
                                "pass --imagenet-root pointing at the folder that holds train/ and val/"))
        return TreeCheck(str(root), counts, problems)
    files: list[Path] = []
    for split in splits:
        d = root / split
        if not d.is_dir():
            problems.append(Problem("error", f"{d} is missing",
                                    f"an ImageNet root holds {split}/<wnid>/*.JPEG; extract ILSVRC2012_img_{split}.tar there"))
            continue
        entries = sorted(d.iterdir())
        loose = [e for e in entries if _is_image(e)]
        if loose:
            fix = ("sort them into wnid folders: compdd prepare-imagenet-val --imagenet-root "
                   f"{root} --labels LOC_val_solution.csv (or the devkit ground truth with --synset-map)"
                   if split == "val" else f"move them into {split}/<wnid>/ folders")
            problems.append(Problem("error", f"{d} holds {len(loose):,} images directly (flat layout, e.g. {loose[0].name})", fix))
        dirs = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
        unknown = [e.name for e in dirs if not is_wnid(e.name)]
        if unknown:
            problems.append(Problem("warning", f"{split}/ has {len(unknown)} folder(s) that are not ImageNet-1K wnids "
                                    f"({', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''}); they are ignored",
                                    "remove or move them if they are not meant to be there"))
        per: dict[str, int] = {}
        other: list[str] = []
        for e in dirs:
            if not is_wnid(e.name):
                continue
            imgs = []
            for f in e.iterdir():
                if _is_image(f):
                    imgs.append(f)
                elif not f.name.startswith("."):
                    other.append(f"{split}/{e.name}/{f.name}")
            per[e.name] = len(imgs)
            files += imgs
        counts[split] = dict(sorted(per.items()))
        if other:
            problems.append(Problem("warning", f"{split}/ has {len(other)} non-image file(s) in class folders "
                                    f"(e.g. {other[0]}); they are ignored"))
        empty = [w for w, n in per.items() if n == 0]
        if empty:
            problems.append(Problem("error", f"{split}/ has {len(empty)} empty class folder(s): {', '.join(empty[:5])}",
                                    "re-extract those classes or remove the empty folders"))
        missing = NUM_CLASSES - len(per)
        if missing and (per or not loose):
            sev = "error" if full else "warning"
            problems.append(Problem(sev, f"{split}/ has {len(per)} of {NUM_CLASSES} ImageNet-1K classes",
                                    "a partial tree is fine for scoring chosen classes or subsets; --all needs all 1000"))
        expected = {"train": TRAIN_IMAGES, "val": VAL_IMAGES}.get(split)
        total = sum(per.values())
        if expected and len(per) == NUM_CLASSES and total != expected:
            problems.append(Problem("error" if full else "warning",
                                    f"{split}/ holds {total:,} images; the ILSVRC2012 {split} split has {expected:,}",
                                    "an archive was extracted only partly; extract it again"))
        if split == "val" and len(per) == NUM_CLASSES:
            odd = [w for w, n in per.items() if n != VAL_PER_CLASS]
            if odd:
                problems.append(Problem("warning", f"val/ has {len(odd)} class(es) without {VAL_PER_CLASS} images "
                                        f"(e.g. {odd[0]}: {per[odd[0]]})", "check how val/ was sorted into class folders"))
    decoded = None
    odd_files = None
    if decode and files:
        decoded, odd_files = _decode_census(files, root, workers, progress)
        if decoded.get("unreadable"):
            problems.append(Problem("warning", f"{decoded['unreadable']} unreadable image(s), e.g. "
                                    f"{odd_files['unreadable'][0]}; scoring skips and counts them",
                                    "re-download those files if you need them"))
    return TreeCheck(str(root), counts, problems, decoded, odd_files)


def _decode_census(files: list[Path], root: Path, workers: int | None, progress: bool
                   ) -> tuple[dict[str, int], dict[str, list[str]]]:
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    kinds = ("ok", "grayscale", "cmyk", "png-named-jpeg", "unreadable")
    census = dict.fromkeys(kinds, 0)
    odd: dict[str, list[str]] = {k: [] for k in kinds if k != "ok"}
    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as ex:
        results = ex.map(classify_image_file, files, chunksize=64)
        for f, kind in tqdm(zip(files, results), total=len(files), desc="decoding", unit="img", disable=not progress):
            census[kind] += 1
            if kind != "ok":
                odd[kind].append(f.relative_to(root).as_posix())
    return census, odd


@dataclass
class ValPlan:
    """How ``prepare_imagenet_val`` sorts a flat val/ folder: ``moves`` (file name -> wnid) and what does not match."""

    moves: dict[str, str]
    already_sorted: int
    unlabelled: list[str]
    missing: int


def read_val_labels(labels: str | os.PathLike[str], synset_map: str | os.PathLike[str] | None = None
                    ) -> dict[str, str]:
    """Image stem (``ILSVRC2012_val_00000001``) -> wnid, from one of the usual label files.

    - a CSV with a header naming the image (``ImageId``/``filename``/``file``/``image``) and the class
      (``PredictionString`` as in Kaggle's ``LOC_val_solution.csv``, ``wnid``, ``label`` or ``class``; a class may
      be a wnid or a standard index 0..999);
    - a text file with one wnid per line, in ``ILSVRC2012_val_00000001..`` order;
    - the devkit's ``ILSVRC2012_validation_ground_truth.txt`` (ILSVRC2012_IDs 1..1000, one per line) together with
      ``synset_map``, a file of ``wnid ILSVRC2012_ID [name]`` lines (the devkit's ``map_clsloc.txt``). The IDs are
      not the sorted-wnid index, so the map is required.
    """
    import csv

    path = Path(labels)
    if not path.is_file():
        raise FileNotFoundError(f"labels file {str(path)!r} not found")
    text = path.read_text("utf-8-sig")
    first = text.splitlines()[0] if text.strip() else ""
    if "," in first:
        rows = list(csv.DictReader(text.splitlines()))
        cols = {c.lower(): c for c in (rows[0].keys() if rows else [])}
        img_col = next((cols[c] for c in ("imageid", "filename", "file", "image", "path") if c in cols), None)
        cls_col = next((cols[c] for c in ("predictionstring", "wnid", "label", "class") if c in cols), None)
        if img_col is None or cls_col is None:
            raise ValueError(f"{path}: a CSV needs an image column (ImageId/filename) and a class column "
                             f"(PredictionString/wnid/label); found {list(cols.values())}")
        out = {}
        for r in rows:
            token = (r[cls_col] or "").split()
            if not token:
                raise ValueError(f"{path}: row for {r[img_col]!r} has no class")
            out[Path(r[img_col]).stem] = _as_wnid(token[0], path)
        return out
    tokens = [ln.split()[0] for ln in text.splitlines() if ln.strip()]
    if tokens and all(is_wnid(t) for t in tokens):
        return {f"ILSVRC2012_val_{i + 1:08d}": w for i, w in enumerate(tokens)}
    if tokens and all(t.isdigit() for t in tokens):
        if synset_map is None:
            raise ValueError(f"{path} holds ILSVRC2012_IDs (the devkit ground truth), which are not the sorted-wnid "
                             "index; pass --synset-map map_clsloc.txt (lines 'wnid id name') or use LOC_val_solution.csv")
        id_to_wnid = {}
        for ln in Path(synset_map).read_text("utf-8").splitlines():
            parts = ln.split()
            if len(parts) >= 2 and is_wnid(parts[0]) and parts[1].isdigit():
                id_to_wnid[int(parts[1])] = parts[0]
        if len(id_to_wnid) != NUM_CLASSES:
            raise ValueError(f"{synset_map}: expected {NUM_CLASSES} 'wnid id' lines, found {len(id_to_wnid)}")
        try:
            return {f"ILSVRC2012_val_{i + 1:08d}": id_to_wnid[int(t)] for i, t in enumerate(tokens)}
        except KeyError as e:
            raise ValueError(f"{path}: ILSVRC2012_ID {e.args[0]} is not in {synset_map}") from None
    raise ValueError(f"{path}: not a label file I know (CSV with ImageId/PredictionString, one wnid per line, "
                     "or the devkit ground truth with --synset-map)")


def _as_wnid(token: str, src: Path) -> str:
    if is_wnid(token):
        return token
    if token.isdigit() and 0 <= int(token) < NUM_CLASSES:
        return wnids()[int(token)]
    raise ValueError(f"{src}: {token!r} is neither an ImageNet-1K wnid nor an index 0..999")


def plan_val_sort(val_dir: str | os.PathLike[str], labels: dict[str, str]) -> ValPlan:
    d = Path(val_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"{d} is not a folder; pass the ImageNet root holding val/")
    loose = sorted(p for p in d.iterdir() if _is_image(p))
    moves, unlabelled = {}, []
    for p in loose:
        w = labels.get(p.stem)
        if w is None:
            unlabelled.append(p.name)
        else:
            moves[p.name] = w
    already = sum(1 for stem, w in labels.items() if any((d / w / f"{stem}{ext}").exists() for ext in (".JPEG", ".jpeg", ".jpg", ".png")))
    return ValPlan(moves, already, unlabelled, len(labels) - len(moves) - already)


def prepare_imagenet_val(root: str | os.PathLike[str], labels: str | os.PathLike[str], *,
                         synset_map: str | os.PathLike[str] | None = None, dry_run: bool = False) -> ValPlan:
    """Sort a flat ``root/val/*.JPEG`` into ``root/val/<wnid>/`` (moves files; safe to re-run after an interruption)."""
    d = Path(root) / "val"
    plan = plan_val_sort(d, read_val_labels(labels, synset_map))
    if not dry_run:
        for name, w in plan.moves.items():
            (d / w).mkdir(exist_ok=True)
            os.replace(d / name, d / w / name)
    return plan
