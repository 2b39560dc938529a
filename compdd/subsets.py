"""From class complexity to Comp-DD subsets: ranking within categories, the new definition, agreement, figures, report.

``build_definition`` ranks the scored classes of each category by mean complexity (ties broken by wnid): the 10
least complex form ``<category>-easy``, the 10 most complex ``<category>-hard``. Inside a subset the wnids are listed
in ImageNet index order, so the same class set always gives the same subset (and the same local labels) whatever
small changes in the scores. The definition records its provenance (preset, scorer, threshold, date, versions, the
class complexities) and its agreement with a reference definition (overlap and Jaccard per subset).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from compdd import __version__, imagenet
from compdd.benchmark import CLASSES_PER_SUBSET, Definition, load_definition, parse_definition
from compdd.complexity.run import read_run
from compdd.paths import sha256_file


def load_class_scores(scores: str | os.PathLike[str], layer: str | None = None) -> pd.DataFrame:
    """Per-class complexity (one row per wnid, indexed by wnid) of one layer of a scores folder.

    ``layer`` defaults to the last layer the run scored (the last block for ``gradcam-v1``, layer4 for ``edf-code``).
    """
    run = read_run(scores)
    folder = Path(scores) if Path(scores).is_dir() else Path(scores).parent
    path = folder / "classes.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the scoring run in {folder} is not finished; run the same "
                                "`compdd score` command again to complete it")
    table = pd.read_csv(path)
    layers = run["cam"]["layers"]
    layer = layer or layers[-1]
    if layer not in layers:
        raise ValueError(f"layer {layer!r} was not scored in {folder}; scored layers: {', '.join(layers)}")
    return table[table.layer == layer].set_index("wnid")


def rank_category(class_scores: pd.DataFrame, members: tuple[str, ...] | list[str]) -> list[str]:
    """Scored ``members`` from least to most complex (ties by wnid)."""
    scored = [w for w in members if w in class_scores.index]
    return sorted(scored, key=lambda w: (float(class_scores.at[w, "complexity_mean"]), w))


def load_categories(base: str | os.PathLike[str] = "comp-dd-v1",
                    categories_file: str | os.PathLike[str] | None = None) -> dict[str, tuple[str, ...]]:
    """Category -> member wnids: from ``categories_file`` (JSON ``{category: [wnid, ...]}``) or from ``base``.

    A user file may list any classes (e.g. all 118 dogs, or categories of its own); it is validated like the
    member lists of a definition (real ImageNet-1K wnids, no repeats).
    """
    if categories_file is None:
        return dict(load_definition(base).categories)
    raw = json.loads(Path(categories_file).read_text("utf-8")) if Path(categories_file).is_file() else None
    if raw is None:
        raise FileNotFoundError(f"categories file {str(categories_file)!r} not found")
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise ValueError(f"{categories_file}: a category file maps category names to lists of wnids")
    empty = {"format": "compdd-definition/1", "name": "categories", "version": "0", "subsets": []}
    return dict(parse_definition(empty, str(categories_file), categories=raw).categories)


def agreement(new: Definition, ref: Definition) -> list[dict[str, Any]]:
    """Per subset present in both: overlap count and Jaccard index of the class sets."""
    rows = []
    for s in new.subsets:
        try:
            r = ref.subset(s.name)
        except KeyError:
            continue
        a, b = set(s.wnids), set(r.wnids)
        rows.append({"subset": s.name, "overlap": len(a & b), "jaccard": round(len(a & b) / len(a | b), 4),
                     "only_new": sorted(a - b), "only_reference": sorted(b - a)})
    return rows


def build_definition(scores: str | os.PathLike[str], *, base: str | os.PathLike[str] = "comp-dd-v1",
                     categories_file: str | os.PathLike[str] | None = None, categories: list[str] | None = None,
                     layer: str | None = None, name: str = "comp-dd-rebuilt", version: str = "1.0.0",
                     date: str | None = None) -> tuple[Definition, list[dict[str, Any]]]:
    """Build easy/hard subsets per category from a scores folder; return the definition and its agreement rows.

    Categories (and their member lists) come from ``base`` or ``categories_file``; ``categories`` picks some.
    Every member of a chosen category must have been scored (the error lists the ones that were not).
    """
    run = read_run(scores)
    cs = load_class_scores(scores, layer)
    ref = load_definition(base)
    cats = load_categories(base, categories_file)
    chosen = categories or list(cats)
    unknown = [c for c in chosen if c not in cats]
    if unknown:
        raise ValueError(f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {unknown}; known: {', '.join(cats)}")
    subsets, members = [], {}
    for c in chosen:
        m = cats[c]
        missing = [w for w in m if w not in cs.index]
        if missing:
            raise ValueError(f"category {c!r}: {len(missing)} of {len(m)} member classes were not scored "
                             f"(e.g. {', '.join(missing[:3])}); score them (compdd score --classes/--subsets/--all) "
                             f"or build only fully scored categories (--build-categories)")
        if len(m) < 2 * CLASSES_PER_SUBSET:
            raise ValueError(f"category {c!r} has {len(m)} members; easy and hard subsets need at least "
                             f"{2 * CLASSES_PER_SUBSET}")
        ranked = rank_category(cs, m)
        members[c] = list(m)
        for diff, picked in (("easy", ranked[:CLASSES_PER_SUBSET]), ("hard", ranked[-CLASSES_PER_SUBSET:])):
            subsets.append({"name": f"{c}-{diff}", "category": c, "difficulty": diff,
                            "wnids": sorted(picked, key=imagenet.index_of)})
    cam = run["cam"]
    used_layer = layer or cam["layers"][-1]
    provenance = {
        "built_by": "compdd build-subsets",
        "compdd_version": __version__,
        "date": date or _dt.datetime.now(_dt.timezone.utc).date().isoformat(),
        "complexity": {**{k: cam[k] for k in ("preset", "cam", "target", "threshold", "comparison", "resolution",
                                              "input_size", "resize")}, "layer": used_layer},
        "scorer": {k: run["scorer"].get(k) for k in ("arch", "weights", "source", "sha256")},
        "scores": {"split": run["split"], "images": run["images"], "limit_per_class": run["limit_per_class"],
                   "classes_sha256": sha256_file(Path(scores) / "classes.csv" if Path(scores).is_dir()
                                                 else Path(scores).parent / "classes.csv")},
        "selection": (f"within each category, classes ranked by mean image complexity (1 - share of Grad-CAM cells "
                      f"{cam['comparison']} {cam['threshold']}); easy = {CLASSES_PER_SUBSET} least complex, "
                      f"hard = {CLASSES_PER_SUBSET} most complex; ties by wnid; wnids in ImageNet index order"),
        "class_complexity": {w: round(float(cs.at[w, "complexity_mean"]), 6) for c in chosen for w in members[c]},
    }
    doc = {"format": "compdd-definition/1", "name": name, "version": version,
           "description": f"Comp-DD subsets rebuilt from Grad-CAM complexity ({cam['preset']} preset, "
                          f"{run['scorer']['weights']}) over the {run['split']} split.",
           "provenance": provenance, "categories": {c: {"members": members[c]} for c in chosen},
           "subsets": subsets, "errata": []}
    defn = parse_definition(doc, f"<built from {scores}>")
    agree = agreement(defn, ref)
    provenance["agreement"] = {"reference": ref.id, "subsets": [{k: r[k] for k in ("subset", "overlap", "jaccard")}
                                                               for r in agree]}
    return parse_definition(doc, f"<built from {scores}>"), agree


def write_definition(defn: Definition, path: str | os.PathLike[str]) -> Path:
    from compdd.paths import atomic_write_text

    atomic_write_text(path, json.dumps(defn.to_json(), indent=1) + "\n")
    return Path(path)


def subset_complexity(defn: Definition, class_scores: pd.DataFrame) -> pd.DataFrame:
    """Mean class complexity per subset (classes without scores are left out and counted)."""
    rows = []
    for s in defn.subsets:
        have = [w for w in s.wnids if w in class_scores.index]
        vals = class_scores.loc[have, "complexity_mean"] if have else pd.Series(dtype=float)
        rows.append({"subset": s.name, "category": s.category, "difficulty": s.difficulty, "classes_scored": len(have),
                     "complexity_mean": float(vals.mean()) if have else float("nan")})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Figures (matplotlib's object API with the Agg canvas: no pyplot global state, no display needed)


def _save(fig: Any, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight", metadata={"CreationDate": None, "ModDate": None})
    return paths


def _figure(w: float = 6.4, h: float = 4.0) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def plot_complexity_distribution(class_scores: pd.DataFrame, stem: Path, threshold: float = 0.5) -> list[Path]:
    """Histogram of class complexity over all scored classes (the paper's Fig. 10)."""
    fig = _figure()
    ax = fig.add_subplot()
    vals = 100 * class_scores["complexity_mean"]
    ax.hist(vals, bins=min(40, max(5, len(vals) // 3)), color="#4C72B0", edgecolor="white")
    ax.axvline(vals.mean(), color="k", ls="--", lw=1, label=f"mean {vals.mean():.1f}%")
    ax.set_xlabel("class complexity (%)")
    ax.set_ylabel("classes")
    ax.set_title(f"Complexity of {len(vals)} classes (threshold {threshold})")
    ax.legend()
    return _save(fig, stem)


def _paired_bars(ax: Any, cats: list[str], easy: list[float], hard: list[float], ylabel: str) -> None:
    import numpy as np

    x = np.arange(len(cats))
    ax.bar(x - 0.2, easy, 0.4, label="easy", color="#55A868")
    ax.bar(x + 0.2, hard, 0.4, label="hard", color="#C44E52")
    ax.set_xticks(x, cats)
    ax.set_ylabel(ylabel)
    ax.legend()


def _pairs(defn: Definition) -> list[str]:
    return [c for c in defn.categories if any(s.category == c for s in defn.subsets)]


def plot_easy_vs_hard(defn: Definition, class_scores: pd.DataFrame, stem: Path) -> list[Path]:
    """Mean complexity of the easy and hard subset of each category (the paper's Fig. 4b)."""
    sc = subset_complexity(defn, class_scores).set_index("subset")
    cats = _pairs(defn)
    fig = _figure()
    ax = fig.add_subplot()
    _paired_bars(ax, cats, [100 * sc.at[f"{c}-easy", "complexity_mean"] for c in cats],
                 [100 * sc.at[f"{c}-hard", "complexity_mean"] for c in cats], "mean complexity (%)")
    ax.set_title("Easy vs hard subsets")
    return _save(fig, stem)


def plot_train_images(defn: Definition, counts: dict[str, int], stem: Path, split: str = "train") -> list[Path]:
    """Images per subset in ``split`` (training images: the paper's Fig. 4a); ``counts`` maps wnid -> images."""
    cats = _pairs(defn)
    n = {s.name: sum(counts.get(w, 0) for w in s.wnids) for s in defn.subsets}
    fig = _figure()
    ax = fig.add_subplot()
    _paired_bars(ax, cats, [n[f"{c}-easy"] for c in cats], [n[f"{c}-hard"] for c in cats], f"{split} images")
    ax.set_title(f"{split.capitalize()} images per subset")
    return _save(fig, stem)


def plot_cam_grid(images: Any, maps: Any, fractions: list[float], title: str, stem: Path, cols: int = 4) -> list[Path]:
    """Images (uint8 N,3,H,W) with their CAMs (N,h,w in [0,1]) overlaid, each titled with its activated share."""
    import math

    import torch.nn.functional as F

    n = len(images)
    rows = max(1, math.ceil(n / cols))
    fig = _figure(2.2 * cols, 2.3 * rows)
    size = tuple(images.shape[-2:])
    up = F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(images[i].permute(1, 2, 0).numpy())
        ax.imshow(up[i].numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(f"active {100 * fractions[i]:.0f}%", fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return _save(fig, stem)


# ---------------------------------------------------------------------------------------------
# Report


def train_counts(root: str | os.PathLike[str] | None, wnids: list[str], scores: str | os.PathLike[str]) -> dict[str, int]:
    """Training images per class: counted in ``root/train`` when given, else the images the run scored."""
    if root is not None:
        out = {}
        for w in wnids:
            try:
                out[w] = len(imagenet.list_images(root, "train", w))
            except FileNotFoundError:
                out[w] = 0
        return out
    folder = Path(scores) if Path(scores).is_dir() else Path(scores).parent
    images = pd.read_parquet(folder / "images.parquet", columns=["path", "wnid"]).drop_duplicates("path")
    return images.wnid.value_counts().to_dict()


def write_report(scores: str | os.PathLike[str], out: str | os.PathLike[str], *,
                 definition: str | os.PathLike[str] | None = None, base: str | os.PathLike[str] = "comp-dd-v1",
                 imagenet_root: str | os.PathLike[str] | None = None, cam_class: str | None = None,
                 cam_images: int = 8, layer: str | None = None, device: str = "cpu") -> Path:
    """Figures (PNG + PDF) and ``report.md`` for a scores folder and, optionally, a built definition.

    Without ``definition`` the easy/hard comparison uses ``base`` (comp-dd-v1) for the categories whose classes
    were all scored. ``cam_class`` (a wnid) adds a grid of images with their CAM overlays; it needs
    ``imagenet_root`` and the scorer the run used.
    """
    from compdd.complexity.run import cams_for_paths, config_from_run

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = read_run(scores)
    folder = Path(scores) if Path(scores).is_dir() else Path(scores).parent
    summary = json.loads((folder / "summary.json").read_text("utf-8"))
    cs = load_class_scores(scores, layer)
    used_layer = layer or run["cam"]["layers"][-1]
    ref = load_definition(base)
    if definition is not None:
        defn = load_definition(definition)
    else:
        full = {c for c, m in ref.categories.items() if all(w in cs.index for w in m)}
        doc = ref.to_json()
        doc["subsets"] = [s for s in doc["subsets"] if s["category"] in full]
        doc["categories"] = {c: v for c, v in doc["categories"].items() if c in full}
        defn = parse_definition(doc, ref.path)
    figures: dict[str, list[Path]] = {
        "distribution": plot_complexity_distribution(cs, out / "complexity-distribution", run["cam"]["threshold"])}
    if defn.subsets:
        figures["easy_vs_hard"] = plot_easy_vs_hard(defn, cs, out / "easy-vs-hard")
        wn = sorted({w for s in defn.subsets for w in s.wnids})
        split = "train" if imagenet_root is not None else run["split"]
        figures["train_images"] = plot_train_images(defn, train_counts(imagenet_root, wn, scores), out / "train-images",
                                                    split)
    if cam_class is not None:
        if imagenet_root is None:
            raise ValueError("--cam-class needs --imagenet-root to read the images")
        imagenet.lookup(cam_class)
        images = pd.read_parquet(folder / "images.parquet", columns=["path", "wnid"]).drop_duplicates("path")
        paths = images[images.wnid == cam_class].path.tolist()[:cam_images]
        if not paths:
            raise ValueError(f"class {cam_class} was not scored in {folder}")
        cfg = config_from_run(run, imagenet_root, folder, device)
        imgs, maps, fr = cams_for_paths(cfg, paths, used_layer)
        figures["cam_grid"] = plot_cam_grid(imgs, maps, fr, f"{cam_class} {imagenet.name_of(cam_class)} "
                                            f"({run['cam']['preset']}, {used_layer})", out / f"cam-{cam_class}")

    cam = run["cam"]
    lines = [
        "# Comp-DD complexity report", "",
        f"- scores: `{folder}` ({run['split']} split, {summary['images']:,} images, {summary['classes']} classes)",
        f"- preset `{cam['preset']}`: {cam['cam']}, target {cam['target']}, share of cells {cam['comparison']} "
        f"{cam['threshold']}, {cam['resolution']} resolution, layer `{used_layer}`, input {cam['input_size']} px",
        f"- scorer: `{run['scorer']['weights']}` ({run['scorer']['arch']}, sha256 {run['scorer']['sha256'][:12]}...)",
        f"- unreadable files skipped: {summary['unreadable']}; all-zero maps (counted as complexity 1): "
        f"{summary['empty_maps'].get(used_layer, 0)}",
        f"- class complexity: mean {100 * cs.complexity_mean.mean():.1f}%, std {100 * cs.complexity_mean.std(ddof=0):.1f}%, "
        f"range {100 * cs.complexity_mean.min():.1f}-{100 * cs.complexity_mean.max():.1f}%",
        "",
    ]
    if defn.subsets:
        sc = subset_complexity(defn, cs).set_index("subset")
        agree = {r["subset"]: r for r in agreement(defn, ref)} if definition is not None else {}
        lines += [f"## Subsets ({defn.id})", "",
                  "| category | easy complexity | hard complexity | hard - easy |" + (" easy overlap / Jaccard vs "
                                                                                     f"{ref.id} | hard overlap / Jaccard |" if agree else ""),
                  "|---|---|---|---|" + ("---|---|" if agree else "")]
        for c in _pairs(defn):
            e, h = sc.at[f"{c}-easy", "complexity_mean"], sc.at[f"{c}-hard", "complexity_mean"]
            row = f"| {c} | {100 * e:.1f}% | {100 * h:.1f}% | {100 * (h - e):+.1f} |"
            if agree:
                row += "".join(f" {agree[f'{c}-{d}']['overlap']}/10, {agree[f'{c}-{d}']['jaccard']:.2f} |"
                               if f"{c}-{d}" in agree else " - |" for d in ("easy", "hard"))
            lines.append(row)
        lines.append("")
    lines += ["## Figures", ""] + [f"- {k}: [{v[0].name}]({v[0].name}) ([pdf]({v[1].name}))" for k, v in figures.items()]
    report = out / "report.md"
    from compdd.paths import atomic_write_text

    atomic_write_text(report, "\n".join(lines) + "\n")
    return report
