"""``compdd teacher``: train (or import) and cache the BatchNorm teacher the KD methods and protocols use."""

from __future__ import annotations

import json
from pathlib import Path

import click

from compdd.cli._options import parse_sets


@click.command("teacher")
@click.option("--subset", required=True, help="Subset name, e.g. bird-hard (see `compdd list-subsets`).")
@click.option("--res", default=128, show_default=True, type=click.IntRange(min=8), help="Resolution in pixels.")
@click.option("--model", help="Registered model (must have BatchNorm for SRe2L). Default: convnet_d3_bn / "
                               "convnet_d4_bn / convnet_d5_bn at 32 / 64 / 128 px, the KD protocols' teacher.")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path),
              help="Import this state dict (.safetensors, or .pt/.pth read with weights_only=True) instead of training.")
@click.option("--imagenet-root", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="ImageNet folder with train/<wnid>/ (training data) and val/<wnid>/ (accuracy report).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Teacher-recipe field (repeatable, YAML values), e.g. --set epochs=30. A changed recipe is a "
                   "different teacher; the KD protocols use the default recipe.")
@click.option("--device", help="torch device; default cuda if available, else cpu.")
@click.option("--json", "as_json", is_flag=True, help="Print the teacher's record as one JSON line at the end.")
def teacher_cmd(subset: str, res: int, model: str | None, weights: Path | None, imagenet_root: Path,
                sets: tuple[str, ...], device: str | None, as_json: bool) -> None:
    """Train a teacher on the real training split of a subset (or import one) and cache it under COMPDD_HOME.

    The teacher is keyed by a hash of the data, the resolution, the model and the recipe (or the weights
    file), so `compdd evaluate --protocol kd-v1` and the sre2l/rded methods find it instead of training
    their own. Running the command again only reports the cached teacher.

    \b
    Examples:
      compdd teacher --subset bird-hard --res 128 --imagenet-root /data/imagenet
      compdd teacher --subset bird-hard --res 32 --imagenet-root sample-in1k --set epochs=30
      compdd teacher --subset bird-hard --res 128 --model resnet18_bn --weights rn18-bird-hard.safetensors \\
          --imagenet-root /data/imagenet
    """
    from compdd.evaluation.run import default_device, load_split
    from compdd.teachers import get_teacher

    train = load_split(subset, "train", res, root=imagenet_root)
    val = load_split(subset, "validation", res, root=imagenet_root)
    t = get_teacher(train, parse_sets(sets), model=model, weights=weights, val=val,
                    device=device or default_device())
    how = "found in the cache" if t.found else ("imported" if t.info["source"] == "weights" else "trained")
    click.echo(f"teacher {t.id} ({t.name}, {res} px, {subset}) {how}: {t.path}")
    click.echo(f"  train top-1 {t.info['train_top1']:.2f}%   val top-1 {t.info['val_top1']:.2f}%")
    if as_json:
        click.echo(json.dumps({**t.summary(), "path": str(t.path)}))


COMMANDS = [teacher_cmd]
