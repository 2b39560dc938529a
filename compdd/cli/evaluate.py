"""Commands that distil and score: ``evaluate``, ``eval-distilled``, ``import``, ``show``.

Thin wrappers over :mod:`compdd.evaluation.run` and :mod:`compdd.evaluation.interop`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from compdd.cli._options import parse_sets


def _parse_seeds(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    seeds: list[int] = []
    try:
        for part in value.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                seeds += range(int(lo), int(hi) + 1)
            elif part:
                seeds.append(int(part))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give seeds as 0,1,2 or 0-4", param_hint="--seeds") from None
    if not seeds:
        raise click.BadParameter("no seeds given", param_hint="--seeds")
    return tuple(seeds)


def _source(source: str, imagenet_root: Path | None, data_path: Path | None, repo_id: str | None,
            revision: str | None):
    from compdd.evaluation.run import DataSource

    return DataSource(source, imagenet_root, data_path, repo_id, revision)


def _overrides(epochs: int | None, seeds: str | None) -> dict[str, Any]:
    return {k: v for k, v in {"epochs": epochs, "seeds": _parse_seeds(seeds)}.items() if v is not None}


def _summary(record, where: Path | None) -> None:
    from compdd.evaluation.run import summary_rows

    click.echo("")
    for label, value in summary_rows(record):
        click.echo(f"  {label:<14} {value}")
    if where is not None:
        click.echo(f"\nrecord: {where}")


_common = [
    click.option("--protocol", default="dd-v1", show_default=True,
                 help="Protocol id (see `compdd list-protocols`) or a protocol YAML file."),
    click.option("--source", type=click.Choice(["imagenet", "local", "hub"]), default="imagenet", show_default=True,
                 help="Where the real subset (training split and test split) comes from."),
    click.option("--imagenet-root", type=click.Path(file_okay=False, path_type=Path),
                 help="--source imagenet: ImageNet folder with train/<wnid>/ and val/<wnid>/."),
    click.option("--data-path", type=click.Path(file_okay=False, path_type=Path),
                 help="--source local: a folder written by `compdd export`."),
    click.option("--repo-id", help="--source hub: the dataset repo, e.g. my-lab/comp-dd (or $COMPDD_HUB_REPO)."),
    click.option("--revision", help="--source hub: a branch, tag or commit."),
    click.option("--epochs", type=click.IntRange(min=1), help="Override the protocol's epochs (marks the result non-standard)."),
    click.option("--seeds", help="Override the protocol's evaluation seeds, e.g. 0,1 or 0-2 (non-standard)."),
    click.option("--device", help="torch device; default cuda if available, else cpu."),
    click.option("--batched/--sequential", default=False, show_default=True,
                 help="Train the evaluation seeds stacked in one vmapped model, or one after the other "
                      "(same numbers up to float rounding; see bench/eval_throughput.py for speed)."),
    click.option("--no-references", is_flag=True, help="Skip the random and full-data references."),
    click.option("--no-full-reference", is_flag=True,
                 help="Keep the random reference but skip the full-data one (the costly one: it trains on the "
                      "whole training split under the protocol)."),
]


def _references(no_references: bool, no_full_reference: bool) -> bool | tuple[str, ...]:
    return False if no_references else ("random",) if no_full_reference else True


def common(f):
    for opt in reversed(_common):
        f = opt(f)
    return f


@click.command("evaluate")
@click.option("--method", required=True, help="Method name (see `compdd list-methods`).")
@click.option("--subset", required=True, help="Subset name, e.g. bird-hard (see `compdd list-subsets`).")
@click.option("--ipc", required=True, type=click.IntRange(min=1), help="Images per class.")
@click.option("--res", default=128, show_default=True, type=click.IntRange(min=8), help="Resolution in pixels.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (distilled/ and result.json). Default: results/METHOD-SUBSET-ipcK-RESpx-PROTOCOL.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Method hyper-parameter (repeatable); values are YAML (numbers, true/false, lists).")
@click.option("--seed", default=0, show_default=True, type=int, help="Distillation seed.")
@click.option("--analysis", is_flag=True,
              help="Also write the method's analysis files into OUT/analysis/ (edf: discriminative-area report "
                   "and CAM overlays).")
@common
def evaluate_cmd(method: str, subset: str, ipc: int, res: int, out: Path | None, sets: tuple[str, ...], seed: int,
                 analysis: bool, protocol: str, source: str, imagenet_root: Path | None, data_path: Path | None,
                 repo_id: str | None, revision: str | None, epochs: int | None, seeds: str | None,
                 device: str | None, batched: bool, no_references: bool, no_full_reference: bool) -> None:
    """Distil a subset with a method, score it under a protocol, write the set and its result record.

    Shows progress per evaluation seed and epoch and a summary at the end: per-seed top-1, mean ± std, the
    random-real and full-data references under the same protocol (cached), and the recovery ratio.

    \b
    Examples:
      compdd evaluate --method edf --subset bird-hard --ipc 10 --imagenet-root /data/imagenet
      compdd evaluate --method edf --subset bird-hard --ipc 1 --analysis --imagenet-root /data/imagenet
      compdd evaluate --method random --subset bird-hard --ipc 1 --res 32 --epochs 300 --seeds 0,1 \\
          --imagenet-root sample-in1k --out runs/random-ipc1
    """
    from compdd.evaluation.run import RESULT_FILE, resolve_protocol, run_evaluation

    overrides = _overrides(epochs, seeds)
    proto, _ = resolve_protocol(protocol, overrides)
    out = out or Path("results") / f"{method}-{subset}-ipc{ipc}-{res}px-{proto.id}"
    record = run_evaluation(method, subset, ipc, protocol=protocol, res=res,
                            source=_source(source, imagenet_root, data_path, repo_id, revision),
                            out=out, method_config=parse_sets(sets),
                            overrides=overrides, seed=seed, device=device, batched=batched,
                            references=_references(no_references, no_full_reference), analysis=analysis)
    click.echo(f"\ndistilled set: {out / 'distilled'}")
    if analysis:
        click.echo(f"analysis: {out / 'analysis'}")
    _summary(record, out / RESULT_FILE)


@click.command("eval-distilled")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--subset", required=True, help="The subset the set was distilled from (its class order).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Result record path. Default: FOLDER/result.json.")
@common
def eval_distilled_cmd(folder: Path, subset: str, out: Path | None, protocol: str, source: str,
                       imagenet_root: Path | None, data_path: Path | None, repo_id: str | None, revision: str | None,
                       epochs: int | None, seeds: str | None, device: str | None, batched: bool,
                       no_references: bool, no_full_reference: bool) -> None:
    """Score a distilled-set folder produced elsewhere (`compdd import` turns .pt files or PNGs into one).

    \b
    Example:
      compdd eval-distilled runs/datm-bird-hard --subset bird-hard --imagenet-root /data/imagenet
    """
    from compdd.evaluation.run import RESULT_FILE, run_eval_distilled

    out = out or folder / RESULT_FILE
    record = run_eval_distilled(folder, subset, protocol=protocol,
                                source=_source(source, imagenet_root, data_path, repo_id, revision), out=out, overrides=_overrides(epochs, seeds), device=device, batched=batched,
                                references=_references(no_references, no_full_reference))
    _summary(record, out)


@click.command("import")
@click.option("--subset", required=True, help="The subset the images belong to (fixes the class order).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Distilled-set folder to write.")
@click.option("--images", "images", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A .pt tensor (N, 3, R, R), class-major, read with torch.load(weights_only=True).")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A .pt tensor of int labels (N,) or soft label logits (N, C). Default: class-major hard labels.")
@click.option("--pngs", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Instead of --images: a folder with one subfolder per class (wnid or label 0..C-1).")
@click.option("--lr", help="The learned learning rate: a number or a .pt file holding one (e.g. lr_best.pt).")
@click.option("--pixel-range", is_flag=True, help="--images are pixels in [0, 1], not ImageNet-normalised values.")
@click.option("--method-name", default="imported", show_default=True, help="Method name to record in meta.json.")
def import_cmd(subset: str, out: Path, images: Path | None, labels: Path | None, pngs: Path | None, lr: str | None,
               pixel_range: bool, method_name: str) -> None:
    """Turn another toolkit's distilled images into a compdd distilled-set folder.

    \b
    Examples:
      compdd import --images images_best.pt --labels labels_best.pt --lr lr_best.pt \\
          --subset bird-hard --method-name datm --out runs/datm-bird-hard
      compdd import --pngs syn_images/ --subset bird-hard --out runs/rded-bird-hard
    """
    from compdd.evaluation import interop

    if (images is None) == (pngs is None):
        raise click.UsageError("give exactly one of --images FILE.pt or --pngs FOLDER")
    if pngs is not None:
        if labels is not None or pixel_range:
            raise click.UsageError("--labels and --pixel-range go with --images, not --pngs")
        try:
            lr_value = float(lr) if lr is not None else None
        except ValueError:
            raise click.BadParameter(f"{lr!r} is not a number", param_hint="--lr") from None
        ds = interop.import_png_folder(pngs, subset, lr=lr_value, method=method_name)
    else:
        ds = interop.import_pt(images, subset, labels=labels, lr=lr, pixel_range=pixel_range, method=method_name)
    ds.save(out)
    click.echo(f"wrote {out}: {len(ds)} images, {ds.resolution} px, {ds.label_type} labels, lr {ds.lr}")


@click.command("show")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write a PNG grid (a row per class).")
@click.option("--max-per-class", type=click.IntRange(min=1), help="At most this many images per row.")
@click.option("--pngs", type=click.Path(file_okay=False, path_type=Path),
              help="Also write every image as FOLDER/<wnid>/<i>.png (needs the subset in meta.json).")
def show_cmd(folder: Path, out: Path | None, max_per_class: int | None, pngs: Path | None) -> None:
    """Describe a distilled-set folder and optionally render it as a grid image or PNG files.

    \b
    Example:
      compdd show results/edf-bird-hard-ipc10-128px-dd-v1/distilled --out grid.png
    """
    from compdd.distilled import DistilledSet
    from compdd.evaluation import interop

    ds = DistilledSet.load(folder)
    m = ds.meta
    click.echo(f"{folder}: method {m.get('method', '?')}, subset {m.get('subset', '?')}, ipc {m.get('ipc', '?')}, "
               f"{len(ds)} images at {ds.resolution} px, {ds.label_type} labels, lr {ds.lr}")
    if out is not None:
        interop.save_grid(ds, out, max_per_class=max_per_class)
        click.echo(f"grid: {out}")
    if pngs is not None:
        if not m.get("subset"):
            raise click.UsageError(f"{folder}/meta.json names no subset, so classes cannot be mapped to wnids")
        interop.export_png_folder(ds, pngs, m["subset"])
        click.echo(f"pngs: {pngs}")


COMMANDS = [evaluate_cmd, eval_distilled_cmd, import_cmd, show_cmd]
