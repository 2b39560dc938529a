"""``compdd make-sample-imagenet``: the generated ImageNet-layout tree used as the embedded default."""

from __future__ import annotations

import click

from compdd.paths import ensure_writable_dir


@click.command("make-sample-imagenet")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--subsets", "subsets", default=None,
              help="Comma-separated subset names whose classes to generate. Default: all 16 Comp-DD subsets.")
@click.option("--train-per-class", default=40, show_default=True, type=click.IntRange(1))
@click.option("--val-per-class", default=10, show_default=True, type=click.IntRange(1))
@click.option("--size", default=64, show_default=True, type=click.IntRange(16), help="Image side in pixels.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists and is not empty.")
def make_sample_imagenet_cmd(out: str, subsets: str | None, train_per_class: int, val_per_class: int,
                             size: int, seed: int, overwrite: bool) -> None:
    """Generate a small ImageNet-layout tree (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG) of synthetic images.

    Hard-subset classes draw small objects on busy backgrounds, easy-subset classes large objects on
    plain ones, so complexity scoring separates them for a real reason. Deterministic in --seed.

    \b
    Examples:
      compdd make-sample-imagenet sample-in1k
      compdd make-sample-imagenet big --size 128 --train-per-class 300 --subsets bird-easy,bird-hard
    """
    from pathlib import Path

    from compdd.sample import make_sample_imagenet

    ensure_writable_dir(Path(out).resolve().parent, "parent of OUT")
    names = [s.strip() for s in subsets.split(",") if s.strip()] if subsets else None
    info = make_sample_imagenet(out, names, train_per_class=train_per_class, val_per_class=val_per_class,
                                size=size, seed=seed, overwrite=overwrite)
    click.echo(f"wrote {info.num_classes} classes x ({info.train_per_class} train + {info.val_per_class} val) "
               f"images of {info.size} px to {info.root}")


COMMANDS = [make_sample_imagenet_cmd]
