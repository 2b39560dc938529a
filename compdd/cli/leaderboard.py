"""``compdd submit``, ``compdd verify`` and ``compdd leaderboard build|check``: thin commands over compdd.leaderboard."""

from __future__ import annotations

import sys

import click


def _rejected(e) -> None:  # a compdd.leaderboard.validate.SubmissionRejected
    click.secho(f"rejected: {e.source}", fg="red", err=True)
    for v in e.violations:
        click.echo(f"  [{v.rule}] {v.message}", err=True)
    sys.exit(2)


@click.command("submit")
@click.argument("result", type=click.Path(dir_okay=False))
@click.option("--to-hub", "repo_id", metavar="ORG/REPO", help="Open a pull request on this Hub dataset repo instead "
              "of copying into the local leaderboard folder (endpoint from HF_ENDPOINT, token from HF_TOKEN or `hf auth login`).")
@click.option("--leaderboard-dir", default="leaderboard", show_default=True, type=click.Path(file_okay=False),
              help="Local leaderboard folder; the record goes to <dir>/results/<protocol>/<subset>/<method>-ipc<k>.json.")
@click.option("--allow-nonstandard", is_flag=True, help="Accept a record whose protocol was overridden (fewer epochs "
              "or seeds); it is listed marked non-standard and never ranked.")
@click.option("--replace", is_flag=True, help="Replace an existing entry for the same method/subset/IPC/protocol.")
@click.option("--dry-run", is_flag=True, help="Validate and show what would be written or sent; change nothing.")
def submit_cmd(result: str, repo_id: str | None, leaderboard_dir: str, allow_nonstandard: bool, replace: bool,
               dry_run: bool) -> None:
    """Validate a result record and add it to the leaderboard (or open a Hub pull request).

    Every rule is checked and every failure is listed (exit status 2): schema, names, protocol (known, at this
    compdd's version), subset hash, n images = classes x IPC, >= 5 seeds, accuracy between chance and full data
    + margin, artifact sha256, non-standard overrides, self-claimed verification, overwrite.

    \b
    Examples:
      compdd submit runs/edf-bird-hard-10/result.json
      compdd submit result.json --dry-run
      compdd submit result.json --allow-nonstandard --leaderboard-dir my-board
      compdd submit result.json --to-hub comp-dd/results
    """
    from compdd.leaderboard.submit import submit_local, submit_to_hub
    from compdd.leaderboard.validate import SubmissionRejected

    try:
        if repo_id:
            sub = submit_to_hub(result, repo_id, allow_nonstandard=allow_nonstandard, replace=replace,
                                dry_run=dry_run)
        else:
            sub = submit_local(result, leaderboard_dir, allow_nonstandard=allow_nonstandard, replace=replace,
                               dry_run=dry_run)
    except SubmissionRejected as e:
        _rejected(e)
        return
    r = sub.record
    what = f"{r.method} / {r.subset} / IPC {r.ipc} / {r.protocol}: {r.top1_mean:.2f}%"
    flag = " (non-standard)" if r.nonstandard else ""
    if sub.dry_run:
        where = f"hub dataset {repo_id}, pull request adding" if repo_id else "local file"
        click.echo(f"dry run: valid{flag}. Would write {len(sub.payload)} bytes (sha256 {sub.sha256}) to "
                   f"{where} {sub.path_in_repo}\n  {what}")
    elif repo_id:
        click.echo(f"opened pull request {sub.destination}{flag}\n  {what}")
    else:
        click.echo(f"added {sub.destination}{flag}\n  {what}\nrebuild with `compdd leaderboard build`")


@click.command("verify")
@click.argument("result", type=click.Path(dir_okay=False))
@click.option("--imagenet-root", type=click.Path(file_okay=False), help="ImageNet folder (train/ and val/) for the "
              "test split.")
@click.option("--artifact", type=click.Path(file_okay=False), help="The distilled-set folder, if not at the "
              "record's artifact.path.")
@click.option("--seeds", "n_seeds", default=2, show_default=True, help="How many of the record's seeds to re-run.")
@click.option("--abs-tol", default=1.0, show_default=True, help="Tolerance floor in top-1 points.")
@click.option("--sigmas", default=2.0, show_default=True, help="Tolerance in units of the record's seed std "
              "(the larger of the two applies).")
@click.option("--device", help="cuda or cpu (default: cuda if available).")
@click.option("--no-write", is_flag=True, help="Only report; do not mark the record verified.")
def verify_cmd(result: str, imagenet_root: str | None, artifact: str | None, n_seeds: int, abs_tol: float,
               sigmas: float, device: str | None, no_write: bool) -> None:
    """Re-run seeds of a submitted distilled set under its protocol; mark the record verified if they agree.

    Exit status 0 when within tolerance (the record file gets `verified: true` and the evidence), 1 when not.

    \b
    Example:
      compdd verify leaderboard/results/dd-v1/bird-hard/edf-ipc10.json --imagenet-root /data/imagenet --seeds 2
    """
    from compdd.leaderboard.verify import verify_record

    v = verify_record(result, imagenet_root=imagenet_root, artifact=artifact, seeds=n_seeds, abs_tol=abs_tol,
                      sigmas=sigmas, device=device, write=not no_write)
    for seed, sub, got in v.per_seed:
        click.echo(f"  seed {seed}: submitted {'-' if sub is None else f'{sub:.2f}'}  re-run {got:.2f}")
    click.echo(v.summary())
    if not v.passed:
        sys.exit(1)
    click.echo("verified" + ("" if no_write else f"; marked {result}"))


@click.group("leaderboard")
def leaderboard_group() -> None:
    """Build and check the leaderboard from its result records.

    \b
    Examples:
      compdd leaderboard build
      compdd leaderboard check --results leaderboard/results
    """


@leaderboard_group.command("build")
@click.option("--results", default="leaderboard/results", show_default=True, type=click.Path(file_okay=False),
              help="Folder of records laid out as <protocol>/<subset>/<method>-ipc<k>.json.")
@click.option("--out", default="leaderboard", show_default=True, type=click.Path(file_okay=False),
              help="Where README.md, leaderboard.csv, index.html and plots/ are written.")
def build_cmd(results: str, out: str) -> None:
    """Write README.md, leaderboard.csv, index.html and plots/ from the records (same records, same bytes).

    \b
    Example:
      compdd leaderboard build --results leaderboard/results --out leaderboard
    """
    from compdd.leaderboard.render import build

    written = build(results, out)
    for name in sorted(written):
        click.echo(f"wrote {written[name]}")


@leaderboard_group.command("check")
@click.option("--results", default="leaderboard/results", show_default=True, type=click.Path(file_okay=False),
              help="Folder of records to check.")
def check_cmd(results: str) -> None:
    """Apply the submission rules (except overwrite) to every record already in the leaderboard.

    Verified and non-standard records are accepted here: they got there through `verify` and
    `submit --allow-nonstandard`. Exit status 2 lists every failing record.

    \b
    Example:
      compdd leaderboard check
    """
    from compdd.leaderboard.validate import check_existing

    bad = check_existing(results)
    for path, violations in bad:
        click.secho(f"{path}:", fg="red", err=True)
        for v in violations:
            click.echo(f"  {v}", err=True)
    if bad:
        sys.exit(2)
    click.echo(f"all records under {results} pass")


COMMANDS = [submit_cmd, verify_cmd, leaderboard_group]
