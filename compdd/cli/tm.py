"""Trajectory-matching commands: ``experts`` (train expert trajectories) and ``show-config``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from compdd.cli._options import parse_sets


@click.command("experts")
@click.option("--subset", required=True, help="Subset name, e.g. bird-hard (see `compdd list-subsets`).")
@click.option("--res", default=128, show_default=True, type=click.IntRange(min=8), help="Resolution in pixels.")
@click.option("--imagenet-root", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="ImageNet folder with train/<wnid>/ (and val/<wnid>/ for the accuracy log).")
@click.option("--num-experts", default=100, show_default=True, type=click.IntRange(min=1),
              help="Experts to have in the folder; finished ones are kept, so rerunning resumes.")
@click.option("--epochs", type=click.IntRange(min=1), help="Training epochs per expert. Default: 50 for sgd (MTT), "
              "100 for gsam (FTD/DATM/EDF).")
@click.option("--optimizer", type=click.Choice(["sgd", "gsam"]), default="gsam", show_default=True,
              help="sgd: MTT's experts; gsam: the flat experts of FTD, DATM and EDF.")
@click.option("--model", help="Network. Default by resolution: convnet_d3 (32), convnet_d4 (64), convnet_d5 (128).")
@click.option("--lr", default=0.01, show_default=True, type=float, help="Expert SGD learning rate (lr_teacher).")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(min=1))
@click.option("--rho", default=0.01, show_default=True, type=float, help="GSAM perturbation radius.")
@click.option("--alpha", default=0.3, show_default=True, type=float, help="GSAM ascent weight.")
@click.option("--no-dsa", is_flag=True, help="Train without DSA augmentation.")
@click.option("--crop-ratio", default=0.125, show_default=True, type=float, help="DSA crop ratio.")
@click.option("--fp16", is_flag=True, help="Store trajectories in float16: half the disk; parameters rounded to "
              "~3 significant digits (each expert records the resulting error of its epoch-to-epoch changes).")
@click.option("--keep-epochs", type=click.IntRange(min=0), help="Store only epochs 0..K and the final one: disk "
              "shrinks in proportion; distillation cannot then target epochs beyond K.")
@click.option("--experts", "folder", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder. Default: COMPDD_HOME/experts/SUBSET/RESpx/MODEL/OPTIMIZER-AUGMENTATION, "
                   "where the trajectory-matching methods look for them.")
@click.option("--seed", default=0, show_default=True, type=int, help="Base seed; expert i is seeded from (seed, i).")
@click.option("--no-val", is_flag=True, help="Do not load the validation split (no accuracy log).")
@click.option("--device", help="torch device; default cuda if available, else cpu.")
def experts_cmd(subset: str, res: int, imagenet_root: Path, num_experts: int, epochs: int | None, optimizer: str,
                model: str | None, lr: float, batch_size: int, rho: float, alpha: float, no_dsa: bool,
                crop_ratio: float, fp16: bool, keep_epochs: int | None, folder: Path | None, seed: int, no_val: bool,
                device: str | None) -> None:
    """Train expert trajectories on the real training split of a subset (for mtt, ftd, datm, edf).

    Each expert is trained from its own seeded initialisation on the whole training split and its parameters
    are stored before training and after every epoch. The per-epoch accuracy is measured on the validation
    split and only logged (nothing selects experts by it). Interrupt at any time: rerunning keeps finished
    experts and trains the rest.

    \b
    Examples:
      compdd experts --subset bird-hard --res 128 --imagenet-root /data/imagenet
      compdd experts --subset bird-hard --res 32 --num-experts 5 --epochs 20 --imagenet-root sample-in1k
      compdd experts --subset bird-hard --optimizer sgd --epochs 50 --fp16 --imagenet-root /data/imagenet
    """
    import torch

    from compdd.evaluation.run import default_device, load_split
    from compdd.methods.tm.engine import MODEL_BY_RES
    from compdd.methods.tm.experts import (
        DEFAULT_EPOCHS,
        ExpertConfig,
        default_experts_dir,
        disk_bytes,
        human_bytes,
        train_experts,
    )
    from compdd.models import create_model

    if model is None:
        if res not in MODEL_BY_RES:
            raise click.BadParameter(f"no default model for {res} px; pass --model", param_hint="--model")
        model = MODEL_BY_RES[res]
    config = ExpertConfig(model=model, optimizer=optimizer, epochs=epochs or DEFAULT_EPOCHS[optimizer], lr=lr,
                          batch_size=batch_size, rho=rho, alpha=alpha, dsa=not no_dsa, dsa_crop_ratio=crop_ratio,
                          storage_dtype="float16" if fp16 else "float32", keep_epochs=keep_epochs, seed=seed)
    folder = folder or default_experts_dir(subset, res, model, optimizer, config.augmentation_tag)
    train = load_split(subset, "train", res, root=imagenet_root)
    val = None if no_val else load_split(subset, "validation", res, root=imagenet_root)
    num_params = sum(p.numel() for p in create_model(model, num_classes=train.num_classes, res=res).parameters())
    per_expert = disk_bytes(num_params, config, 1)
    click.echo(f"experts: {folder}\n"
               f"  {num_experts} x {model} ({num_params:,} parameters) on {subset} ({len(train)} images, {res} px), "
               f"{config.optimizer}, {config.epochs} epochs, {config.augmentation_tag}\n"
               f"  disk: {len(config.saved_epochs())} snapshots x {config.storage_dtype} = {human_bytes(per_expert)} "
               f"per expert, {human_bytes(per_expert * num_experts)} in all")
    experts = train_experts(train, folder, config, num_experts, val=val, device=torch.device(device or default_device()))
    accs = [e["accuracy"][-1] for e in experts.entries if e.get("accuracy")]
    line = f"{len(experts)} experts in {folder}"
    if accs:
        line += f"; final-epoch validation accuracy {sum(accs) / len(accs):.1f}% (mean), {min(accs):.1f}-{max(accs):.1f}%"
    click.echo(line)


@click.command("show-config")
@click.option("--method", required=True, help="Method name (see `compdd list-methods`).")
@click.option("--subset", required=True, help="Subset name, e.g. bird-hard.")
@click.option("--ipc", required=True, type=click.IntRange(min=1), help="Images per class.")
@click.option("--res", default=128, show_default=True, type=click.IntRange(min=8), help="Resolution in pixels.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a hyper-parameter (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show_config_cmd(method: str, subset: str, ipc: int, res: int, sets: tuple[str, ...], as_json: bool) -> None:
    """Print the configuration a method would run with: defaults, its shipped preset, your --set overrides.

    \b
    Examples:
      compdd show-config --method datm --subset bird-hard --ipc 10
      compdd show-config --method mtt --subset imagenette --ipc 1 --set iterations=500
    """
    from compdd.benchmark import get_subset
    from compdd.methods import METHODS, create_method

    get_subset(subset)  # unknown names fail here with the list of known ones
    cls = METHODS.get(method)
    preset = cls.preset(subset, ipc, res)
    user = parse_sets(sets)
    config = create_method(method, subset=subset, ipc=ipc, res=res, **user).config.model_dump(mode="json")
    if as_json:
        click.echo(json.dumps(config, indent=1))
        return
    click.echo(f"# {method} on {subset}, ipc {ipc}, {res} px")
    width = max((len(k) for k in config), default=0)
    for key, value in config.items():
        source = "--set" if key in user else "preset" if key in preset else "default"
        if key == "model" and value is None and hasattr(cls.Config, "model_for"):
            value, source = cls.Config(**config).model_for(res), f"{source}: by resolution"
        click.echo(f"{key + ':':<{width + 1}} {json.dumps(value):<24} # {source}")


COMMANDS = [experts_cmd, show_config_cmd]
