"""The dataset card (README.md of an export): YAML front matter plus a body rendered from ``DATASET_CARD.md``.

The template is ordinary markdown. Regions between ``<!-- compdd:NAME -->`` and ``<!-- /compdd:NAME -->`` are
regenerated from the export's records: ``overview``, ``subsets``, ``complexity``, ``counts``, ``errata`` and
``load``. Everything else is copied as written. A template may leave any block out; an unknown block is an error.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from compdd import imagenet
from compdd.benchmark import Definition

IMAGENET_TERMS = "https://image-net.org/download.php"
GATED_PROMPT = (
    "Comp-DD redistributes ImageNet-1K (ILSVRC 2012) images. By requesting access you agree to the ImageNet terms "
    f"of access ({IMAGENET_TERMS}): you will use the images only for non-commercial research and educational "
    "purposes, you accept full responsibility for your use of them, and you will not redistribute them."
)
GATED_FIELDS = {
    "I agree to use these images only for non-commercial research and educational purposes": "checkbox",
    "I have read and accept the ImageNet terms of access": "checkbox",
}
DEFAULT_REPO_ID = "ORG/comp-dd"
_BLOCK = re.compile(r"(<!-- compdd:(?P<name>[a-z-]+) -->\n)(?P<body>.*?)(<!-- /compdd:(?P=name) -->)", re.S)
_SCORE_COLUMNS = ("complexity_mean", "complexity", "mean")


def load_template(path: str | os.PathLike[str] | None = None) -> str:
    """The card template: ``path``, or the ``DATASET_CARD.md`` shipped with compdd."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"--card-template {str(p)!r} does not exist")
        return p.read_text("utf-8")
    res = resources.files("compdd.hub").joinpath("DATASET_CARD.md")
    if not res.is_file():
        raise FileNotFoundError("the packaged DATASET_CARD.md is missing from this install; pass --card-template "
                                "pointing at DATASET_CARD.md from the compdd repository")
    return res.read_text("utf-8")


@dataclass
class Scores:
    """Per-class complexity from ``compdd score`` (complexity = 1 - activated fraction) and where it came from."""

    values: dict[str, float]
    source: str  # file name
    layer: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # the run's CAM settings, when run.json is beside the CSV


def read_scores(path: str | os.PathLike[str], layer: str | None = None) -> Scores:
    """Read ``classes.csv`` of a ``compdd score`` run (or the run folder holding it).

    The CSV needs a ``wnid`` column and ``complexity_mean`` (or ``complexity`` / ``mean``); with a ``layer`` column
    holding several layers, ``layer`` picks one. The run's CAM settings come from ``run.json`` when it is there.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "classes.csv"
    try:
        with p.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise FileNotFoundError(f"--scores {str(p)!r} does not exist; `compdd score` writes classes.csv") from None
    cols = set(rows[0]) if rows else set()
    col = next((c for c in _SCORE_COLUMNS if c in cols), None)
    if "wnid" not in cols or col is None:
        raise ValueError(f"--scores {p}: expected a 'wnid' column and one of {list(_SCORE_COLUMNS)}, "
                         f"found {sorted(cols) or 'no rows'}")
    layers = sorted({r["layer"] for r in rows}) if "layer" in cols else []
    if layer is not None and layer not in layers:
        raise ValueError(f"--scores-layer {layer!r} is not in {p} (layers: {layers or 'none'})")
    if layer is None and len(layers) > 1:
        raise ValueError(f"--scores {p} holds layers {layers}; choose one with --scores-layer")
    layer = layer or (layers[0] if layers else None)
    values = {}
    for i, r in enumerate(rows, start=2):
        if layer is not None and r["layer"] != layer:
            continue
        try:
            values[r["wnid"]] = float(r[col])
        except ValueError:
            raise ValueError(f"--scores {p}, line {i}: {col}={r[col]!r} is not a number") from None
    settings: dict[str, Any] = {}
    try:
        run = json.loads((p.parent / "run.json").read_text("utf-8"))
        settings = {k: v for k, v in (run.get("cam") or {}).items() if isinstance(v, (str, int, float, list))}
        weights = (run.get("scorer") or {}).get("weights")
        if weights:
            settings["weights"] = weights
    except (OSError, ValueError, AttributeError):
        pass  # a bare CSV: the card then names only the file
    return Scores(values, p.name, layer, settings)


def definition_records(d: Definition) -> dict[str, dict[str, Any]]:
    """Records (without counts) for every subset of a definition: enough to render the class blocks."""
    return {s.name: {
        "config": s.name,
        "subset": {"name": s.name, "category": s.category, "difficulty": s.difficulty, "wnids": list(s.wnids)},
        "definition": {"id": d.id, "name": d.name, "version": d.version, "sha256": d.sha256(),
                       "description": d.description, "provenance": d.provenance},
        "errata": [e for e in d.errata if e.get("subset") == s.name],
        "splits": {},
    } for s in d.subsets}


def ordered(records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Comp-DD subsets first, then the classic ones; by name within each."""
    return sorted(records.values(), key=lambda r: (r["definition"]["name"] == "classic", r["config"]))


# ---------------------------------------------------------------------------------------------
# Front matter


def _size_category(n: int) -> str:
    for lo, hi, label in ((0, 1e3, "n<1K"), (1e3, 1e4, "1K<n<10K"), (1e4, 1e5, "10K<n<100K"), (1e5, 1e6, "100K<n<1M")):
        if lo <= n < hi:
            return label
    return "1M<n<10M"


def front_matter(records: dict[str, dict[str, Any]]) -> str:
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    from compdd.benchmark import Subset
    from compdd.hub import layout

    recs = ordered(records)
    total = sum(s["num_examples"] for r in recs for s in r["splits"].values())
    card = DatasetCardData(
        pretty_name="Comp-DD",
        license="other",
        license_name="imagenet-terms-of-access",
        license_link=IMAGENET_TERMS,
        task_categories=["image-classification"],
        size_categories=[_size_category(total)],
        source_datasets=["extended|imagenet-1k"],
        tags=["dataset-distillation", "imagenet", "benchmark", "comp-dd"],
        extra_gated_prompt=GATED_PROMPT,
        extra_gated_fields=GATED_FIELDS,
    )
    infos, configs = {}, {}
    for r in recs:
        sub = Subset(r["config"], tuple(r["subset"]["wnids"]))
        splits = SplitDict()
        for name, s in r["splits"].items():
            splits.add(SplitInfo(name=name, num_bytes=s["num_bytes"], num_examples=s["num_examples"]))
        infos[r["config"]] = DatasetInfo(config_name=r["config"], features=layout.features(sub), splits=splits)
        configs[r["config"]] = {"data_files": [{"split": s, "path": f"{r['config']}/{s}-*"} for s in r["splits"]]}
    DatasetInfosDict(infos).to_dataset_card_data(card)
    MetadataConfigs(configs).to_dataset_card_data(card)
    return card.to_yaml()


# ---------------------------------------------------------------------------------------------
# Body blocks


def _fmt(n: int) -> str:
    return f"{n:,}"


def _classes(wnids: list[str]) -> str:
    return "; ".join(f"{i} `{w}` {imagenet.name_of(w)}" for i, w in enumerate(wnids))


def _block_overview(recs: list[dict], **_: Any) -> str:
    defs = {r["definition"]["id"]: r["definition"] for r in recs}
    n = {s: sum(r["splits"].get(s, {}).get("num_examples", 0) for r in recs) for s in ("train", "validation")}
    names = ", ".join(f"`{r['config']}`" for r in recs)
    lines = [f"This export holds **{len(recs)} configs** ({names}) with "
             f"{_fmt(n['train'])} training and {_fmt(n['validation'])} validation images, taken byte for byte from "
             "ImageNet-1K (ILSVRC 2012).", "", "Definitions:"]
    lines += [f"- `{i}` (version {d['version']}, sha256 `{d['sha256'][:16]}…`): {d['description']}" for i, d in defs.items()]
    versions = sorted({r.get("compdd_version", "?") for r in recs})
    lines += ["", f"Written by `compdd export` (compdd {', '.join(versions)})."]
    return "\n".join(lines)


def _block_subsets(recs: list[dict], **_: Any) -> str:
    lines = ["| config | category | difficulty | classes: local label, wnid, name |", "|---|---|---|---|"]
    for r in recs:
        s = r["subset"]
        lines.append(f"| `{r['config']}` | {s['category'] or '—'} | {s['difficulty'] or '—'} | {_classes(s['wnids'])} |")
    return "\n".join(lines)


def _block_complexity(recs: list[dict], scores: Scores | None = None, **_: Any) -> str:
    provs = {r["definition"]["id"]: (r["definition"].get("provenance") or {}).get("complexity") for r in recs}
    lines = []
    for i, p in provs.items():
        if p:
            lines.append(f"`{i}` ranks classes with: " + ", ".join(f"{k} = {v}" for k, v in p.items()) + ".")
    if not scores:
        lines += ["", "Per-class complexity values are not part of this export: the paper did not publish them. "
                  "`compdd score` computes them from an ImageNet copy, and `compdd export --scores FILE` fills them in "
                  "here."]
        return "\n".join(lines).strip()
    origin = f"`{scores.source}`" + (f", layer `{scores.layer}`" if scores.layer else "")
    if scores.settings:
        origin += "; " + ", ".join(f"{k} = {v}" for k, v in scores.settings.items())
    lines += ["", f"Class complexity (1 − fraction of activated Grad-CAM pixels; higher = more complex), from "
              f"`compdd score` ({origin}):", "", "| config | mean | per class (local label: complexity) |",
              "|---|---|---|"]
    for r in recs:
        vals = [scores.values.get(x) for x in r["subset"]["wnids"]]
        known = [v for v in vals if v is not None]
        mean = f"{sum(known) / len(known):.4f}" if len(known) == len(vals) else "—"
        per = "; ".join(f"{i}: {v:.4f}" if v is not None else f"{i}: —" for i, v in enumerate(vals))
        lines.append(f"| `{r['config']}` | {mean} | {per} |")
    return "\n".join(lines).strip()


def _block_counts(recs: list[dict], **_: Any) -> str:
    lines = ["| config | train | validation | skipped (undecodable) |", "|---|---:|---:|---:|"]
    tot = [0, 0, 0]
    for r in recs:
        sp = r["splits"]
        row = [sp.get("train", {}).get("num_examples", 0), sp.get("validation", {}).get("num_examples", 0),
               sum(len(s.get("skipped", [])) for s in sp.values())]
        tot = [a + b for a, b in zip(tot, row, strict=True)]
        lines.append(f"| `{r['config']}` | {_fmt(row[0])} | {_fmt(row[1])} | {row[2]} |")
    lines.append(f"| **total** | {_fmt(tot[0])} | {_fmt(tot[1])} | {tot[2]} |")
    return "\n".join(lines)


def _block_errata(recs: list[dict], **_: Any) -> str:
    items = [(r["definition"]["id"], e) for r in recs for e in r.get("errata", [])]
    if not items:
        return "No errata apply to the subsets in this export."
    lines = []
    for i, e in items:
        lines.append(f"- **{e['subset']}** ({i}), local label {e['position']}: `{e['removed']}` "
                     f"({imagenet.name_of(e['removed'])}) was replaced by `{e['replacement']}` "
                     f"({imagenet.name_of(e['replacement'])}). {e.get('reason', '')}".rstrip())
    return "\n".join(lines)


def _block_load(recs: list[dict], repo_id: str | None = None, **_: Any) -> str:
    repo = repo_id or DEFAULT_REPO_ID
    hard = [r["config"] for r in recs if r["config"].endswith("-hard")]
    cfg = (hard or [r["config"] for r in recs] or ["bird-hard"])[0]
    return f"""```python
# 1. With datasets, from the Hub (accept the terms on the dataset page first, then `hf auth login`)
from datasets import load_dataset
ds = load_dataset("{repo}", "{cfg}")          # DatasetDict with train and validation
ds["train"].features["label"].names           # the wnids, in local label order 0..9

# 2. With compdd: the same DatasetDict, checked against the subset definition, or uint8 tensors at a resolution
import compdd
from compdd.data import load_tensors
ds = compdd.load_subset("{cfg}", source="hub", repo_id="{repo}")
train = load_tensors("{cfg}", "train", res=128, source="hub", repo_id="{repo}")   # cached under COMPDD_HOME

# 3. From your own ImageNet copy (nothing downloaded), or from a local export folder
ds = compdd.load_subset("{cfg}", source="imagenet", imagenet_root="/data/imagenet")
ds = compdd.load_subset("{cfg}", source="local", path="comp-dd-export")
```"""


BLOCKS = {"overview": _block_overview, "subsets": _block_subsets, "complexity": _block_complexity,
          "counts": _block_counts, "errata": _block_errata, "load": _block_load}


def render_block(name: str, records: dict[str, dict[str, Any]], **kw: Any) -> str:
    if name not in BLOCKS:
        raise ValueError(f"the card template has an unknown block {name!r}; known blocks: {', '.join(BLOCKS)}")
    return BLOCKS[name](ordered(records), **kw)


def render_body(template: str, records: dict[str, dict[str, Any]], **kw: Any) -> str:
    """The template with every ``compdd:`` block regenerated from ``records``."""
    return _BLOCK.sub(lambda m: f"{m.group(1)}{render_block(m.group('name'), records, **kw)}\n{m.group(4)}", template)


def template_blocks(template: str) -> dict[str, str]:
    """Block name -> current content of a template (for checks)."""
    return {m.group("name"): m.group("body").rstrip("\n") for m in _BLOCK.finditer(template)}


def render_readme(records: dict[str, dict[str, Any]], template: str, *, scores: Scores | None = None,
                  repo_id: str | None = None) -> str:
    if not records:
        raise ValueError("nothing to describe: the export folder holds no finished config")
    body = render_body(template, records, scores=scores, repo_id=repo_id)
    return f"---\n{front_matter(records)}\n---\n\n{body.lstrip()}"
