"""The Comp-DD benchmark definition as versioned data: categories, the 16 subsets, provenance, errata.

Definitions are JSON files (format ``compdd-definition/1``). Two ship with the package:
``comp-dd-v1`` (the paper's 16 subsets) and ``classic`` (imagenette & co., kept apart because they
are comparison sets, not part of Comp-DD). ``compdd build-subsets`` writes new ones in the same format.
Every definition is validated on load: 10 distinct real ImageNet-1K wnids per subset, easy and hard of a
category disjoint, and each subset's classes inside its category's member list.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from compdd import imagenet

FORMAT = "compdd-definition/1"
CLASSES_PER_SUBSET = 10
DIFFICULTIES = ("easy", "hard")
CATEGORIES = ("bird", "car", "dog", "fish", "snake", "insect", "round", "music")
BUILTIN = ("comp-dd-v1", "classic")


class DefinitionError(ValueError):
    """A definition file breaks a rule; the message names the file and the rule."""


@dataclass(frozen=True)
class Subset:
    """A named list of ImageNet classes; a class's local label is its position in ``wnids``."""

    name: str
    wnids: tuple[str, ...]
    category: str | None = None
    difficulty: str | None = None
    definition: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.wnids)

    @property
    def imagenet_indices(self) -> list[int]:
        return [imagenet.index_of(w) for w in self.wnids]

    @property
    def class_names(self) -> list[str]:
        return [imagenet.name_of(w) for w in self.wnids]

    def local_label(self, wnid: str) -> int:
        try:
            return self.wnids.index(wnid)
        except ValueError:
            raise KeyError(f"{wnid} is not a class of subset {self.name!r}") from None

    def sha256(self) -> str:
        """Hash of what makes the subset: its name and the ordered wnids (the label map)."""
        return hashlib.sha256(json.dumps([self.name, list(self.wnids)]).encode()).hexdigest()


@dataclass(frozen=True)
class Definition:
    name: str
    version: str
    description: str
    subsets: tuple[Subset, ...]
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    errata: tuple[dict[str, Any], ...] = ()
    path: str = ""

    @property
    def id(self) -> str:
        return f"{self.name}-v{self.version.split('.')[0]}"

    def subset(self, name: str) -> Subset:
        for s in self.subsets:
            if s.name == name:
                return s
        raise KeyError(f"unknown subset {name!r} in definition {self.id}; known: {', '.join(s.name for s in self.subsets)}")

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "provenance": self.provenance,
            "categories": {c: {"members": list(m)} for c, m in self.categories.items()},
            "subsets": [
                {"name": s.name, "category": s.category, "difficulty": s.difficulty, "wnids": list(s.wnids)}
                for s in self.subsets
            ],
            "errata": list(self.errata),
        }

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()


def _fail(src: str, msg: str) -> DefinitionError:
    return DefinitionError(f"{src}: {msg}")


def parse_definition(doc: dict[str, Any], src: str = "<definition>",
                     categories: dict[str, list[str]] | None = None) -> Definition:
    """Validate a definition document and build a :class:`Definition`.

    ``categories`` (category -> member wnids) replaces the file's own member lists, e.g. all 118
    dog classes from a user-supplied category file.
    """
    if doc.get("format") != FORMAT:
        raise _fail(src, f"'format' must be {FORMAT!r} (got {doc.get('format')!r})")
    for key in ("name", "version", "subsets"):
        if key not in doc:
            raise _fail(src, f"missing required key {key!r}")
    unknown = set(doc) - {"format", "name", "version", "description", "provenance", "categories", "subsets", "errata"}
    if unknown:
        raise _fail(src, f"unknown key(s) {sorted(unknown)}; check the spelling")

    cats_src = categories if categories is not None else {
        c: v.get("members", []) for c, v in (doc.get("categories") or {}).items()
    }
    cats: dict[str, tuple[str, ...]] = {}
    for c, members in cats_src.items():
        bad = [w for w in members if not imagenet.is_wnid(w)]
        if bad:
            raise _fail(src, f"category {c!r} lists non-ImageNet-1K wnid(s) {bad}")
        if len(set(members)) != len(members):
            raise _fail(src, f"category {c!r} lists a wnid twice")
        cats[c] = tuple(members)

    subsets: list[Subset] = []
    seen: set[str] = set()
    for raw in doc["subsets"]:
        name = raw.get("name")
        if not name:
            raise _fail(src, "a subset has no name")
        if name in seen:
            raise _fail(src, f"subset {name!r} is defined twice")
        seen.add(name)
        wnids = list(raw.get("wnids") or [])
        bad = [w for w in wnids if not imagenet.is_wnid(w)]
        if bad:
            raise _fail(src, f"subset {name!r}: {bad} not ImageNet-1K wnid(s)")
        if len(wnids) != CLASSES_PER_SUBSET:
            raise _fail(src, f"subset {name!r} has {len(wnids)} classes; every subset needs {CLASSES_PER_SUBSET}")
        dup = sorted({w for w in wnids if wnids.count(w) > 1})
        if dup:
            raise _fail(src, f"subset {name!r} repeats {dup}; each class may appear once (see the v1 music-hard erratum)")
        cat, diff = raw.get("category"), raw.get("difficulty")
        if diff is not None and diff not in DIFFICULTIES:
            raise _fail(src, f"subset {name!r}: difficulty must be one of {DIFFICULTIES}, got {diff!r}")
        if cat is not None:
            if cat not in cats:
                raise _fail(src, f"subset {name!r} names category {cat!r}, which has no member list")
            outside = [w for w in wnids if w not in cats[cat]]
            if outside:
                raise _fail(src, f"subset {name!r} has {outside} outside category {cat!r}'s members")
        subsets.append(Subset(name, tuple(wnids), cat, diff, doc["name"]))

    for c in cats:
        pair = [s for s in subsets if s.category == c]
        easy = {w for s in pair if s.difficulty == "easy" for w in s.wnids}
        hard = {w for s in pair if s.difficulty == "hard" for w in s.wnids}
        if easy & hard:
            raise _fail(src, f"category {c!r}: easy and hard share {sorted(easy & hard)}")

    return Definition(
        name=doc["name"], version=str(doc["version"]), description=doc.get("description", ""),
        subsets=tuple(subsets), categories=cats, provenance=doc.get("provenance") or {},
        errata=tuple(doc.get("errata") or ()), path=src,
    )


def load_definition(path_or_name: str | os.PathLike[str] = "comp-dd-v1",
                    categories_file: str | os.PathLike[str] | None = None) -> Definition:
    """Load a built-in definition by name (``comp-dd-v1``, ``classic``) or a definition file by path.

    ``categories_file``: JSON ``{category: [wnid, ...]}`` replacing the member lists.
    """
    cats = None
    if categories_file is not None:
        cats = _read_json(Path(categories_file))
        if not isinstance(cats, dict) or not all(isinstance(v, list) for v in cats.values()):
            raise DefinitionError(f"{categories_file}: a category file must map category names to lists of wnids")
    if str(path_or_name) in BUILTIN:
        if cats is None:
            return _builtin(str(path_or_name))
        res = resources.files("compdd.resources").joinpath(f"definitions/{path_or_name}.json")
        return parse_definition(json.loads(res.read_text("utf-8")), f"builtin:{path_or_name}", cats)
    p = Path(path_or_name)
    if not p.is_file():
        raise DefinitionError(f"definition {str(p)!r} not found; use a built-in name ({', '.join(BUILTIN)}) or a JSON file path")
    return parse_definition(_read_json(p), str(p), cats)


@functools.cache
def _builtin(name: str) -> Definition:
    res = resources.files("compdd.resources").joinpath(f"definitions/{name}.json")
    return parse_definition(json.loads(res.read_text("utf-8")), f"builtin:{name}")


def _read_json(p: Path) -> Any:
    try:
        return json.loads(p.read_text("utf-8"))
    except FileNotFoundError:
        raise DefinitionError(f"{p}: file not found") from None
    except json.JSONDecodeError as e:
        raise DefinitionError(f"{p}: not valid JSON ({e})") from None


def all_subsets() -> list[Subset]:
    """Comp-DD v1 subsets followed by the classic ones."""
    return [s for d in BUILTIN for s in _builtin(d).subsets]


def list_subsets(pattern: str = "*") -> list[str]:
    """Names of the built-in subsets matching a glob, e.g. ``list_subsets("*-hard")``."""
    return [s.name for s in all_subsets() if fnmatch.fnmatch(s.name, pattern)]


def get_subset(name: str, definition: str | os.PathLike[str] | None = None) -> Subset:
    """A subset by name, from ``definition`` (file or built-in name) or from the built-ins."""
    if definition is not None:
        return load_definition(definition).subset(name)
    for s in all_subsets():
        if s.name == name:
            return s
    raise KeyError(f"unknown subset {name!r}; known subsets: {', '.join(list_subsets())}")
