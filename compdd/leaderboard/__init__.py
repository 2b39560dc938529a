"""The leaderboard: validating, collecting and rendering result records.

A leaderboard folder holds one JSON record per entry under
``results/<protocol>/<subset>/<method>-ipc<k>.json`` and what is generated from them (``README.md``,
``leaderboard.csv``, ``index.html``, ``plots/``). The generated files are a pure function of the
records. ``compdd submit`` validates a record (:mod:`.validate`) and files it (:mod:`.submit`);
``compdd verify`` re-runs seeds of its distilled set (:mod:`.verify`); ``compdd leaderboard build``
renders (:mod:`.render`). Numbers quoted from papers use the ``paper-*`` protocols (:mod:`.protocols`).
"""

from compdd.leaderboard.collect import Entry, load_entries, record_relpath
from compdd.leaderboard.protocols import REPORTED_PROTOCOLS
from compdd.leaderboard.render import build, render
from compdd.leaderboard.submit import Submission, submit_local, submit_to_hub
from compdd.leaderboard.validate import RULES, SubmissionRejected, Violation, check_record

__all__ = [
    "REPORTED_PROTOCOLS",
    "RULES",
    "Entry",
    "Submission",
    "SubmissionRejected",
    "Violation",
    "build",
    "check_record",
    "load_entries",
    "record_relpath",
    "render",
    "submit_local",
    "submit_to_hub",
]
