"""Scoring a tree: presets, the sharded and resumable run, torchrun rank splitting, and the merged outputs.

A run writes into one folder::

    run.json          the arguments that determine the numbers, the scorer, the file list hash (written first)
    shards/shard-NNNNN.parquet   one per ``shard_size`` images, written atomically as each finishes
    images.parquet    per image and layer: path, wnid, label, layer, fraction, complexity, pred, confidence, ...
    classes.csv       per class and layer: n, complexity mean/std, activated fraction, empty maps, scorer accuracy
    skipped.csv       files that could not be decoded (scored runs never stop for them)
    summary.json      counts

Shard ``k`` always covers images ``[k*shard_size, (k+1)*shard_size)`` of the sorted file list and its random seed
(Smooth Grad-CAM++ noise) depends only on ``(seed, k)``. So a restarted run skips finished shards and the merged
files are byte-identical to an uninterrupted run's, and under ``torchrun`` rank ``r`` of ``W`` computes the shards
``k % W == r`` and rank 0 merges them: the result does not depend on the number of ranks either.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from compdd import __version__, imagenet
from compdd.complexity.cam import FastGradCAM, TorchcamCAM, activated_fraction, last_block_name
from compdd.complexity.images import ImageDataset, ImageItem, collate, list_items, normalize
from compdd.complexity.scorer import Scorer, TrainConfig, load_scorer
from compdd.paths import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

FORMAT = "compdd-scores/1"
LAST = "last"


@dataclass(frozen=True)
class Preset:
    """A named, recorded choice of every knob that changes complexity numbers."""

    name: str
    cam: str  # "gradcam" | "smoothgradcampp"
    target: str  # "label" (ground truth) | "predicted"
    threshold: float
    comparison: str  # ">=" | ">"
    resolution: str  # "native" | "input" (bilinear upsample to the input size before thresholding)
    layers: tuple[str, ...]  # module names; "last" = the last block (layer4 of a ResNet)
    input_size: int
    weights: str
    description: str


PRESETS: dict[str, Preset] = {
    "gradcam-v1": Preset(
        "gradcam-v1", "gradcam", "label", 0.5, ">=", "native", (LAST,), 224, "resnet18.tv_in1k",
        "Grad-CAM at the last block, ground-truth class, per-image min-max, share of cells >= 0.5 (the paper's formula)"),
    "edf-code": Preset(
        "edf-code", "smoothgradcampp", "predicted", 0.5, ">", "native", ("layer1", "layer2", "layer3", "layer4"), 224,
        "resnet18.tv_in1k",
        "what the public Comp-DD scripts did: torchvision ResNet-18 V1, torchcam SmoothGradCAMpp (4 samples, std 0.3), "
        "predicted class, share of cells > 0.5 at native resolution, 224x224 squash, each of layer1..layer4"),
}


@dataclass(frozen=True)
class ScoreConfig:
    """Everything a scoring run needs. Fields in :meth:`identity` decide the numbers; a resume must match them."""

    root: str
    wnids: tuple[str, ...]
    out: str
    split: str = "train"
    preset: str = "gradcam-v1"
    weights: str | None = None  # None: the preset's; a path, a timm name, "random" or "train-on-tree"
    arch: str | None = None
    cam: str | None = None  # None: the preset's (same for the fields below)
    target: str | None = None
    threshold: float | None = None
    comparison: str | None = None
    resolution: str | None = None
    layers: tuple[str, ...] | None = None
    input_size: int | None = None
    engine: str = "auto"  # "auto" | "fast" | "torchcam"
    optimize: bool = True  # fast engine: fold BatchNorm + channels-last
    amp: bool = False  # fast engine: bfloat16 autocast for the trunk
    compile: bool = False  # fast engine: torch.compile the trunk
    batch_size: int = 64
    workers: int = 0
    device: str = "cpu"
    limit_per_class: int | None = None
    shard_size: int = 5000
    seed: int = 0
    cache_dir: str | None = None  # Hugging Face cache override for timm weights
    train_epochs: int = TrainConfig.epochs  # weights="train-on-tree": how long to train the scorer

    def resolved(self) -> dict[str, Any]:
        """The CAM settings after applying the preset and the overrides."""
        p = PRESETS[self.preset]
        return {
            "preset": p.name, "cam": self.cam or p.cam, "target": self.target or p.target,
            "threshold": p.threshold if self.threshold is None else self.threshold,
            "comparison": self.comparison or p.comparison, "resolution": self.resolution or p.resolution,
            "layers": list(self.layers or p.layers),
        }


@dataclass
class ScoreResult:
    out: Path
    complete: bool
    shards_total: int
    shards_done: int
    images: int
    scored: int = 0
    unreadable: int = 0
    empty_maps: int = 0
    files: dict[str, str] = field(default_factory=dict)


def shard_seed(seed: int, shard: int) -> int:
    return int(np.random.SeedSequence([seed, shard]).generate_state(1)[0])


def _items_sha256(items: list[ImageItem]) -> str:
    return hashlib.sha256("\n".join(f"{it.path}\t{it.label}" for it in items).encode()).hexdigest()


def resolve_weights(cfg: ScoreConfig) -> str:
    w = cfg.weights or PRESETS[cfg.preset].weights
    return str(Path(cfg.out) / "scorer.safetensors") if w == "train-on-tree" else w


def prepare_scorer(cfg: ScoreConfig, progress: bool = True) -> Scorer:
    """Load the scorer; for ``train-on-tree`` train it first (once: a resumed run reuses ``out/scorer.safetensors``)."""
    from compdd.complexity.scorer import train_scorer

    weights = resolve_weights(cfg)
    if (cfg.weights or "") == "train-on-tree" and not Path(weights).is_file():
        # every class of the tree, not only the scored ones: more classes make a better scorer
        present = sorted(p.name for p in imagenet.split_dir(cfg.root, "train").iterdir()
                         if p.is_dir() and imagenet.is_wnid(p.name))
        train_scorer(cfg.root, present, weights, TrainConfig(epochs=cfg.train_epochs, seed=cfg.seed),
                     split="train", device=cfg.device, progress=progress)
    return load_scorer(weights, arch=cfg.arch, input_size=cfg.input_size, cache_dir=cfg.cache_dir)


class _Engine:
    """Chooses the CAM implementation for a config and a scorer, and names the layers it produces."""

    def __init__(self, cfg: ScoreConfig, scorer: Scorer, settings: dict[str, Any]) -> None:
        model = scorer.model.to(cfg.device)
        last = last_block_name(model) if hasattr(model, "feature_info") else None
        layers = [last if name == LAST else name for name in settings["layers"]]
        if LAST in layers:
            raise ValueError("cannot tell the last block of this model; pass --layer NAME")
        fast_ok = settings["cam"] == "gradcam" and layers == [last] and hasattr(model, "forward_head")
        if cfg.engine == "fast" and not fast_ok:
            raise ValueError("--engine fast needs plain Grad-CAM (--cam gradcam) at the last block only "
                             f"({last}); use --engine torchcam or auto")
        if cfg.engine not in ("auto", "fast", "torchcam"):
            raise ValueError(f"--engine must be auto, fast or torchcam, got {cfg.engine!r}")
        self.name = "fast" if fast_ok and cfg.engine != "torchcam" else "torchcam"
        if self.name == "fast":
            self.impl: Callable = FastGradCAM(model, optimize=cfg.optimize, amp=cfg.amp, compile=cfg.compile)
        else:
            self.impl = TorchcamCAM(model, layers, settings["cam"])
        self.layers = layers


def _identity(cfg: ScoreConfig, scorer: Scorer, engine: _Engine, items: list[ImageItem]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "split": cfg.split, "classes": len(cfg.wnids), "images": len(items), "items_sha256": _items_sha256(items),
        "limit_per_class": cfg.limit_per_class,
        "cam": {**cfg.resolved(), "layers": engine.layers, "input_size": scorer.input_size, "resize": "squash"},
        "scorer": scorer.describe(),
        "engine": {"name": engine.name, "optimize": cfg.optimize if engine.name == "fast" else None,
                   "amp": cfg.amp if engine.name == "fast" else None,
                   "compile": cfg.compile if engine.name == "fast" else None, "batch_size": cfg.batch_size,
                   "device": torch.device(cfg.device).type},
        "shard_size": cfg.shard_size, "shards": max(1, math.ceil(len(items) / cfg.shard_size)), "seed": cfg.seed,
        "compdd_version": __version__, "torch_version": torch.__version__,
    }


def _diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {vb!r} -> {va!r}")
    return out


SCHEMA = pa.schema([
    ("path", pa.string()), ("wnid", pa.string()), ("label", pa.int16()), ("layer", pa.string()),
    ("fraction", pa.float64()), ("complexity", pa.float64()), ("empty_map", pa.bool_()),
    ("target", pa.int16()), ("pred", pa.int16()), ("confidence", pa.float32()), ("error", pa.string()),
])


def _shard_path(out: Path, k: int) -> Path:
    return out / "shards" / f"shard-{k:05d}.parquet"


def score(cfg: ScoreConfig, *, rank: int = 0, world_size: int = 1, merge: bool | None = None,
          max_shards: int | None = None, overwrite: bool = False, progress: bool = True,
          scorer: Scorer | None = None) -> ScoreResult:
    """Score the images of ``cfg.wnids`` in ``cfg.root/cfg.split``; resumable, shardable across ranks.

    ``rank``/``world_size``: this process computes shards ``k % world_size == rank`` (under torchrun pass the
    environment's values; the CLI does). ``merge`` (default: ``rank == 0``) writes the final files once every shard
    exists. ``max_shards`` stops after computing that many new shards (to split work into sessions, and to test
    resuming). ``overwrite`` discards a previous run in ``cfg.out`` made with different arguments.
    """
    if cfg.preset not in PRESETS:
        raise ValueError(f"unknown preset {cfg.preset!r}; choose from {', '.join(PRESETS)}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
    if cfg.shard_size < 1 or cfg.batch_size < 1:
        raise ValueError("--shard-size and --batch-size must be positive")
    out = Path(cfg.out)
    items = list_items(cfg.root, cfg.split, list(cfg.wnids), cfg.limit_per_class)
    if not items:
        raise ValueError(f"no images to score under {Path(cfg.root) / cfg.split} for {len(cfg.wnids)} class(es)")
    if overwrite and rank == 0 and (out / "run.json").exists():
        _clear(out)
    out.mkdir(parents=True, exist_ok=True)
    scorer = scorer or prepare_scorer(cfg, progress)
    settings = cfg.resolved()
    engine = _Engine(cfg, scorer, settings)
    ident = _identity(cfg, scorer, engine, items)
    manifest = out / "run.json"
    if manifest.exists():
        old = json.loads(manifest.read_text("utf-8"))
        if old != ident:
            raise FileExistsError(f"{out} holds a scoring run with other arguments ({'; '.join(_diff(ident, old)[:6])}); "
                                  "use another --out, or --overwrite to discard it")
    else:
        atomic_write_text(manifest, json.dumps(ident, indent=1, sort_keys=True) + "\n")

    n_shards = ident["shards"]
    mine = [k for k in range(n_shards) if k % world_size == rank]
    todo = [k for k in mine if not _shard_path(out, k).exists()]
    if max_shards is not None:
        todo = todo[:max_shards]
    from tqdm.auto import tqdm

    total = sum(len(items[k * cfg.shard_size:(k + 1) * cfg.shard_size]) for k in todo)
    with tqdm(total=total, desc=f"scoring {cfg.split} ({engine.name}, rank {rank}/{world_size})", unit="img",
              disable=not progress, smoothing=0.1) as bar:
        for k in todo:
            _score_shard(cfg, scorer, engine, settings, items, k, out, bar)
    done = sum(_shard_path(out, k).exists() for k in range(n_shards))
    result = ScoreResult(out, done == n_shards, n_shards, done, len(items))
    if (rank == 0 if merge is None else merge) and result.complete:
        return merge_shards(out)
    return result


def _score_shard(cfg: ScoreConfig, scorer: Scorer, engine: _Engine, settings: dict[str, Any],
                 items: list[ImageItem], k: int, out: Path, bar: Any) -> None:
    lo = k * cfg.shard_size
    shard = items[lo:lo + cfg.shard_size]
    torch.manual_seed(shard_seed(cfg.seed, k))
    loader = torch.utils.data.DataLoader(ImageDataset(cfg.root, shard, scorer.input_size), batch_size=cfg.batch_size,
                                         num_workers=cfg.workers, collate_fn=collate,
                                         pin_memory=torch.device(cfg.device).type == "cuda")
    size = None if settings["resolution"] == "native" else (scorer.input_size, scorer.input_size)
    if settings["resolution"] not in ("native", "input"):
        raise ValueError(f"--resolution must be native or input, got {settings['resolution']!r}")
    rows: dict[str, list] = {name: [] for name in SCHEMA.names}
    record: list[tuple[int, str, Any]] = []  # (position in shard, layer or "", values) to keep file order
    for idx, imgs, bad in loader:
        for i, err in bad.items():
            record.append((i, "", {"error": err}))
        if not idx:
            bar.update(len(bad))
            continue
        x = normalize(imgs.to(cfg.device, non_blocking=True), scorer.mean, scorer.std)
        labels = torch.tensor([shard[i].label for i in idx], device=cfg.device)
        cb = engine.impl(x, labels, settings["target"])
        conf, pred = torch.softmax(cb.logits.float(), 1).max(1)
        for layer, maps in cb.maps.items():
            frac = activated_fraction(maps, settings["threshold"], settings["comparison"], size).cpu()
            empty = (maps.flatten(1).amax(1) == 0).cpu()
            for j, i in enumerate(idx):
                record.append((i, layer, {"fraction": float(frac[j]), "empty_map": bool(empty[j]),
                                          "target": int(cb.targets[j]), "pred": int(pred[j]),
                                          "confidence": float(conf[j])}))
        bar.update(len(idx) + len(bad))
    order = {layer: n for n, layer in enumerate(engine.layers)}
    for i, layer, vals in sorted(record, key=lambda r: (r[0], order.get(r[1], -1))):
        it = shard[i]
        frac = vals.get("fraction")
        rows["path"].append(it.path)
        rows["wnid"].append(it.wnid)
        rows["label"].append(it.label)
        rows["layer"].append(layer or None)
        rows["fraction"].append(frac)
        rows["complexity"].append(None if frac is None else 1.0 - frac)
        for key in ("empty_map", "target", "pred", "confidence", "error"):
            rows[key].append(vals.get(key))
    with atomic_path(_shard_path(out, k)) as tmp:
        pq.write_table(pa.table(rows, schema=SCHEMA), tmp)


def merge_shards(out: str | os.PathLike[str]) -> ScoreResult:
    """Write images.parquet, classes.csv, skipped.csv and summary.json from a complete set of shards."""
    out = Path(out)
    ident = json.loads((out / "run.json").read_text("utf-8"))
    n = ident["shards"]
    missing = [k for k in range(n) if not _shard_path(out, k).exists()]
    if missing:
        raise FileNotFoundError(f"{out}: shards {missing[:5]} are missing; run the same score command again to finish")
    table = pa.concat_tables([pq.read_table(_shard_path(out, k), schema=SCHEMA) for k in range(n)])
    err = table.column("error")
    ok_mask = pa.compute.is_null(err)
    scored = table.filter(ok_mask).drop_columns(["error"])
    skipped = table.filter(pa.compute.invert(ok_mask)).select(["path", "wnid", "error"])
    meta = {b"compdd": json.dumps(ident, sort_keys=True).encode()}
    files = {}
    with atomic_path(out / "images.parquet") as tmp:
        pq.write_table(scored.replace_schema_metadata(meta), tmp)
    files["images"] = str(out / "images.parquet")
    df = scored.to_pandas()
    atomic_write_text(out / "classes.csv", class_table_csv(df))
    files["classes"] = str(out / "classes.csv")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "wnid", "error"])
    w.writerows(zip(*(skipped.column(c).to_pylist() for c in ("path", "wnid", "error")), strict=True))
    atomic_write_text(out / "skipped.csv", buf.getvalue())
    files["skipped"] = str(out / "skipped.csv")
    layers = ident["cam"]["layers"]
    n_images = ident["images"]
    n_bad = skipped.num_rows
    empties = {layer: int(df.loc[df.layer == layer, "empty_map"].sum()) for layer in layers}
    summary = {"images": n_images, "scored": n_images - n_bad, "unreadable": n_bad, "empty_maps": empties,
               "classes": int(df.wnid.nunique()), "layers": layers,
               "mean_complexity": {layer: round(float(df.loc[df.layer == layer, "complexity"].mean()), 6) for layer in layers}}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, sort_keys=True) + "\n")
    files["summary"] = str(out / "summary.json")
    return ScoreResult(out, True, n, n, n_images, n_images - n_bad, n_bad, sum(empties.values()), files)


def class_table(images: Any) -> Any:
    """Per (wnid, layer) aggregate of a per-image DataFrame: n, complexity mean/std, fraction, empty maps, accuracy."""
    import pandas as pd

    g = images.groupby(["wnid", "layer"], sort=True)
    t = pd.DataFrame({
        "n": g.size(),
        "complexity_mean": g.complexity.mean(),
        "complexity_std": g.complexity.std(ddof=1).fillna(0.0),
        "fraction_mean": g.fraction.mean(),
        "empty_maps": g.empty_map.sum().astype(int),
        "accuracy": g.apply(lambda d: float((d.pred == d.label).mean()), include_groups=False),
    }).reset_index()
    t.insert(1, "index", [imagenet.index_of(w) for w in t.wnid])
    t.insert(2, "name", [imagenet.name_of(w) for w in t.wnid])
    return t


def class_table_csv(images: Any) -> str:
    return class_table(images).to_csv(index=False, float_format="%.6f", lineterminator="\n")


def _clear(out: Path) -> None:
    for name in ("run.json", "images.parquet", "classes.csv", "skipped.csv", "summary.json", "scorer.safetensors"):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "shards", ignore_errors=True)


def read_run(scores: str | os.PathLike[str]) -> dict[str, Any]:
    """The run.json of a scores folder (or of the folder holding a given images.parquet / classes.csv)."""
    p = Path(scores)
    folder = p if p.is_dir() else p.parent
    f = folder / "run.json"
    if not f.is_file():
        raise FileNotFoundError(f"{folder} is not a scores folder (no run.json); run `compdd score --out {folder}` first")
    return json.loads(f.read_text("utf-8"))


__all__ = ["PRESETS", "Preset", "ScoreConfig", "ScoreResult", "score", "merge_shards", "class_table", "read_run",
           "prepare_scorer", "resolve_weights", "shard_seed"]


def config_from_run(run: dict[str, Any], root: str | os.PathLike[str], out: str | os.PathLike[str],
                    device: str = "cpu") -> ScoreConfig:
    """A config that reproduces the CAM settings and scorer of a finished run (for figures and spot checks)."""
    cam, sc = run["cam"], run["scorer"]
    return ScoreConfig(root=str(root), wnids=(), out=str(out), split=run["split"], preset=cam["preset"],
                       weights=sc["weights"], arch=sc["arch"], cam=cam["cam"], target=cam["target"],
                       threshold=cam["threshold"], comparison=cam["comparison"], resolution=cam["resolution"],
                       layers=tuple(cam["layers"]), input_size=cam["input_size"], device=device)


def cams_for_paths(cfg: ScoreConfig, paths: list[str], layer: str | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """uint8 images, CAMs of ``layer`` (default: the last scored) and activated shares for files under ``cfg.root``."""
    from compdd.complexity.images import read_resized

    scorer = load_scorer(resolve_weights(cfg), arch=cfg.arch, input_size=cfg.input_size, cache_dir=cfg.cache_dir)
    settings = cfg.resolved()
    engine = _Engine(cfg, scorer, settings)
    layer = layer or engine.layers[-1]
    imgs = torch.stack([read_resized(Path(cfg.root) / p, scorer.input_size) for p in paths])
    labels = torch.tensor([imagenet.index_of(Path(p).parent.name) for p in paths])
    torch.manual_seed(shard_seed(cfg.seed, 0))
    cb = engine.impl(normalize(imgs.to(cfg.device), scorer.mean, scorer.std), labels.to(cfg.device), settings["target"])
    size = None if settings["resolution"] == "native" else (scorer.input_size, scorer.input_size)
    frac = activated_fraction(cb.maps[layer], settings["threshold"], settings["comparison"], size)
    return imgs, cb.maps[layer].cpu(), [float(f) for f in frac]
