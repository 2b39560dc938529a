"""Where result records live in a leaderboard folder, and reading them all back.

A leaderboard folder holds ``results/<protocol>/<subset>/<method>-ipc<k>.json``: one record per
(protocol, subset, method, IPC), so the path alone says what a file is and two submissions for the
same entry collide on purpose (see the ``overwrite`` rule in :mod:`compdd.leaderboard.validate`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from compdd.evaluation.records import RecordError, ResultRecord

RESULTS_DIR = "results"
# Names become path parts, so they are restricted to what is safe in a path on every OS.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._+-]*$")


def record_relpath(record: ResultRecord) -> PurePosixPath:
    """The record's path relative to the leaderboard folder, e.g. ``results/dd-v1/bird-hard/edf-ipc10.json``."""
    for what, name in (("protocol", record.protocol), ("subset", record.subset), ("method", record.method)):
        if not NAME_RE.match(name):
            raise RecordError(f"{what} name {name!r} cannot be used in a path: use lower-case letters, digits and . _ + -")
    return PurePosixPath(RESULTS_DIR, record.protocol, record.subset, f"{record.method}-ipc{record.ipc}.json")


@dataclass(frozen=True)
class Entry:
    """A record and its path relative to the results folder's parent (posix form, for stable output)."""

    path: str
    record: ResultRecord


def load_entries(results: str | os.PathLike[str]) -> list[Entry]:
    """Load every record under ``results`` (a ``results/`` folder), sorted by path.

    A file whose place does not match its content (e.g. ``edf-ipc10.json`` holding an IPC 50 record)
    is an error, because the path is how entries are found and deduplicated.
    """
    results = Path(results)
    if not results.is_dir():
        raise FileNotFoundError(f"results folder {str(results)!r} does not exist; pass --results DIR "
                                f"(a folder laid out as <protocol>/<subset>/<method>-ipc<k>.json)")
    entries = []
    for f in sorted(results.rglob("*.json")):
        rel = f.relative_to(results)
        if any(part.startswith(".") for part in rel.parts):
            continue  # temporary files of an atomic write in progress
        rec = ResultRecord.load(f)
        want = record_relpath(rec)
        got = PurePosixPath(RESULTS_DIR, *rel.parts)
        if got != want:
            raise RecordError(f"{f}: a {rec.method} / {rec.subset} / IPC {rec.ipc} / {rec.protocol} record "
                              f"must be stored at {want} (relative to the leaderboard folder)")
        entries.append(Entry(str(got), rec))
    return entries
