"""``compdd export`` and ``compdd publish``: the Hub layout on disk, and sending it to a dataset repo."""

from __future__ import annotations

import re

import click

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB)?\s*$", re.I)


def _parse_size(value: str) -> int:
    m = _SIZE.match(value)
    if not m:
        raise click.BadParameter(f"{value!r} is not a size like 500MB or 2GB", param_hint="--shard-size")
    factor = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9}[(m.group(2) or "B").upper()]
    return max(1, int(float(m.group(1)) * factor))


def _names(value: str | None) -> list[str] | None:
    return [s.strip() for s in value.split(",") if s.strip()] if value else None


@click.command("export")
@click.option("--imagenet-root", required=True, type=click.Path(file_okay=False),
              help="ImageNet folder holding train/<wnid>/ and val/<wnid>/.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Export folder (created if missing).")
@click.option("--subsets", help="Comma-separated subset names. Default: every subset of the definition(s).")
@click.option("--definition", default="comp-dd-v1", show_default=True,
              help="Definition file (e.g. from `compdd build-subsets`) or built-in name.")
@click.option("--classic", is_flag=True, help="Also export the classic subsets (imagenette, imagewoof, ...).")
@click.option("--scores", type=click.Path(),
              help="classes.csv of a `compdd score` run (or the run folder); its values go into the dataset card.")
@click.option("--scores-layer", help="Layer to take from --scores when the run scored several (e.g. layer4).")
@click.option("--repo-id", help="Hub repo named in the card's loading examples (default ORG/comp-dd).")
@click.option("--shard-size", default="500MB", show_default=True, help="Target Parquet shard size.")
@click.option("--card-template", type=click.Path(dir_okay=False), help="Card template. Default: DATASET_CARD.md.")
@click.option("--overwrite", is_flag=True, help="Redo configs that OUT already holds, even finished ones.")
def export_cmd(imagenet_root: str, out: str, subsets: str | None, definition: str, classic: bool, scores: str | None,
               scores_layer: str | None, repo_id: str | None, shard_size: str, card_template: str | None,
               overwrite: bool) -> None:
    """Write subsets in the Hub layout: one config per subset, Parquet shards with the original JPEG bytes, and a
    README.md card. Resumable: finished configs are kept, an interrupted one is redone.

    \b
    Examples:
      compdd export --imagenet-root /data/imagenet --out comp-dd-export
      compdd export --imagenet-root sample-in1k --out export --subsets bird-easy,bird-hard
      compdd export --imagenet-root /data/imagenet --out export --definition my-def.json --scores scores/
    """
    from compdd.hub.export import export_dataset

    rep = export_dataset(imagenet_root, out, _names(subsets), definition=definition, classic=classic, scores=scores,
                         scores_layer=scores_layer, repo_id=repo_id, shard_bytes=_parse_size(shard_size), overwrite=overwrite,
                         card_template=card_template)
    for name, rec in rep.records.items():
        sp = rec["splits"]
        state = "written" if name in rep.written else "kept" if name in rep.kept else "already there"
        skipped = sum(len(s["skipped"]) for s in sp.values())
        click.echo(f"{name:<14} {state:<13} train {sp['train']['num_examples']:>7,}  validation "
                   f"{sp['validation']['num_examples']:>6,}" + (f"  skipped {skipped} undecodable" if skipped else ""))
    click.echo(f"card: {rep.out / 'README.md'}\n"
               f"check it: python -c \"import datasets; print(datasets.load_dataset('{rep.out}', "
               f"'{next(iter(rep.records))}'))\"\n"
               f"publish:  compdd publish --repo-id {repo_id or 'ORG/comp-dd'} --from {rep.out} --dry-run")


@click.command("publish")
@click.option("--repo-id", required=True, help="Dataset repo ORG/NAME (created if missing).")
@click.option("--from", "folder", required=True, type=click.Path(file_okay=False), help="Folder from `compdd export`.")
@click.option("--private", is_flag=True, help="Create the repo as private.")
@click.option("--revision", default=None, help="Branch to commit to (created from main if missing). Default: main.")
@click.option("--gated", type=click.Choice(["auto", "manual", "none"]), default="auto", show_default=True,
              help="Access gating (ImageNet terms): auto-approve, manual approval, or none.")
@click.option("--message", "commit_message", help="Commit message. Default: a summary of the configs.")
@click.option("--dry-run", is_flag=True, help="Print every file, its size and the commit; send nothing.")
def publish_cmd(repo_id: str, folder: str, private: bool, revision: str | None, gated: str, commit_message: str | None,
                dry_run: bool) -> None:
    """Upload an export folder to a Hugging Face dataset repo as one commit.

    The token comes from `hf auth login` or HF_TOKEN and is never printed. Data files in the repo that the folder
    does not hold are deleted in the same commit; other files (e.g. .gitattributes) are kept.

    \b
    Examples:
      compdd publish --repo-id my-lab/comp-dd --from comp-dd-export --dry-run
      compdd publish --repo-id my-lab/comp-dd --from comp-dd-export
      compdd publish --repo-id my-lab/comp-dd --from comp-dd-export --revision v1.1 --private
    """
    from compdd.hub.publish import plan_publish, publish

    plan = plan_publish(folder, repo_id, revision=revision, private=private,
                        gated=None if gated == "none" else gated, commit_message=commit_message)
    click.echo(plan.describe())
    if dry_run:
        click.echo("dry run: nothing was sent")
        return
    res = publish(plan)
    click.echo(f"published {len(res.uploaded)} files"
               + (f", deleted {len(res.deleted)} stale ones" if res.deleted else "") + f": {res.commit_url}")


COMMANDS = [export_cmd, publish_cmd]
