"""Submitting a result record: validate it, then file it in a leaderboard folder or open a Hub pull request."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from compdd.evaluation.records import RecordError, ResultRecord
from compdd.leaderboard.collect import record_relpath
from compdd.leaderboard.validate import SubmissionRejected, check_record, load_record
from compdd.paths import atomic_write_text, sha256_bytes


@dataclass(frozen=True)
class Submission:
    record: ResultRecord
    path_in_repo: str  # e.g. results/dd-v1/bird-hard/edf-ipc10.json
    payload: bytes  # what is written: the record in canonical form
    destination: str  # a local file path or a Hub pull-request URL ("" on a dry run)
    dry_run: bool

    @property
    def sha256(self) -> str:
        return sha256_bytes(self.payload)


def _validated(path: str | os.PathLike[str], *, allow_nonstandard: bool, exists_fn: Callable[[str], bool],
               replace: bool) -> tuple[ResultRecord, str, bytes]:
    rec, violations = load_record(path)
    if rec is None:
        raise SubmissionRejected(str(path), violations)
    try:
        rel = str(record_relpath(rec))
    except RecordError:
        rel = ""  # bad names: the ``names`` rule reports it
    violations = check_record(rec, allow_nonstandard=allow_nonstandard, replace=replace, target=rel,
                              target_exists=bool(rel) and exists_fn(rel))
    if violations:
        raise SubmissionRejected(str(path), violations)
    # Canonical form: the leaderboard is a function of the files, so equal records give equal bytes.
    return rec, rel, (rec.model_dump_json(indent=2) + "\n").encode("utf-8")


def submit_local(path: str | os.PathLike[str], leaderboard_dir: str | os.PathLike[str] = "leaderboard", *,
                 allow_nonstandard: bool = False, replace: bool = False, dry_run: bool = False) -> Submission:
    """Validate ``path`` and copy it to ``<leaderboard_dir>/results/<protocol>/<subset>/<method>-ipc<k>.json``.

    Raises :class:`SubmissionRejected` naming every failed rule. The copy is atomic.
    """
    root = Path(leaderboard_dir)
    rec, rel, payload = _validated(path, allow_nonstandard=allow_nonstandard, replace=replace,
                                   exists_fn=lambda r: (root / r).exists())
    target = root / rel
    if not dry_run:
        atomic_write_text(target, payload.decode("utf-8"))
    return Submission(rec, rel, payload, str(target), dry_run)


def submit_to_hub(path: str | os.PathLike[str], repo_id: str, *, allow_nonstandard: bool = False,
                  replace: bool = False, dry_run: bool = False, token: str | None = None,
                  revision: str | None = None) -> Submission:
    """Validate ``path`` and open a pull request adding it to the Hub dataset repo ``repo_id``.

    The endpoint comes from ``HF_ENDPOINT`` as usual for huggingface_hub. On a dry run nothing is sent
    and the Hub is not contacted (the overwrite rule is then checked by the maintainers' CI).
    """
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = HfApi(token=token)

    def hub_error(e: Exception) -> ValueError:
        why = "HF_HUB_OFFLINE is set" if isinstance(e, OfflineModeIsEnabled) else str(e).splitlines()[0]
        return ValueError(f"could not submit to the Hub dataset repo {repo_id!r}: {why}. Check the repo id, your "
                          "token (HF_TOKEN or `hf auth login`) and HF_ENDPOINT; --dry-run validates offline")

    def exists(rel: str) -> bool:
        if dry_run:
            return False
        try:
            return api.file_exists(repo_id, rel, repo_type="dataset", revision=revision)
        except (HfHubHTTPError, OfflineModeIsEnabled) as e:
            raise hub_error(e) from e

    rec, rel, payload = _validated(path, allow_nonstandard=allow_nonstandard, replace=replace, exists_fn=exists)
    if dry_run:
        return Submission(rec, rel, payload, "", True)
    try:
        info = api.create_commit(
            repo_id, repo_type="dataset", revision=revision, create_pr=True,
            operations=[CommitOperationAdd(path_in_repo=rel, path_or_fileobj=payload)],
            commit_message=f"Add {rec.method} / {rec.subset} / IPC {rec.ipc} ({rec.protocol})",
            commit_description=f"Submitted with `compdd submit`; record sha256 {sha256_bytes(payload)}.",
        )
    except (HfHubHTTPError, OfflineModeIsEnabled) as e:
        raise hub_error(e) from e
    return Submission(rec, rel, payload, info.pr_url or info.commit_url, False)
