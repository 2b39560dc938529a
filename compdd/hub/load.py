"""Loading a subset from one of three sources, always with the definition's classes in its local label order.

- ``hub``: a dataset repo (``repo_id``, optional ``revision``); only the config's files are downloaded;
- ``local``: a folder written by ``compdd export``;
- ``imagenet``: an ImageNet root (``train/<wnid>/``, ``val/<wnid>/``) plus the subset definition, nothing downloaded.

Every source gives the same features (``image``, ``label``, ``imagenet_index``, ``wnid``, ``class_name``) and splits
(``train``, ``validation``). The wnids of an export are checked against the definition, so a config exported from a
different definition (or an old Music-Hard list) is an error rather than silently mislabelled data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from compdd import imagenet
from compdd.benchmark import Subset, get_subset
from compdd.hub import layout

Source = Literal["hub", "local", "imagenet"]
SOURCES = ("hub", "local", "imagenet")
REPO_ENV = "COMPDD_HUB_REPO"  # default repo id for source="hub"


def resolve_subset(subset: str | Subset, definition: str | os.PathLike[str] | None = None) -> Subset:
    return subset if isinstance(subset, Subset) else get_subset(subset, definition)


def check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; use one of {', '.join(SOURCES)}")


def local_folder(path: str | os.PathLike[str] | None) -> Path:
    if path is None:
        raise ValueError("source='local' needs path= (a folder written by `compdd export`)")
    folder = Path(path).resolve()
    if not folder.is_dir():
        raise FileNotFoundError(f"export folder {str(folder)!r} does not exist; write one with `compdd export`")
    return folder


def hub_snapshot(repo_id: str | None, config: str, *, revision: str | None = None, endpoint: str | None = None,
                 token: str | bool | None = None, split: str | None = None) -> Path:
    """Download (or find in the HF cache) the card and the files of one config (of one split, if given); returns
    the snapshot folder, whose name is the commit hash."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    from compdd.hub.publish import HubAuthError

    repo_id = repo_id or os.environ.get(REPO_ENV)
    if not repo_id:
        raise ValueError(f"source='hub' needs repo_id= (e.g. 'my-lab/comp-dd') or the {REPO_ENV} environment variable")
    layout.check_repo_id(repo_id)
    pattern = f"{layout.hub_split(split)}-*" if split else "*"
    try:
        folder = Path(snapshot_download(repo_id, repo_type="dataset", revision=revision, endpoint=endpoint, token=token,
                                        allow_patterns=[layout.README, f"{config}/{pattern}"]))
    except GatedRepoError:
        raise HubAuthError(f"{repo_id} is gated: accept the ImageNet terms on its Hub page, then log in "
                           "(`hf auth login` or HF_TOKEN) with that account") from None
    except RepositoryNotFoundError:
        raise FileNotFoundError(f"dataset repo {repo_id!r} was not found, or your token cannot see it "
                                "(a private repo needs `hf auth login`)") from None
    except RevisionNotFoundError:
        raise ValueError(f"revision {revision!r} does not exist in {repo_id}") from None
    if not (folder / config).is_dir():
        raise KeyError(f"{repo_id}@{folder.name[:12]} has no config {config!r}")
    return folder


def _check_classes(names: list[str], sub: Subset, where: str) -> None:
    if list(names) != list(sub.wnids):
        raise ValueError(
            f"{where} has classes {list(names)} but subset {sub.name!r} of definition {sub.definition or '?'} lists "
            f"{list(sub.wnids)} (order = local labels); pass definition= the file it was exported from")


def _from_imagenet(sub: Subset, root: str | os.PathLike[str] | None):
    from datasets import Dataset, DatasetDict

    if root is None:
        raise ValueError("source='imagenet' needs imagenet_root= (the folder holding train/ and val/)")
    root = Path(root).resolve()
    feats = layout.features(sub)
    values = layout.row_values(sub)
    out = {}
    for hub_split, folder in layout.SPLITS.items():
        rows: dict[str, list] = {"image": [], "label": [], "imagenet_index": [], "wnid": [], "class_name": []}
        for label, w in enumerate(sub.wnids):
            for p in imagenet.list_images(root, folder, w):
                idx, wnid, name = values[label]
                rows["image"].append({"path": str(p), "bytes": None})  # decoded lazily from the file
                rows["label"].append(label)
                rows["imagenet_index"].append(idx)
                rows["wnid"].append(wnid)
                rows["class_name"].append(name)
        out[hub_split] = Dataset.from_dict(rows, features=feats, split=hub_split)
    return DatasetDict(out)


def load_subset(
    name: str | Subset,
    source: Source = "hub",
    *,
    repo_id: str | None = None,
    revision: str | None = None,
    path: str | os.PathLike[str] | None = None,
    imagenet_root: str | os.PathLike[str] | None = None,
    definition: str | os.PathLike[str] | None = None,
    split: str | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
):
    """A Comp-DD (or classic) subset as a ``datasets.DatasetDict`` (``train``, ``validation``), or one split.

    >>> ds = load_subset("bird-hard", source="local", path="comp-dd-export")
    >>> ds["train"].features["label"].names == list(get_subset("bird-hard").wnids)
    True

    ``definition``: the definition file (or built-in name) the subset comes from; default: the built-ins.
    ``source="imagenet"`` reads images lazily from their files; files that cannot be decoded fail when accessed
    (``compdd export`` skips and lists them, so a ``local``/``hub`` export holds only decodable images).
    """
    check_source(source)
    sub = resolve_subset(name, definition)
    if source == "imagenet":
        ds = _from_imagenet(sub, imagenet_root)
        where = f"ImageNet at {imagenet_root}"
    else:
        from datasets import load_dataset

        if source == "local":
            folder = local_folder(path)
            where = f"config {sub.name!r} of {folder}"
        else:
            folder = hub_snapshot(repo_id, sub.name, revision=revision, endpoint=endpoint, token=token)
            where = f"config {sub.name!r} of {repo_id or os.environ.get(REPO_ENV)}@{folder.name[:12]}"
        # The parquet builder over this config's files only: a snapshot holds no other config's files, which
        # load_dataset(folder, config) would look for while reading the card.
        files = {s: [str(f) for f in layout.data_files(folder, sub.name, s)] for s in layout.SPLITS}
        ds = load_dataset("parquet", data_files=files)
        for s, d in ds.items():
            names = d.features["label"].names
            _check_classes(names, sub, where)
            bad = sum(names[lab] != w for lab, w in zip(d["label"], d["wnid"], strict=True))
            if bad:
                raise ValueError(f"{where}, split {s}: {bad} rows have a wnid column that disagrees with their label")
    return ds[layout.hub_split(split)] if split else ds
