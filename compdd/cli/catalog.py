"""Commands that show what compdd knows: subsets, methods, models, protocols, and ``info``."""

from __future__ import annotations

import fnmatch
import json

import click

from compdd import benchmark, imagenet


def _subset_rows(pattern: str, definition: str | None) -> list[dict]:
    if definition:
        subs = [s for s in benchmark.load_definition(definition).subsets if fnmatch.fnmatch(s.name, pattern)]
    else:
        subs = [benchmark.get_subset(n) for n in benchmark.list_subsets(pattern)]
    return [
        {"name": s.name, "definition": s.definition, "category": s.category, "difficulty": s.difficulty,
         "classes": [{"label": i, "wnid": w, "imagenet_index": imagenet.index_of(w), "name": imagenet.name_of(w)}
                     for i, w in enumerate(s.wnids)]}
        for s in subs
    ]


@click.command("list-subsets")
@click.argument("pattern", default="*")
@click.option("--definition", help="A definition file or built-in name (comp-dd-v1, classic). Default: both built-ins.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--wnids-only", is_flag=True, help="One line per subset: name and wnids.")
def list_subsets_cmd(pattern: str, definition: str | None, as_json: bool, wnids_only: bool) -> None:
    """List benchmark subsets with their classes (local label, wnid, ImageNet index, name).

    \b
    Examples:
      compdd list-subsets                 # all 16 Comp-DD subsets and the 6 classic ones
      compdd list-subsets '*-hard'
      compdd list-subsets bird-hard --json
    """
    rows = _subset_rows(pattern, definition)
    if not rows:
        raise click.UsageError(f"no subset matches {pattern!r}; try `compdd list-subsets` to see all")
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    for r in rows:
        if wnids_only:
            click.echo(f"{r['name']}\t{' '.join(c['wnid'] for c in r['classes'])}")
            continue
        tag = f"{r['category']}/{r['difficulty']}" if r["category"] else "classic"
        click.secho(f"{r['name']}  ({tag}, {r['definition']})", bold=True)
        for c in r["classes"]:
            click.echo(f"  {c['label']:>2}  {c['wnid']}  {c['imagenet_index']:>3}  {c['name']}")
    errata = [e for d in benchmark.BUILTIN for e in benchmark.load_definition(d).errata]
    if not definition and any(e["subset"] in {r["name"] for r in rows} for e in errata):
        click.echo("\nnote: music-hard differs from the paper (a repeated class was replaced); see `compdd info`.")


@click.command("list-methods")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_methods_cmd(as_json: bool) -> None:
    """List distillation methods: built-ins and those installed through the `compdd.methods` entry point.

    \b
    Example:
      compdd list-methods
    """
    from compdd.methods import METHODS

    rows = [{"name": n, **METHODS.meta(n)} for n in METHODS.names()]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    if not rows:
        click.echo("no methods installed")
    for r in rows:
        click.echo(f"{r['name']:<12} {r.get('origin', ''):<12} {r.get('description', '')}")


@click.command("list-models")
def list_models_cmd() -> None:
    """List registered networks (create one with compdd.create_model(name, num_classes, res)).

    \b
    Example:
      compdd list-models
    """
    from compdd.models import list_models

    for n in list_models():
        click.echo(n)


@click.command("list-protocols")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (the full protocol).")
def list_protocols_cmd(as_json: bool) -> None:
    """List evaluation protocols (versioned; changing any number makes a new version).

    \b
    Example:
      compdd list-protocols
    """
    from compdd.evaluation.protocols import PROTOCOLS

    protos = [PROTOCOLS.get(n) for n in PROTOCOLS.names()]
    if as_json:
        click.echo(json.dumps([p.model_dump(mode="json") for p in protos], indent=1))
        return
    for p in protos:
        click.echo(f"{p.id:<16} {p.epochs:>5} epochs  models {p.models}  labels {p.label_mode}  seeds {list(p.seeds)}")


@click.command("info")
def info_cmd() -> None:
    """Summarise the installed toolkit: version, benchmark definitions and errata, methods, models, protocols.

    \b
    Example:
      compdd info
    """
    import compdd

    click.secho(f"compdd {compdd.__version__}", bold=True)
    for name in benchmark.BUILTIN:
        d = benchmark.load_definition(name)
        click.echo(f"\ndefinition {d.id}: {len(d.subsets)} subsets"
                   + (f" in {len(d.categories)} categories" if d.categories else ""))
        click.echo("  " + ", ".join(s.name for s in d.subsets))
        for e in d.errata:
            click.echo(f"  erratum ({e['subset']}, position {e['position']}): {e['removed']} "
                       f"({imagenet.name_of(e['removed'])}) -> {e['replacement']} ({imagenet.name_of(e['replacement'])})")
    click.echo(f"\nmethods:   {', '.join(compdd.list_methods()) or '(none yet)'}")
    click.echo(f"models:    {', '.join(compdd.list_models()) or '(none yet)'}")
    click.echo(f"protocols: {', '.join(compdd.list_protocols())}")


COMMANDS = [list_subsets_cmd, list_methods_cmd, list_models_cmd, list_protocols_cmd, info_cmd]
