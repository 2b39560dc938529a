"""The on-disk (and on-Hub) layout of an export, shared by the exporter, the publisher and the loaders.

```
OUT/README.md                                      card: YAML front matter (configs, dataset_info, licence, gating) + body
OUT/<config>/train-00000-of-00002.parquet          original JPEG bytes, ~500 MB per shard
OUT/<config>/validation-00000-of-00001.parquet
OUT/<config>/export.json                           record: subset, definition, counts, skipped files, shard sha256
```

This is the layout ``Dataset.push_to_hub(repo, config_name=...)`` writes, so ``datasets.load_dataset(OUT, "bird-hard")``
and ``load_dataset("ORG/comp-dd", "bird-hard")`` both work. ImageNet's ``val`` folder is the Hub split ``validation``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from compdd import imagenet
from compdd.benchmark import Subset

RECORD_FORMAT = "compdd-export/1"
RECORD_FILE = "export.json"
README = "README.md"
# Hub split name -> ImageNet folder name
SPLITS: dict[str, str] = {"train": "train", "validation": "val"}
_SPLIT_ALIASES = {"train": "train", "val": "validation", "validation": "validation"}
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def hub_split(split: str) -> str:
    """``val``/``validation`` -> ``validation``; ``train`` -> ``train``."""
    try:
        return _SPLIT_ALIASES[split]
    except KeyError:
        raise ValueError(f"unknown split {split!r}; use 'train' or 'val' (alias 'validation')") from None


def imagenet_split(split: str) -> str:
    """``val``/``validation`` -> ``val``; ``train`` -> ``train``."""
    return SPLITS[hub_split(split)]


def shard_name(config: str, split: str, i: int, n: int) -> str:
    return f"{config}/{split}-{i:05d}-of-{n:05d}.parquet"


def check_repo_id(repo_id: str) -> str:
    if not _REPO_ID.match(repo_id or ""):
        raise ValueError(f"--repo-id {repo_id!r} is not of the form ORG/NAME (e.g. my-lab/comp-dd)")
    return repo_id


def features(subset: Subset):
    """The ``datasets`` features of every config: wnids are the ClassLabel names (human names are not unique)."""
    from datasets import ClassLabel, Features, Image, Value

    return Features({
        "image": Image(mode="RGB"),  # decoded as RGB: ImageNet holds a few CMYK and grayscale JPEGs
        "label": ClassLabel(names=list(subset.wnids)),
        "imagenet_index": Value("int16"),
        "wnid": Value("string"),
        "class_name": Value("string"),
    })


def row_values(subset: Subset) -> list[tuple[int, str, str]]:
    """(imagenet_index, wnid, class_name) per local label."""
    return [(imagenet.index_of(w), w, imagenet.name_of(w)) for w in subset.wnids]


def read_record(config_dir: Path) -> dict[str, Any] | None:
    """The export record of a finished config folder, or None if there is none (or it is unreadable)."""
    p = config_dir / RECORD_FILE
    try:
        rec = json.loads(p.read_text("utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return rec if isinstance(rec, dict) and rec.get("format") == RECORD_FORMAT else None


def find_records(out: Path) -> dict[str, dict[str, Any]]:
    """All finished configs of an export folder, by config name, sorted by name."""
    recs = {}
    for d in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        rec = read_record(d)
        if rec is not None and rec.get("config") == d.name:
            recs[d.name] = rec
    return recs


def read_front_matter(readme: Path) -> dict[str, Any]:
    """The YAML front matter of a dataset card (``{}`` when it has none)."""
    import yaml

    text = readme.read_text("utf-8")
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        raise ValueError(f"{readme}: the YAML front matter is not closed by a '---' line")
    data = yaml.safe_load(text[3:end]) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{readme}: the YAML front matter is not a mapping")
    return data


def data_files(folder: Path, config: str, split: str) -> list[Path]:
    """Parquet files of one split of one config, from the card's ``configs:`` (or the default layout)."""
    split = hub_split(split)
    patterns = [f"{config}/{split}-*.parquet"]
    readme = folder / README
    if readme.is_file():
        for c in read_front_matter(readme).get("configs") or []:
            if c.get("config_name") != config:
                continue
            entries = c.get("data_files") or []
            found = [e.get("path") for e in entries if isinstance(e, dict) and e.get("split") == split]
            if found:
                patterns = [p for entry in found for p in ([entry] if isinstance(entry, str) else entry)]
    files = sorted({f for pat in patterns for f in folder.glob(pat) if f.is_file()})
    if not files:
        raise FileNotFoundError(
            f"no {split} files for config {config!r} in {folder} (looked for {', '.join(patterns)}); "
            f"is it a Comp-DD export holding that subset? `compdd export --subsets {config}` writes one")
    return files
