"""``compdd check-imagenet``, ``prepare-imagenet-val``, ``train-scorer``, ``score``, ``build-subsets``, ``report``:
building the Comp-DD benchmark from an ImageNet tree (thin layer over compdd.imagenet, compdd.complexity, compdd.subsets).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from compdd import imagenet

if TYPE_CHECKING:
    from compdd.complexity.run import ScoreResult

log = logging.getLogger(__name__)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _split_list(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def _default_scores_dir(preset: str, split: str) -> Path:
    from compdd.paths import compdd_home

    return compdd_home() / "scores" / f"{preset}-{split}"


# ---------------------------------------------------------------------------------------------


@click.command("check-imagenet")
@click.option("--imagenet-root", required=True, type=click.Path(), help="Folder holding train/ and val/.")
@click.option("--splits", default="train,val", show_default=True, help="Comma-separated splits to check.")
@click.option("--full", is_flag=True, help="Require all 1000 classes and the standard image counts.")
@click.option("--decode", is_flag=True, help="Decode every image and count grayscale, CMYK, PNG-named-JPEG and "
              "unreadable files (slow: minutes per 100k images).")
@click.option("--workers", type=click.IntRange(1), default=None, help="Decode threads (default: up to 8).")
def check_imagenet_cmd(imagenet_root: str, splits: str, full: bool, decode: bool, workers: int | None) -> None:
    """Check that an ImageNet folder has the standard layout (split/<wnid>/*.JPEG) and say how to fix what is wrong.

    Exit status 0 when the tree is usable, 1 when it has errors.

    \b
    Examples:
      compdd check-imagenet --imagenet-root /data/imagenet
      compdd check-imagenet --imagenet-root /data/imagenet --splits train --full --decode
    """
    report = imagenet.check_imagenet(imagenet_root, tuple(_split_list(splits)), full=full, decode=decode,
                                     workers=workers)
    click.echo(report.summary())
    if report.odd_files:
        for kind, files in report.odd_files.items():
            if files:
                click.echo(f"  {kind}: {', '.join(files[:5])}{' ...' if len(files) > 5 else ''}")
    sys.exit(0 if report.ok else 1)


@click.command("prepare-imagenet-val")
@click.option("--imagenet-root", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder holding the flat val/ folder.")
@click.option("--labels", required=True, type=click.Path(exists=True, dir_okay=False),
              help="LOC_val_solution.csv, a CSV with filename,wnid, a wnid-per-line file, or the devkit's "
                   "ILSVRC2012_validation_ground_truth.txt (with --synset-map).")
@click.option("--synset-map", type=click.Path(exists=True, dir_okay=False), default=None,
              help="For the devkit ground truth: lines 'wnid ILSVRC2012_ID name' (the devkit's map_clsloc.txt).")
@click.option("--dry-run", is_flag=True, help="Only say what would be moved.")
def prepare_imagenet_val_cmd(imagenet_root: str, labels: str, synset_map: str | None, dry_run: bool) -> None:
    """Sort a flat val/ folder into val/<wnid>/ folders (moves files; safe to run again after an interruption).

    \b
    Examples:
      compdd prepare-imagenet-val --imagenet-root /data/imagenet --labels LOC_val_solution.csv
      compdd prepare-imagenet-val --imagenet-root /data/imagenet \\
          --labels ILSVRC2012_validation_ground_truth.txt --synset-map map_clsloc.txt --dry-run
    """
    plan = imagenet.prepare_imagenet_val(imagenet_root, labels, synset_map=synset_map, dry_run=dry_run)
    verb = "would move" if dry_run else "moved"
    click.echo(f"{verb} {len(plan.moves):,} images into {len(set(plan.moves.values()))} class folders; "
               f"{plan.already_sorted:,} already sorted; {len(plan.unlabelled)} without a label"
               + (f" (e.g. {plan.unlabelled[0]})" if plan.unlabelled else "")
               + f"; {plan.missing:,} labelled images not found")


# ---------------------------------------------------------------------------------------------


def _select_wnids(root: str, split: str, classes: str | None, subsets: str | None, categories: str | None,
                  all_classes: bool, definition: str, categories_file: str | None) -> list[str]:
    import fnmatch

    from compdd.benchmark import load_definition

    chosen = sum(bool(x) for x in (classes, subsets, categories, all_classes))
    if chosen > 1:
        raise click.UsageError("use only one of --classes, --subsets, --categories, --all")
    if classes:
        out = _split_list(classes)
        for w in out:
            imagenet.lookup(w)
        return sorted(set(out))
    if all_classes:
        return imagenet.wnids()
    if subsets:
        d = load_definition(definition)
        names = [s.name for s in d.subsets if any(fnmatch.fnmatch(s.name, p) for p in _split_list(subsets))]
        if not names:
            raise click.BadParameter(f"no subset of {d.id} matches {subsets!r}", param_hint="--subsets")
        return sorted({w for n in names for w in d.subset(n).wnids})
    if categories:
        from compdd.subsets import load_categories

        known = load_categories(definition, categories_file)
        cats = _split_list(categories)
        bad = [c for c in cats if c not in known]
        if bad:
            raise click.BadParameter(f"unknown categories {bad}; known: {', '.join(known)}", param_hint="--categories")
        return sorted({w for c in cats for w in known[c]})
    present = sorted(p.name for p in imagenet.split_dir(root, split).iterdir() if p.is_dir() and imagenet.is_wnid(p.name))
    if not present:
        hint = (f"it holds images directly: sort them with compdd prepare-imagenet-val --imagenet-root {root} --labels ..."
                if any(imagenet.split_dir(root, split).glob("*.JPEG")) else "check it with compdd check-imagenet")
        raise FileNotFoundError(f"{Path(root) / split} holds no wnid class folders; {hint}")
    return present


def _scoring_options(f):  # noqa: ANN001, ANN202 - click decorator plumbing
    opts = [
        click.option("--split", default="train", show_default=True, help="Which split to score."),
        click.option("--classes", default=None, help="Comma-separated wnids to score."),
        click.option("--subsets", default=None, help="Comma-separated subset names or globs of --definition "
                     "(e.g. 'bird-*')."),
        click.option("--categories", default=None, help="Comma-separated categories of --definition: all their members."),
        click.option("--all", "all_classes", is_flag=True, help="All 1000 classes (the tree must hold them)."),
        click.option("--definition", default="comp-dd-v1", show_default=True,
                     help="Definition (built-in name or JSON file) for --subsets/--categories."),
        click.option("--categories-file", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="JSON {category: [wnid, ...]} replacing the definition's category members."),
        click.option("--preset", type=click.Choice(["gradcam-v1", "edf-code"]), default="gradcam-v1", show_default=True,
                     help="gradcam-v1: Grad-CAM, last block, ground-truth class, >= 0.5, native maps. edf-code: what the "
                     "public scripts did (SmoothGradCAM++, predicted class, > 0.5, layer1..4)."),
        click.option("--weights", default=None, help="timm name with tag (default of both presets: resnet18.tv_in1k), "
                     "a .safetensors/.pth file, 'train-on-tree' (train a small scorer on this tree first) or 'random' "
                     "(tests only)."),
        click.option("--arch", default=None, help="timm architecture for a weights file without metadata (e.g. resnet50)."),
        click.option("--target", type=click.Choice(["label", "predicted"]), default=None,
                     help="Class the CAM explains (preset default)."),
        click.option("--threshold", type=click.FloatRange(0, 1), default=None, help="Activation threshold (0.5)."),
        click.option("--comparison", type=click.Choice([">=", ">"]), default=None, help="Cell counts if >= or > threshold."),
        click.option("--resolution", type=click.Choice(["native", "input"]), default=None,
                     help="Threshold maps at native resolution or upsampled to the input size."),
        click.option("--layer", "layers", multiple=True, help="Layer(s) to map (repeat); default: the preset's."),
        click.option("--input-size", type=click.IntRange(16), default=None,
                     help="Images are squashed to this size (default: the scorer's, 224 for ImageNet weights)."),
        click.option("--engine", type=click.Choice(["auto", "fast", "torchcam"]), default="auto", show_default=True,
                     help="fast: last-block Grad-CAM without a full backward; torchcam: the reference."),
        click.option("--no-optimize", is_flag=True, help="Fast engine: do not fold BatchNorm or use channels-last."),
        click.option("--amp", is_flag=True, help="Fast engine: bfloat16 autocast for the trunk (CUDA, or CPUs with "
                     "bf16 support): about 2x faster; maps differ from float32 by ~1e-2."),
        click.option("--compile", "compile_", is_flag=True, help="Fast engine: torch.compile the trunk (a minute of "
                     "compiling, then faster; needs a C++ compiler on CPU)."),
        click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True),
        click.option("--workers", type=click.IntRange(0), default=None, help="DataLoader workers (default: up to 8)."),
        click.option("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)."),
        click.option("--limit-per-class", type=click.IntRange(1), default=None, help="Score only the first N images "
                     "of each class (quick looks)."),
        click.option("--shard-size", type=click.IntRange(1), default=5000, show_default=True,
                     help="Images per resumable shard."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of Smooth Grad-CAM++ noise and of train-on-tree training."),
        click.option("--train-epochs", type=click.IntRange(1), default=12, show_default=True,
                     help="With --weights train-on-tree: epochs of scorer training."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _run_score(imagenet_root: str, out: str | None, max_shards: int | None, overwrite: bool, **kw) -> ScoreResult:
    from compdd.complexity import run as R

    wnids = _select_wnids(imagenet_root, kw["split"], kw["classes"], kw["subsets"], kw["categories"],
                          kw["all_classes"], kw["definition"], kw["categories_file"])
    for w in wnids:  # missing classes fail before any model is loaded
        imagenet.list_images(imagenet_root, kw["split"], w)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = kw["device"] or _default_device()
    if world > 1 and device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    workers = kw["workers"] if kw["workers"] is not None else min(8, os.cpu_count() or 1)
    cfg = R.ScoreConfig(
        root=str(imagenet_root), wnids=tuple(wnids), out=str(out or _default_scores_dir(kw["preset"], kw["split"])),
        split=kw["split"], preset=kw["preset"], weights=kw["weights"], arch=kw["arch"], target=kw["target"],
        threshold=kw["threshold"], comparison=kw["comparison"], resolution=kw["resolution"],
        layers=tuple(kw["layers"]) or None, input_size=kw["input_size"], engine=kw["engine"],
        optimize=not kw["no_optimize"], amp=kw["amp"], compile=kw["compile_"], batch_size=kw["batch_size"], workers=workers, device=device,
        limit_per_class=kw["limit_per_class"], shard_size=kw["shard_size"], seed=kw["seed"],
        train_epochs=kw["train_epochs"])
    click.echo(f"scoring {len(wnids)} classes of {imagenet_root}/{cfg.split} -> {cfg.out}", err=True)
    if world == 1:
        return R.score(cfg, max_shards=max_shards, overwrite=overwrite)
    import datetime

    import torch.distributed as dist

    # gloo only for barriers: works for CPU and GPU ranks alike; long timeout because ranks finish at different times
    dist.init_process_group("gloo", timeout=datetime.timedelta(hours=12))
    try:
        if rank == 0:
            R.prepare_scorer(cfg)
        dist.barrier()
        res = R.score(cfg, rank=rank, world_size=world, merge=False, max_shards=max_shards,
                      overwrite=overwrite and rank == 0)
        dist.barrier()
        if rank == 0 and all(R._shard_path(Path(cfg.out), k).exists() for k in range(res.shards_total)):
            res = R.merge_shards(cfg.out)
        return res
    finally:
        dist.destroy_process_group()


def _echo_result(res: ScoreResult) -> None:
    if not res.complete:
        click.echo(f"stopped with {res.shards_done}/{res.shards_total} shards done; run the same command again to "
                   f"continue ({res.out})")
        return
    if res.files:
        click.echo(f"scored {res.scored:,} of {res.images:,} images ({res.unreadable} unreadable, skipped and listed in "
                   f"skipped.csv; {res.empty_maps} all-zero maps) -> {res.out}")


@click.command("score")
@click.option("--imagenet-root", required=True, type=click.Path(exists=True, file_okay=False),
              help="ImageNet folder holding <split>/<wnid>/*.JPEG.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder (default: $COMPDD_HOME/scores/<preset>-<split>).")
@_scoring_options
@click.option("--max-shards", type=click.IntRange(1), default=None,
              help="Stop after computing this many new shards (split a long run into sessions; resume by re-running).")
@click.option("--overwrite", is_flag=True, help="Discard a previous run in --out made with other arguments.")
def score_cmd(imagenet_root: str, out: str | None, max_shards: int | None, overwrite: bool, **kw) -> None:
    """Grad-CAM complexity of every image of the chosen classes: per-image Parquet and per-class CSV.

    Complexity of an image = 1 - share of CAM cells >= 0.5; of a class = the mean over its images. Work is written
    in shards: an interrupted run continues where it stopped when restarted with the same arguments. Under
    torchrun, ranks split the shards and rank 0 merges. Default classes: every wnid folder in the split.

    \b
    Examples:
      compdd score --imagenet-root /data/imagenet --categories bird,car,dog,fish,snake,insect,round,music
      compdd score --imagenet-root /data/imagenet --all --weights resnet50.tv_in1k --amp --batch-size 512
      compdd score --imagenet-root /data/imagenet --preset edf-code --subsets 'bird-*'
      compdd score --imagenet-root sample-in1k --weights train-on-tree --out sample-scores
      torchrun --nproc-per-node 8 $(which compdd) score --imagenet-root /data/imagenet --all
    """
    _echo_result(_run_score(imagenet_root, out, max_shards, overwrite, **kw))


@click.command("train-scorer")
@click.option("--imagenet-root", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Checkpoint to write (.safetensors).")
@click.option("--classes", default=None, help="Comma-separated wnids (default: every class folder of train/).")
@click.option("--epochs", type=click.IntRange(1), default=12, show_default=True)
@click.option("--input-size", type=click.IntRange(16), default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default=None, help="Default: cuda when available.")
def train_scorer_cmd(imagenet_root: str, out: str, classes: str | None, epochs: int, input_size: int, seed: int,
                     device: str | None) -> None:
    """Train a small ResNet scorer on a tree's train split (for trees without pretrained weights, e.g. the sample).

    The checkpoint keeps its architecture in its metadata; pass it to `compdd score --weights`.

    \b
    Examples:
      compdd train-scorer --imagenet-root sample-in1k --out sample-scorer.safetensors
      compdd score --imagenet-root sample-in1k --weights sample-scorer.safetensors
    """
    from compdd.complexity.scorer import TrainConfig, train_scorer

    if not out.endswith(".safetensors"):
        raise click.BadParameter("the checkpoint is written as safetensors; name it *.safetensors", param_hint="--out")
    wnids = _select_wnids(imagenet_root, "train", classes, None, None, False, "comp-dd-v1", None)
    path = train_scorer(imagenet_root, wnids, out, TrainConfig(epochs=epochs, input_size=input_size, seed=seed),
                        device=device or _default_device())
    click.echo(f"wrote {path}")


@click.command("build-subsets")
@click.option("--scores", type=click.Path(exists=True), default=None, help="A finished `compdd score` folder.")
@click.option("--imagenet-root", type=click.Path(exists=True, file_okay=False), default=None,
              help="Score first (or reuse the finished default scores folder), then build.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Definition JSON to write.")
@click.option("--reference", "base", default="comp-dd-v1", show_default=True,
              help="Definition whose categories are used and which agreement is reported against.")
@click.option("--build-categories", "build_categories", default=None,
              help="Comma-separated categories to build (default: all of the reference).")
@click.option("--rank-layer", "rank_layer", default=None, help="Which scored layer ranks classes (default: the last).")
@click.option("--name", default="comp-dd-rebuilt", show_default=True)
@click.option("--version", "version", default="1.0.0", show_default=True)
@_scoring_options
def build_subsets_cmd(scores: str | None, imagenet_root: str | None, out: str, base: str,
                      build_categories: str | None, rank_layer: str | None, name: str, version: str, **kw) -> None:
    """Rank classes by complexity within each category: easy = 10 least, hard = 10 most complex.

    Writes a definition in the comp-dd-v1 format, with provenance, and prints its agreement with the reference
    (overlap and Jaccard per subset). Scoring options apply only with --imagenet-root.

    \b
    Examples:
      compdd build-subsets --scores ~/.cache/compdd/scores/gradcam-v1-train --out comp-dd-rebuilt.json
      compdd build-subsets --imagenet-root /data/imagenet --categories-file my-categories.json --out mine.json
      compdd build-subsets --scores sample-scores --build-categories bird,car --out sample-def.json
    """
    from compdd.subsets import build_definition, write_definition

    if (scores is None) == (imagenet_root is None):
        raise click.UsageError("pass exactly one of --scores and --imagenet-root")
    if imagenet_root is not None:
        if not any(kw[k] for k in ("classes", "subsets", "categories", "all_classes")):
            kw["categories"] = ",".join(build_categories and _split_list(build_categories) or
                                        _categories_of(base, kw["categories_file"]))
            kw["definition"] = base
        res = _run_score(imagenet_root, None, None, False, **kw)
        _echo_result(res)
        scores = str(res.out)
    defn, agree = build_definition(scores, base=base, categories_file=kw["categories_file"],
                                   categories=_split_list(build_categories) or None, layer=rank_layer, name=name,
                                   version=version)
    write_definition(defn, out)
    click.echo(f"wrote {out}: {len(defn.subsets)} subsets of {len(defn.categories)} categories")
    if agree:
        click.echo(f"agreement with {base}:")
        click.echo(f"  {'subset':14s} overlap  jaccard")
        for r in agree:
            click.echo(f"  {r['subset']:14s} {r['overlap']:4d}/10  {r['jaccard']:.2f}")


def _categories_of(base: str, categories_file: str | None) -> list[str]:
    from compdd.subsets import load_categories

    return list(load_categories(base, categories_file))


@click.command("report")
@click.option("--scores", required=True, type=click.Path(exists=True), help="A finished `compdd score` folder.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for report.md and the figures.")
@click.option("--definition", default=None, help="A built definition to summarise (default: comp-dd-v1, for the "
              "categories whose classes were all scored).")
@click.option("--reference", "base", default="comp-dd-v1", show_default=True, help="Reference for agreement.")
@click.option("--imagenet-root", type=click.Path(exists=True, file_okay=False), default=None,
              help="Count training images from the tree, and read images for --cam-class.")
@click.option("--cam-class", default=None, help="A wnid: grid of its images with CAM overlays.")
@click.option("--cam-images", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option("--layer", default=None, help="Scored layer to report (default: the last).")
@click.option("--device", default=None)
def report_cmd(scores: str, out: str, definition: str | None, base: str, imagenet_root: str | None,
               cam_class: str | None, cam_images: int, layer: str | None, device: str | None) -> None:
    """Figures (PNG + PDF: class complexity distribution, easy vs hard, training images, CAM grid) and report.md.

    \b
    Examples:
      compdd report --scores sample-scores --definition sample-def.json --out sample-report
      compdd report --scores sample-scores --out r --imagenet-root sample-in1k --cam-class n01530575
    """
    from compdd.subsets import write_report

    path = write_report(scores, out, definition=definition, base=base, imagenet_root=imagenet_root,
                        cam_class=cam_class, cam_images=cam_images, layer=layer, device=device or _default_device())
    click.echo(f"wrote {path}")


COMMANDS = [check_imagenet_cmd, prepare_imagenet_val_cmd, train_scorer_cmd, score_cmd, build_subsets_cmd, report_cmd]

