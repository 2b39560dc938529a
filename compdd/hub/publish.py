"""``compdd publish``: send an export folder to a Hub dataset repo as one commit, or show exactly what would be sent.

The plan is built offline from the folder: the card plus, per finished config, its shards and record, with sizes and
sha256 taken from the export records (sizes are re-checked). ``--dry-run`` prints the plan and touches no network.
A real run then: checks the token (``HF_TOKEN`` or ``hf auth login``; never printed), creates the repo if needed
(private if asked), turns gating on *before* any data lands, creates the branch for ``--revision`` if missing, and
makes one commit that adds every planned file and deletes data files of the repo that the plan does not hold.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from compdd import __version__
from compdd.hub import layout
from compdd.paths import sha256_file

Gating = Literal["auto", "manual"]


class HubAuthError(PermissionError):
    """No token, a rejected token, or a token without access; the message says how to fix it."""


@dataclass(frozen=True)
class PlannedFile:
    path: str  # path in the repo (posix)
    size: int
    sha256: str


@dataclass
class PublishPlan:
    folder: Path
    repo_id: str
    revision: str
    private: bool
    gated: Gating | None
    files: list[PlannedFile]
    commit_message: str
    commit_description: str
    configs: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def describe(self, endpoint: str | None = None) -> str:
        """The plan as text: target, settings, commit, then every file with its size and sha256."""
        where = f"{endpoint or _endpoint()}/datasets/{self.repo_id}"
        lines = [
            f"target:   {where} (revision {self.revision}, {'private' if self.private else 'public'}, "
            f"gating {self.gated or 'off'})",
            "steps:    create the repo if missing; set gating; make one commit",
            f"commit:   {self.commit_message}",
            *[f"          {line}" for line in self.commit_description.splitlines()],
            f"files:    {len(self.files)}, {_human(self.total_bytes)} in all",
        ]
        width = max(len(f"{f.size:,}") for f in self.files)
        lines += [f"  {f.size:>{width},}  {f.sha256[:12]}  {f.path}" for f in self.files]
        return "\n".join(lines)


@dataclass
class PublishResult:
    repo_url: str
    commit_url: str
    commit_oid: str
    uploaded: list[str]
    deleted: list[str]


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def plan_publish(folder: str | os.PathLike[str], repo_id: str, *, revision: str | None = None, private: bool = False,
                 gated: Gating | None = "auto", commit_message: str | None = None) -> PublishPlan:
    """Check an export folder and list what publishing it would send (no network)."""
    layout.check_repo_id(repo_id)
    if gated not in ("auto", "manual", None):
        raise ValueError(f"--gated must be auto, manual or none, got {gated!r}")
    folder = Path(folder).resolve()
    readme = folder / layout.README
    if not readme.is_file():
        raise FileNotFoundError(f"{readme} is missing: --from must be a folder written by `compdd export`")
    records = layout.find_records(folder)
    carded = [c.get("config_name") for c in layout.read_front_matter(readme).get("configs") or []]
    if sorted(carded) != sorted(records):
        raise ValueError(f"{readme} lists configs {sorted(carded)} but {folder} holds finished configs "
                         f"{sorted(records)}; rerun `compdd export` on this folder to rewrite the card")

    files = [PlannedFile(layout.README, readme.stat().st_size, sha256_file(readme))]
    n = {"train": 0, "validation": 0}
    for name, rec in records.items():
        for split, s in rec["splits"].items():
            n[split] = n.get(split, 0) + s["num_examples"]
            for f in s["files"]:
                p = folder / f["path"]
                if not p.is_file() or p.stat().st_size != f["size"]:
                    raise ValueError(f"{p} is missing or changed since export (expected {f['size']} bytes); "
                                     f"rerun `compdd export --overwrite --subsets {name}`")
                files.append(PlannedFile(f["path"], f["size"], f["sha256"]))
        rec_path = folder / name / layout.RECORD_FILE
        files.append(PlannedFile(f"{name}/{layout.RECORD_FILE}", rec_path.stat().st_size, sha256_file(rec_path)))
    files.sort(key=lambda f: f.path)
    digest = hashlib.sha256("".join(f"{f.path}:{f.sha256}\n" for f in files).encode()).hexdigest()
    message = commit_message or (f"Comp-DD export: {len(records)} configs, {n['train']:,} train + "
                                 f"{n['validation']:,} validation images")
    description = (f"configs: {', '.join(records)}\nwritten by compdd {__version__}; "
                   f"content sha256 (sorted path:sha256 lines) {digest}")
    return PublishPlan(folder, repo_id, revision or "main", private, gated, files, message, description, list(records))


def _status(e: Exception) -> int | None:
    resp = getattr(e, "response", None)
    return getattr(resp, "status_code", None)


def publish(plan: PublishPlan, *, token: str | None = None, endpoint: str | None = None) -> PublishResult:
    """Carry out a plan from :func:`plan_publish` as one commit."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    token = token or get_token()
    if not token:
        raise HubAuthError("no Hugging Face token found: run `hf auth login`, or set HF_TOKEN to a token with write "
                           f"access to {plan.repo_id.split('/')[0]}; `--dry-run` shows the plan without one")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        user = api.whoami()
    except HfHubHTTPError as e:
        if _status(e) in (401, 403):
            raise HubAuthError(f"the Hugging Face token was rejected by {api.endpoint} (HTTP {_status(e)}); "
                               "check HF_TOKEN or log in again with `hf auth login`") from None
        raise

    kind = "dataset"
    try:
        url = api.create_repo(plan.repo_id, repo_type=kind, private=plan.private, exist_ok=True)
        if plan.gated:
            api.update_repo_settings(plan.repo_id, gated=plan.gated, repo_type=kind)
        if plan.revision != "main":
            api.create_branch(plan.repo_id, branch=plan.revision, repo_type=kind, exist_ok=True)
        remote = api.list_repo_files(plan.repo_id, repo_type=kind, revision=plan.revision)
        planned = {f.path for f in plan.files}
        stale = sorted(p for p in remote if p not in planned and "/" in p
                       and (p.endswith(".parquet") or p.endswith("/" + layout.RECORD_FILE)))
        ops = [CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=str(plan.folder / f.path)) for f in plan.files]
        ops += [CommitOperationDelete(path_in_repo=p) for p in stale]
        info = api.create_commit(plan.repo_id, ops, commit_message=plan.commit_message,
                                 commit_description=plan.commit_description, repo_type=kind, revision=plan.revision)
    except HfHubHTTPError as e:
        if _status(e) in (401, 403):
            name = user.get("name", "?") if isinstance(user, dict) else "?"
            raise HubAuthError(f"the token of {name!r} may not write to {plan.repo_id} (HTTP {_status(e)}); use a "
                               "token with write access to that organisation") from None
        raise
    return PublishResult(str(url), info.commit_url, info.oid, sorted(planned), stale)
