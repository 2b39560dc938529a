"""``compdd export``: write subsets of an ImageNet folder in the Hub layout (see :mod:`compdd.hub.layout`).

Images keep their original bytes (no re-encode); a file that cannot be decoded is skipped and listed in the
config's record. Work streams: files are read one row group (100 images) at a time straight into Parquet shards
of about ``shard_bytes`` each, so memory stays bounded whatever the subset size. Each config is written to a
temporary folder and renamed into place when complete, so an interrupted export leaves only finished configs;
running it again skips those (their record matches the request) and redoes the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from compdd import __version__, imagenet
from compdd.benchmark import Definition, Subset, load_definition
from compdd.hub import card, layout
from compdd.paths import atomic_path, atomic_write_text, ensure_writable_dir, sha256_file

log = logging.getLogger(__name__)

DEFAULT_SHARD_BYTES = 500 * 1000 * 1000  # the size push_to_hub uses ("500MB")
ROW_GROUP = 100  # rows per Parquet row group, as datasets writes image data (bounded memory, fast random access)


@dataclass
class ExportReport:
    out: Path
    written: list[str] = field(default_factory=list)  # configs written by this run
    kept: list[str] = field(default_factory=list)  # finished configs found and skipped (resume)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # every config now in ``out``

    @property
    def skipped_images(self) -> dict[str, list[str]]:
        return {c: [p for s in r["splits"].values() for p in s["skipped"]]
                for c, r in self.records.items() if any(s["skipped"] for s in r["splits"].values())}


@dataclass
class _ConfigPlan:
    subset: Subset
    definition: Definition
    files: dict[str, list[tuple[int, Path, int]]]  # hub split -> [(label, path, size)]
    key: str

    @property
    def num_images(self) -> int:
        return sum(len(f) for f in self.files.values())


def select_subsets(definition: str | os.PathLike[str] = "comp-dd-v1", names: list[str] | None = None,
                   classic: bool = False) -> list[tuple[Subset, Definition]]:
    """The subsets to export: ``names`` (default: all) from ``definition``, plus the classic ones if asked."""
    defs = [load_definition(definition)]
    if classic and str(definition) != "classic":
        defs.append(load_definition("classic"))
    pool: dict[str, tuple[Subset, Definition]] = {}
    for d in defs:
        for s in d.subsets:
            if s.name in pool:
                raise ValueError(f"subset {s.name!r} is defined both in {pool[s.name][1].id} and {d.id}; "
                                 "export them into separate folders")
            pool[s.name] = (s, d)
    if not names:
        return list(pool.values())
    unknown = [n for n in names if n not in pool]
    if unknown:
        hint = " (classic subsets need --classic)" if not classic and any(
            n in {s.name for s in load_definition("classic").subsets} for n in unknown) else ""
        raise KeyError(f"--subsets: unknown subset(s) {unknown}{hint}; known: {', '.join(pool)}")
    return [pool[n] for n in dict.fromkeys(names)]


def _plan(subset: Subset, definition: Definition, root: Path, shard_bytes: int) -> _ConfigPlan:
    files: dict[str, list[tuple[int, Path, int]]] = {}
    for hub_split, folder in layout.SPLITS.items():
        files[hub_split] = [(c, p, p.stat().st_size) for c, w in enumerate(subset.wnids)
                            for p in imagenet.list_images(root, folder, w)]
        if not files[hub_split]:
            raise FileNotFoundError(f"{root}/{folder} has no images for any class of {subset.name!r}")
    # Everything that determines the bytes written: a matching finished config can be kept as is.
    ident = {"format": layout.RECORD_FORMAT, "subset": subset.sha256(), "shard_bytes": shard_bytes,
             "files": {s: [(p.relative_to(root).as_posix(), n) for _, p, n in f] for s, f in files.items()}}
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()
    return _ConfigPlan(subset, definition, files, key)


def _shard_bounds(sizes: list[int], shard_bytes: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) ranges with about equal bytes, each at most ~``shard_bytes``."""
    total = sum(sizes)
    n = max(1, min(len(sizes), math.ceil(total / shard_bytes)))
    bounds, start, acc = [], 0, 0
    for i, s in enumerate(sizes):
        acc += s
        # close shard k once the running total passes k/n of the bytes, keeping at least one row per shard
        if len(bounds) < n - 1 and acc >= total * (len(bounds) + 1) / n and len(sizes) - (i + 1) >= n - 1 - len(bounds):
            bounds.append((start, i + 1))
            start = i + 1
    bounds.append((start, len(sizes)))
    return bounds


def _rows(plan: _ConfigPlan, files: list[tuple[int, Path, int]], root: Path, per_class: list[int],
          skipped: list[str], bar) -> Iterator[dict[str, Any]]:
    values = layout.row_values(plan.subset)
    for label, p, _ in files:
        name = p.relative_to(root).as_posix()
        data = p.read_bytes()
        bar.update(1)
        try:
            imagenet.decode_image(data, name)  # a file no reader can decode is skipped, not exported
        except imagenet.UnreadableImage as e:
            log.warning("skipping %s", e)
            skipped.append(name)
            continue
        idx, wnid, cname = values[label]
        per_class[label] += 1
        yield {"image": {"bytes": data, "path": name}, "label": label, "imagenet_index": idx, "wnid": wnid,
               "class_name": cname}


def _write_shard(path: Path, schema, rows: Iterator[dict[str, Any]]) -> int:
    """Stream ``rows`` into one Parquet file, one row group at a time; returns the Arrow bytes written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    nbytes = 0
    with pq.ParquetWriter(path, schema) as writer:
        while batch := list(islice(rows, ROW_GROUP)):
            table = pa.Table.from_pylist(batch, schema=schema)
            nbytes += table.nbytes
            writer.write_table(table, row_group_size=ROW_GROUP)
    return nbytes


def _write_split(plan: _ConfigPlan, split: str, root: Path, folder: Path, shard_bytes: int, bar) -> dict[str, Any]:
    sub = plan.subset
    schema = layout.features(sub).arrow_schema
    files = plan.files[split]
    out_files, skipped, per_class, num_bytes = [], [], [0] * sub.num_classes, 0
    bounds = _shard_bounds([n for _, _, n in files], shard_bytes)
    for i, (a, b) in enumerate(bounds):
        rel = layout.shard_name(sub.name, split, i, len(bounds))
        path = folder.parent / rel
        num_bytes += _write_shard(path, schema, _rows(plan, files[a:b], root, per_class, skipped, bar))
        out_files.append({"path": rel, "size": path.stat().st_size, "sha256": sha256_file(path)})
    return {"num_examples": sum(per_class), "num_bytes": num_bytes, "per_class": per_class,
            "skipped": skipped, "files": out_files}


def _record(plan: _ConfigPlan, splits: dict[str, Any]) -> dict[str, Any]:
    sub, d = plan.subset, plan.definition
    return {
        "format": layout.RECORD_FORMAT,
        "config": sub.name,
        "key": plan.key,
        "compdd_version": __version__,
        "subset": {"name": sub.name, "category": sub.category, "difficulty": sub.difficulty,
                   "wnids": list(sub.wnids), "sha256": sub.sha256()},
        "definition": {"id": d.id, "name": d.name, "version": d.version, "sha256": d.sha256(),
                       "description": d.description, "provenance": d.provenance},
        "errata": [e for e in d.errata if e.get("subset") == sub.name],
        "splits": splits,
    }


def _remove_stale_temps(out: Path, config: str) -> None:
    """Temporary folders of an export of ``config`` that was killed (atomic_path names them ``.<config>.*.tmp``)."""
    for p in out.glob(f".{config}.*.tmp"):
        if p.is_dir():
            log.info("removing unfinished export %s", p)
            shutil.rmtree(p, ignore_errors=True)


def export_dataset(
    imagenet_root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    subsets: list[str] | None = None,
    *,
    definition: str | os.PathLike[str] = "comp-dd-v1",
    classic: bool = False,
    scores: str | os.PathLike[str] | None = None,
    scores_layer: str | None = None,
    repo_id: str | None = None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    overwrite: bool = False,
    card_template: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> ExportReport:
    """Export ``subsets`` of ``definition`` (default: all; ``classic=True`` adds imagenette & co.) to ``out``.

    ``scores``: ``classes.csv`` of a ``compdd score`` run (or its folder); its values go into the card
    (``scores_layer`` picks the layer when the run scored several).
    ``repo_id``: the Hub repo the card's loading examples name. Returns what was written and kept.
    """
    from tqdm.auto import tqdm

    if shard_bytes < 1:
        raise ValueError(f"shard size must be positive, got {shard_bytes}")
    if repo_id is not None:
        layout.check_repo_id(repo_id)
    chosen = select_subsets(definition, subsets, classic)
    class_scores = card.read_scores(scores, scores_layer) if scores is not None else None
    template = card.load_template(card_template)
    root = Path(imagenet_root).resolve()
    for folder in layout.SPLITS.values():
        imagenet.split_dir(root, folder)  # a clear error before any work
    plans = [_plan(s, d, root, shard_bytes) for s, d in chosen]
    out = ensure_writable_dir(out, "--out")
    report = ExportReport(out)

    todo = []
    for plan in plans:
        name = plan.subset.name
        _remove_stale_temps(out, name)
        target = out / name
        rec = layout.read_record(target)
        if rec is not None and rec.get("key") == plan.key and not overwrite:
            report.kept.append(name)
            continue
        if target.exists() and not overwrite:
            why = "was exported from different files or settings" if rec else "is not a finished compdd export"
            raise FileExistsError(f"{target} {why}; pass --overwrite to replace it, or choose another --out")
        todo.append(plan)

    with tqdm(total=sum(p.num_images for p in todo), desc="exporting", unit="img", disable=not progress) as bar:
        for plan in todo:
            bar.set_description(f"exporting {plan.subset.name}")
            with atomic_path(out / plan.subset.name) as tmp:
                tmp.mkdir()
                splits = {s: _write_split(plan, s, root, tmp, shard_bytes, bar) for s in layout.SPLITS}
                atomic_write_text(tmp / layout.RECORD_FILE, json.dumps(_record(plan, splits), indent=1) + "\n")
            report.written.append(plan.subset.name)

    report.records = layout.find_records(out)
    atomic_write_text(out / layout.README, card.render_readme(report.records, template, scores=class_scores,
                                                              repo_id=repo_id))
    return report
