"""The rules a result record must pass to enter the leaderboard.

Each rule has a short name; a rejection lists every rule that failed and why, so one run of
``compdd submit`` tells a submitter everything to fix. The rules (see docs/leaderboard.md):

``schema``       the file is a valid :class:`~compdd.evaluation.records.ResultRecord`.
``names``        method, subset and protocol names are safe path parts.
``protocol``     the protocol is one this compdd defines, at this version; a measured record's
                 ``protocol_config`` agrees with it; paper protocols (``paper-*``) only for reported numbers.
``subset``       the subset exists and ``subset_sha256`` equals this compdd's definition of it.
``n-images``     the artifact holds classes x IPC images (10 x IPC for a Comp-DD subset).
``seeds``        a measured record has >= 5 seeds, and they are the protocol's seeds.
``accuracy``     top-1 is above chance and at most the full-data reference plus a margin.
``artifact``     a measured record names its distilled set by sha256.
``nonstandard``  a record with protocol ``overrides`` needs ``--allow-nonstandard``.
``verified``     a submission cannot mark itself verified; ``compdd verify`` does that.
``overwrite``    an existing entry is never replaced silently (``--replace`` does it on purpose).

:func:`check_existing` applies the same rules to a leaderboard's files (``compdd leaderboard check``), plus
``location`` (a file sits at the path its content implies); there non-standard records are allowed and
``verified`` is accepted when ``compdd verify`` left its evidence.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from compdd.benchmark import Subset, get_subset
from compdd.evaluation.protocols import PROTOCOLS, Protocol, ProtocolError
from compdd.evaluation.records import RecordError, ResultRecord
from compdd.leaderboard.collect import NAME_RE, record_relpath
from compdd.leaderboard.protocols import REPORTED_PROTOCOLS
from compdd.registry import UnknownNameError

MIN_SEEDS = 5
# How far above the full-data reference a distilled set may score before it is implausible (points).
FULL_DATA_MARGIN = 5.0
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

RULES = ("schema", "names", "protocol", "subset", "n-images", "seeds", "accuracy", "artifact", "nonstandard",
         "verified", "overwrite", "location")


@dataclass(frozen=True)
class Violation:
    rule: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.message}"


class SubmissionRejected(ValueError):
    """A record failed one or more rules; ``violations`` lists them all."""

    def __init__(self, source: str, violations: list[Violation]):
        self.source, self.violations = source, violations
        lines = "\n".join(f"  {v}" for v in violations)
        super().__init__(f"{source} rejected ({len(violations)} rule(s) failed):\n{lines}")


def _json(x: Any) -> Any:
    return json.loads(json.dumps(x, sort_keys=True))


def _with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """The record's protocol_config with fields added since it was written filled in by their defaults, so a record
    made before a compatible schema addition (e.g. the kd-crop-cutmix keys) still matches its protocol."""
    try:
        return Protocol.model_validate(config).model_dump(mode="json")
    except ValidationError:
        return config


def _protocol_rules(rec: ResultRecord) -> tuple[list[Violation], Protocol | None]:
    """Check the protocol; return the effective protocol (with overrides) when it is a runnable one."""
    if rec.protocol in REPORTED_PROTOCOLS:
        if rec.source != "reported":
            return [Violation("protocol", f"protocol {rec.protocol!r} is for numbers quoted from papers; a measured "
                                          f"record must use a compdd protocol ({', '.join(PROTOCOLS.names())})")], None
        return [], None
    if rec.protocol not in PROTOCOLS:
        known = ", ".join([*PROTOCOLS.names(), *REPORTED_PROTOCOLS])
        return [Violation("protocol", f"protocol {rec.protocol!r} is not defined by this compdd (known: {known}); "
                                      "if it is a newer version, upgrade compdd")], None
    proto = PROTOCOLS.get(rec.protocol)
    out: list[Violation] = []
    try:
        proto.model_for(rec.resolution)
    except ProtocolError as e:
        out.append(Violation("protocol", str(e)))
    try:
        effective, _ = proto.with_overrides(**rec.overrides)
    except (ProtocolError, TypeError) as e:
        return [*out, Violation("protocol", f"overrides {rec.overrides}: {e}")], None
    if rec.source == "measured" and not rec.protocol_config:
        out.append(Violation("protocol", "a measured record must carry the protocol_config it ran with"))
    want = _json(effective.model_dump(mode="json"))
    got = _json(_with_defaults(rec.protocol_config))
    bad = sorted(k for k in got if k not in want or got[k] != want[k])
    if bad:
        diffs = "; ".join(f"{k}: record {got[k]!r} vs {rec.protocol} {want.get(k, '(no such key)')!r}" for k in bad)
        out.append(Violation("protocol", f"protocol_config differs from {rec.protocol} as defined by this compdd "
                                         f"({diffs}); the record was made by a different protocol version"))
    return out, effective


def _subset_rules(rec: ResultRecord) -> tuple[list[Violation], Subset | None]:
    try:
        sub = get_subset(rec.subset)
    except (KeyError, UnknownNameError) as e:
        return [Violation("subset", str(e.args[0] if e.args else e))], None
    if not rec.subset_sha256:
        return [Violation("subset", f"subset_sha256 is missing; it must be {sub.sha256()} "
                                    f"(compdd.get_subset({rec.subset!r}).sha256())")], sub
    if rec.subset_sha256 != sub.sha256():
        return [Violation("subset", f"subset_sha256 {rec.subset_sha256[:12]}… does not match this compdd's "
                                    f"{rec.subset!r} ({sub.sha256()[:12]}…): the record used other classes or "
                                    "another class order")], sub
    return [], sub


def check_record(rec: ResultRecord, *, allow_nonstandard: bool = False, target_exists: bool = False,
                 replace: bool = False, target: str = "") -> list[Violation]:
    """Every rule but ``schema`` applied to a parsed record; an empty list means it may be submitted.

    ``target_exists`` says whether the leaderboard already holds an entry at ``target`` (the record's path).
    """
    out: list[Violation] = []
    bad_names = [f"{k} {v!r}" for k, v in (("method", rec.method), ("subset", rec.subset), ("protocol", rec.protocol))
                 if not NAME_RE.match(v)]
    if bad_names:
        out.append(Violation("names", f"{', '.join(bad_names)}: names become file paths; use lower-case letters, "
                                      "digits and . _ + -"))
    proto_v, effective = _protocol_rules(rec)
    out += proto_v
    subset_v, sub = _subset_rules(rec)
    out += subset_v
    n_classes = sub.num_classes if sub else 10
    measured = rec.source == "measured"

    if rec.artifact is not None and rec.artifact.n_images != n_classes * rec.ipc:
        out.append(Violation("n-images", f"artifact has {rec.artifact.n_images} images; {rec.subset} at IPC "
                                         f"{rec.ipc} needs {n_classes} x {rec.ipc} = {n_classes * rec.ipc}"))

    if measured:
        seeds = [s.seed for s in rec.per_seed]
        relaxed = allow_nonstandard and "seeds" in rec.overrides
        if len(seeds) < MIN_SEEDS and not relaxed:
            out.append(Violation("seeds", f"{len(seeds)} seed(s) {seeds}; a measured record needs at least "
                                          f"{MIN_SEEDS} (the protocol's seeds)"))
        if effective is not None and seeds and sorted(seeds) != sorted(effective.seeds):
            out.append(Violation("seeds", f"seeds {sorted(seeds)} are not the protocol's seeds "
                                          f"{sorted(effective.seeds)}"))

    chance = 100.0 / n_classes
    if rec.top1_mean <= chance:
        out.append(Violation("accuracy", f"top-1 {rec.top1_mean:.2f}% is not above chance ({chance:.1f}% for "
                                         f"{n_classes} classes): the evaluation learned nothing; check labels and "
                                         "the class map"))
    if rec.full_reference is not None and rec.top1_mean > rec.full_reference.mean + FULL_DATA_MARGIN:
        out.append(Violation("accuracy", f"top-1 {rec.top1_mean:.2f}% exceeds full-data accuracy "
                                         f"{rec.full_reference.mean:.2f}% by more than {FULL_DATA_MARGIN} points; "
                                         "this is implausible (test data in the distilled set?)"))

    if measured and (rec.artifact is None or not SHA256_RE.match(rec.artifact.sha256 or "")):
        have = "no artifact" if rec.artifact is None else f"artifact.sha256 {rec.artifact.sha256!r}"
        out.append(Violation("artifact", f"{have}: a measured record must name its distilled set by sha256 "
                                         "(64 hex digits, DistilledSet.sha256())"))

    if rec.overrides and not allow_nonstandard:
        out.append(Violation("nonstandard", f"the protocol was overridden ({_json(rec.overrides)}); such a result is "
                                            "not comparable with standard ones. Pass --allow-nonstandard to list it "
                                            "marked as non-standard"))
    if rec.verified:
        out.append(Violation("verified", "a submission cannot mark itself verified; maintainers run "
                                         "`compdd verify` on the entry"))
    if target_exists and not replace:
        out.append(Violation("overwrite", f"the leaderboard already has an entry at {target or 'this path'}; "
                                          "pass --replace to replace it on purpose"))
    return out


def load_record(path: str | os.PathLike[str]) -> tuple[ResultRecord | None, list[Violation]]:
    """Parse a record file; a schema failure comes back as a ``schema`` violation instead of raising."""
    try:
        return ResultRecord.load(Path(path)), []
    except RecordError as e:
        return None, [Violation("schema", str(e))]


def check_existing(results: str | os.PathLike[str]) -> list[tuple[str, list[Violation]]]:
    """(file, violations) for every record under a ``results/`` folder that breaks a rule."""
    results = Path(results)
    if not results.is_dir():
        raise FileNotFoundError(f"results folder {str(results)!r} does not exist; pass --results DIR")
    bad = []
    for f in sorted(results.rglob("*.json")):
        rel = f.relative_to(results)
        if any(part.startswith(".") for part in rel.parts):
            continue
        rec, violations = load_record(f)
        if rec is not None:
            violations = [v for v in check_record(rec, allow_nonstandard=True)
                          if not (v.rule == "verified" and rec.verification)]
            try:
                want = record_relpath(rec).relative_to("results")
                if Path(*rel.parts) != Path(*want.parts):
                    violations.append(Violation("location", f"this record belongs at {want} under the results folder"))
            except RecordError:
                pass  # reported by the ``names`` rule
        if violations:
            bad.append((str(f), violations))
    return bad
