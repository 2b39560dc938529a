"""Leaderboard: every submission rule with a failing example, local and Hub submission, verify's decision,
and the build (content, marks, best-per-row, byte-identical outputs, plots)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import fakehub
import pytest
from click.testing import CliRunner
from PIL import Image

from compdd.benchmark import get_subset
from compdd.cli import main
from compdd.evaluation.protocols import get_protocol
from compdd.evaluation.records import Artifact, Reference, ResultRecord, SeedResult
from compdd.leaderboard import load_entries, render, submit_local, submit_to_hub
from compdd.leaderboard.render import build
from compdd.leaderboard.validate import RULES, SubmissionRejected, check_existing, check_record
from compdd.leaderboard.verify import compare, mark_verified, rerun_seeds

SHIPPED = Path(__file__).resolve().parent.parent / "leaderboard" / "results"
TOKEN = "hf_fake_write_token"


def measured(subset: str = "bird-hard", method: str = "edf", ipc: int = 10, accs=(40.0, 41.0, 42.0, 43.0, 44.0),
             seeds=None, overrides: dict | None = None, full: float = 60.0, **fields) -> dict:
    """A valid measured record as JSON (what `compdd evaluate` writes), with the given changes."""
    seeds = list(range(len(accs))) if seeds is None else seeds
    proto, applied = get_protocol("dd-v1").with_overrides(**(overrides or {}))
    sub = get_subset(subset)
    rec = ResultRecord.from_seeds(
        [SeedResult(seed=s, top1=a) for s, a in zip(seeds, accs)], source="measured", method=method, subset=subset,
        subset_sha256=sub.sha256(), definition="comp-dd-v1", ipc=ipc, resolution=32, protocol="dd-v1",
        protocol_config=proto.model_dump(mode="json"),
        overrides={k: list(v) if isinstance(v, tuple) else v for k, v in applied.items()},
        artifact=Artifact(sha256="ab" * 32, n_images=sub.num_classes * ipc),
        random_reference=Reference(mean=25.0, std=1.0, n=5), full_reference=Reference(mean=full, std=1.0, n=5),
        created_at="2026-01-01T00:00:00+00:00")
    doc = rec.model_dump(mode="json")
    doc.update(fields)
    return doc


def write(tmp_path: Path, doc: dict, name: str = "result.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    return p


def rules_of(excinfo: pytest.ExceptionInfo[SubmissionRejected]) -> set[str]:
    return {v.rule for v in excinfo.value.violations}


# ---------------------------------------------------------------------------------------------- submit


def test_valid_record_is_filed_in_canonical_form(tmp_path: Path) -> None:
    src = write(tmp_path, measured())
    sub = submit_local(src, tmp_path / "lb")
    target = tmp_path / "lb" / "results" / "dd-v1" / "bird-hard" / "edf-ipc10.json"
    assert Path(sub.destination) == target
    assert target.read_bytes() == sub.payload
    assert ResultRecord.load(target) == ResultRecord.load(src)
    assert not list(target.parent.glob(".*"))  # no temporary left behind by the atomic write


def _bad(doc_changes: dict | None = None, **kw) -> dict:
    doc = measured(**kw)
    doc.update(doc_changes or {})
    return doc


FAILING = {
    # rule: (record JSON, what the message must say)
    "names": (_bad(method="EDF v2"), "become file paths"),
    "protocol": (_bad({"protocol": "dd-v9"}), "not defined by this compdd"),
    "subset": (_bad({"subset_sha256": get_subset("bird-easy").sha256()}), "does not match"),
    "n-images": (_bad({"artifact": {"sha256": "ab" * 32, "n_images": 90}}), "needs 10 x 10 = 100"),
    "seeds": (_bad(accs=(40.0, 41.0, 42.0)), "at least 5"),
    "accuracy": (_bad(accs=(9.0, 10.0, 9.5, 10.0, 9.0)), "not above chance"),
    "artifact": (_bad({"artifact": {"n_images": 100}}), "sha256"),
    "nonstandard": (_bad(overrides={"epochs": 20}), "--allow-nonstandard"),
    "verified": (_bad({"verified": True}), "cannot mark itself verified"),
}


@pytest.mark.parametrize("rule", sorted(FAILING))
def test_each_rule_rejects_its_failing_example_alone(tmp_path: Path, rule: str) -> None:
    doc, says = FAILING[rule]
    with pytest.raises(SubmissionRejected) as ei:
        submit_local(write(tmp_path, doc), tmp_path / "lb")
    assert rules_of(ei) == {rule}, ei.value
    assert says in str(ei.value)
    assert not (tmp_path / "lb").exists()  # nothing written on rejection


@pytest.mark.parametrize(("changes", "says"), [
    ({"protocol": "paper-dd"}, "for numbers quoted from papers"),
    ({"protocol_config": {**get_protocol("dd-v1").model_dump(mode="json"), "epochs": 300}}, "epochs: record 300"),
    ({"protocol_config": {}}, "must carry the protocol_config"),
    ({"overrides": {"lr": 0.1}}, "cannot override"),
    ({"resolution": 48}, "no model for 48 px"),
])
def test_protocol_rule_variants(tmp_path: Path, changes: dict, says: str) -> None:
    with pytest.raises(SubmissionRejected) as ei:
        submit_local(write(tmp_path, _bad(changes)), tmp_path / "lb", allow_nonstandard=True)
    assert "protocol" in rules_of(ei) and says in str(ei.value)


@pytest.mark.parametrize(("doc", "rule", "says"), [
    (_bad({"subset": "bird-medium"}), "subset", "bird-medium"),
    (_bad({"subset_sha256": None}), "subset", "subset_sha256 is missing"),
    (_bad(seeds=[5, 6, 7, 8, 9]), "seeds", "not the protocol's seeds"),
    (_bad(accs=(70.0,) * 5, full=60.0), "accuracy", "exceeds full-data accuracy"),
    (_bad({"artifact": None}), "artifact", "no artifact"),
])
def test_more_failing_examples(tmp_path: Path, doc: dict, rule: str, says: str) -> None:
    with pytest.raises(SubmissionRejected) as ei:
        submit_local(write(tmp_path, doc), tmp_path / "lb")
    assert rule in rules_of(ei) and says in str(ei.value)


@pytest.mark.parametrize(("text", "says"), [
    ("{not json", "not valid JSON"),
    (json.dumps(_bad({"top1_mean": 101.0, "per_seed": []})), "top1_mean"),
    (json.dumps(_bad({"surprise": 1})), "surprise"),
    (json.dumps(_bad({"top1_mean": 50.0})), "not the mean of per_seed"),
])
def test_schema_rule(tmp_path: Path, text: str, says: str) -> None:
    p = tmp_path / "r.json"
    p.write_text(text)
    with pytest.raises(SubmissionRejected) as ei:
        submit_local(p, tmp_path / "lb")
    assert rules_of(ei) == {"schema"} and says in str(ei.value)


def test_records_written_before_the_kd_augmentation_keys_still_match_their_protocol(tmp_path: Path) -> None:
    """A record's protocol_config lacking keys added later with defaults (crop_scale, flip, cutmix_beta) is the same
    protocol; a changed value of such a key is not."""
    old = measured()
    for key in ("crop_scale", "flip", "cutmix_beta"):
        del old["protocol_config"]["augmentation"][key]
    submit_local(write(tmp_path, old), tmp_path / "lb")
    changed = measured(subset="bird-easy")
    changed["protocol_config"]["augmentation"]["crop_ratio"] = 0.25
    with pytest.raises(SubmissionRejected) as ei:
        submit_local(write(tmp_path, changed, "b.json"), tmp_path / "lb")
    assert "augmentation: record" in str(ei.value)


def test_no_silent_overwrite(tmp_path: Path) -> None:
    submit_local(write(tmp_path, measured()), tmp_path / "lb")
    better = write(tmp_path, measured(accs=(50.0, 51.0, 52.0, 53.0, 54.0)), "better.json")
    with pytest.raises(SubmissionRejected) as ei:
        submit_local(better, tmp_path / "lb")
    assert rules_of(ei) == {"overwrite"} and "--replace" in str(ei.value)
    target = tmp_path / "lb/results/dd-v1/bird-hard/edf-ipc10.json"
    assert ResultRecord.load(target).top1_mean == 42.0
    submit_local(better, tmp_path / "lb", replace=True)
    assert ResultRecord.load(target).top1_mean == 52.0


def test_all_failures_are_listed_at_once(tmp_path: Path) -> None:
    doc = _bad({"verified": True, "artifact": None}, accs=(5.0, 6.0, 7.0))
    with pytest.raises(SubmissionRejected) as ei:
        submit_local(write(tmp_path, doc), tmp_path / "lb")
    assert rules_of(ei) == {"verified", "artifact", "seeds", "accuracy"}


def test_nonstandard_needs_the_flag_and_relaxes_only_overridden_seeds(tmp_path: Path) -> None:
    doc = measured(accs=(30.0, 32.0), overrides={"epochs": 20, "seeds": [0, 1]})
    src = write(tmp_path, doc)
    with pytest.raises(SubmissionRejected) as ei:
        submit_local(src, tmp_path / "lb")
    assert rules_of(ei) == {"nonstandard", "seeds"}
    sub = submit_local(src, tmp_path / "lb", allow_nonstandard=True)
    assert sub.record.nonstandard
    # Two seeds without a seeds override is not explained by the protocol: still rejected.
    with pytest.raises(SubmissionRejected) as ei:
        submit_local(write(tmp_path, measured(accs=(30.0, 32.0), overrides={"epochs": 20}), "b.json"),
                     tmp_path / "lb2", allow_nonstandard=True)
    assert rules_of(ei) == {"seeds"}


def test_rules_list_is_what_the_tests_cover() -> None:
    covered = set(FAILING) | {"schema", "overwrite", "location"}
    assert covered == set(RULES)


def test_shipped_records_pass_every_rule() -> None:
    assert check_existing(SHIPPED) == []


def test_check_flags_misplaced_and_unverified_records(tmp_path: Path) -> None:
    res = tmp_path / "results"
    (res / "dd-v1" / "bird-hard").mkdir(parents=True)
    (res / "dd-v1" / "bird-hard" / "edf-ipc50.json").write_text(json.dumps(measured()))  # an IPC 10 record
    (res / "dd-v1" / "bird-hard" / "mtt-ipc10.json").write_text(json.dumps(measured(method="mtt", verified=True)))
    bad = dict((Path(p).name, {v.rule for v in vs}) for p, vs in check_existing(res))
    assert bad == {"edf-ipc50.json": {"location"}, "mtt-ipc10.json": {"verified"}}
    r = CliRunner().invoke(main, ["leaderboard", "check", "--results", str(res)])
    assert r.exit_code == 2 and "[location]" in r.output and "[verified]" in r.output


def test_cli_submit_lists_rules_and_exits_2(tmp_path: Path) -> None:
    src = write(tmp_path, _bad(accs=(40.0, 41.0, 42.0), overrides={"epochs": 20}))
    r = CliRunner().invoke(main, ["submit", str(src), "--leaderboard-dir", str(tmp_path / "lb")])
    assert r.exit_code == 2
    assert "[seeds]" in r.output and "[nonstandard]" in r.output
    r = CliRunner().invoke(main, ["submit", str(write(tmp_path, measured(), "ok.json")), "--dry-run",
                                  "--leaderboard-dir", str(tmp_path / "lb")])
    assert r.exit_code == 0 and "dry run: valid" in r.output and "results/dd-v1/bird-hard/edf-ipc10.json" in r.output
    assert not (tmp_path / "lb").exists()
    r = CliRunner().invoke(main, ["submit", str(tmp_path / "ok.json"), "--leaderboard-dir", str(tmp_path / "lb")])
    assert r.exit_code == 0 and (tmp_path / "lb/results/dd-v1/bird-hard/edf-ipc10.json").is_file()


def test_check_record_directly_accepts_a_reported_record() -> None:
    rec = ResultRecord.load(SHIPPED / "paper-dd" / "imagenette" / "edf-ipc10.json")
    assert check_record(rec) == []
    assert {v.rule for v in check_record(rec.model_copy(update={"subset_sha256": "0" * 64}))} == {"subset"}


# ---------------------------------------------------------------------------------------------- Hub


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch):
    """The loopback fake Hub, with pull requests: a ``create_pr`` commit lands on a new ``refs/pr/N`` branch."""
    from huggingface_hub import constants

    original = fakehub._Handler.post_commit

    def post_commit(self, query: dict, repo_id: str, rev: str) -> None:
        if query.get("create_pr") != ["1"]:
            return original(self, query, repo_id, rev)
        repo = self.fake.repos[repo_id]
        branch = f"refs/pr/{1 + sum(b.startswith('refs/pr/') for b in repo.branches)}"
        repo.branches[branch] = repo.branches[rev]
        send = self._send

        def send_with_pr(code, body=None, headers=None, head=False):
            if code == 200 and isinstance(body, dict):
                body = {**body, "pullRequestUrl": f"{self.fake.url}/datasets/{repo_id}/discussions/{branch[8:]}"}
            send(code, body, headers, head)

        self._send = send_with_pr
        original(self, query, repo_id, branch)

    monkeypatch.setattr(fakehub._Handler, "post_commit", post_commit)
    with fakehub.serve({TOKEN}, idle_timeout=60) as h:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "ENDPOINT", h.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            h.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        yield h


def test_hub_submission_opens_a_pull_request(tmp_path: Path, hub) -> None:
    from huggingface_hub import HfApi

    HfApi(token=TOKEN).create_repo("lab/results", repo_type="dataset")
    src = write(tmp_path, measured())
    r = CliRunner().invoke(main, ["submit", str(src), "--to-hub", "lab/results"])
    assert r.exit_code == 0, r.output
    assert "opened pull request" in r.output and "/discussions/1" in r.output
    repo = hub.repos["lab/results"]
    rel = "results/dd-v1/bird-hard/edf-ipc10.json"
    assert rel not in repo.head("main").files  # main is untouched until a maintainer merges
    assert repo.head("refs/pr/1").files[rel] == submit_local(src, tmp_path / "lb", dry_run=True).payload
    # once merged, the same entry cannot be sent again without --replace
    repo.branches["main"] = repo.branches["refs/pr/1"]
    with pytest.raises(SubmissionRejected) as ei:
        submit_to_hub(src, "lab/results", token=TOKEN)
    assert rules_of(ei) == {"overwrite"}


def test_hub_errors_are_clear(tmp_path: Path, hub, monkeypatch: pytest.MonkeyPatch) -> None:
    src = str(write(tmp_path, measured()))
    r = CliRunner().invoke(main, ["submit", src, "--to-hub", "lab/no-such-repo"])
    assert r.exit_code == 2 and "could not submit to the Hub dataset repo 'lab/no-such-repo'" in r.output
    from huggingface_hub import HfApi

    HfApi(token=TOKEN).create_repo("lab/results", repo_type="dataset")
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    r = CliRunner().invoke(main, ["submit", src, "--to-hub", "lab/results"])
    assert r.exit_code == 2 and "token" in r.output
    assert "results/dd-v1/bird-hard/edf-ipc10.json" not in hub.repos["lab/results"].head("main").files


def test_hub_dry_run_sends_nothing(tmp_path: Path, hub) -> None:
    r = CliRunner().invoke(main, ["submit", str(write(tmp_path, measured())), "--to-hub", "lab/results", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "dry run: valid" in r.output and "pull request adding results/dd-v1/bird-hard/edf-ipc10.json" in r.output
    assert hub.requests == []


# ---------------------------------------------------------------------------------------------- verify


def _rec(**kw) -> ResultRecord:
    return ResultRecord.model_validate(measured(**kw))


def test_verify_passes_within_tolerance_and_records_evidence() -> None:
    rec = _rec(accs=(40.0, 42.0, 44.0, 46.0, 48.0))  # mean 44, pstdev 2.83 -> tolerance 5.66
    v = compare(rec, [SeedResult(seed=0, top1=41.0), SeedResult(seed=1, top1=43.5)])
    assert v.passed and v.rerun_mean == pytest.approx(42.25) and v.tolerance == pytest.approx(2 * 8**0.5)
    assert v.per_seed == [(0, 40.0, 41.0), (1, 42.0, 43.5)]
    marked = mark_verified(rec, v, device="cpu")
    assert marked.verified and marked.verification["seeds"] == [0, 1] and marked.verification["device"] == "cpu"
    assert not rec.verified  # the original is unchanged


def test_verify_fails_outside_tolerance() -> None:
    rec = _rec(accs=(40.0, 42.0, 44.0, 46.0, 48.0))
    v = compare(rec, [SeedResult(seed=0, top1=30.0)])
    assert not v.passed and v.difference == pytest.approx(-14.0) and "OUTSIDE" in v.summary()
    with pytest.raises(ValueError, match="outside tolerance"):
        mark_verified(rec, v)


def test_verify_tolerance_floor_for_tiny_std() -> None:
    rec = _rec(accs=(44.0,) * 5)  # std 0: the floor of 1 point applies
    assert compare(rec, [SeedResult(seed=0, top1=44.9)]).passed
    assert not compare(rec, [SeedResult(seed=0, top1=45.1)]).passed
    assert compare(rec, [SeedResult(seed=0, top1=45.1)], abs_tol=1.5).passed


def test_rerun_seeds_are_the_records_first_seeds() -> None:
    assert rerun_seeds(_rec(), 2) == (0, 1)
    with pytest.raises(ValueError):
        rerun_seeds(_rec(), 0)


def test_verify_refuses_reported_records() -> None:
    r = CliRunner().invoke(main, ["verify", str(SHIPPED / "paper-dd" / "imagenette" / "edf-ipc10.json")])
    assert r.exit_code == 2 and "only a measured record" in r.output


# ---------------------------------------------------------------------------------------------- build


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small leaderboard: a few shipped paper records plus measured Comp-DD records (easy and hard)."""
    root = tmp_path_factory.mktemp("board")
    res = root / "results"
    for rel in ("paper-dd/imagenette/edf-ipc10.json", "paper-dd/imagenette/datm-ipc10.json",
                "paper-dd/imagenette/edf-ipc1.json", "paper-kd/imagenette/rded-ipc10.json"):
        (res / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SHIPPED / rel, res / rel)
    docs = [measured("bird-easy", "edf", accs=(50.0, 52.0, 51.0, 49.0, 53.0), full=70.0),
            measured("bird-hard", "edf", accs=(30.0, 32.0, 31.0, 29.0, 33.0), full=60.0),
            measured("bird-hard", "random", accs=(20.0, 21.0, 22.0, 23.0, 24.0), full=60.0, verified=True,
                     verification={"seeds": [0], "top1": [20.0]}),
            measured("bird-hard", "mtt", accs=(40.0, 41.0), overrides={"epochs": 20, "seeds": [0, 1]}),
            measured("dog-easy", "edf", accs=(45.0,) * 5, full=65.0), measured("dog-hard", "edf", accs=(25.0,) * 5),
            measured("dog-hard", "edf", ipc=1, accs=(15.0,) * 5)]
    for d in docs:
        rec = ResultRecord.model_validate(d)
        p = res / "dd-v1" / rec.subset / f"{rec.method}-ipc{rec.ipc}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        rec.save(p)
    build(res, root)
    return root


def _table(md: str, protocol: str) -> dict[tuple[str, str], list[str]]:
    section = md.split(f"## {protocol}\n", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()
            if line.startswith("|")]
    header = rows[0]
    return {(r[0], r[1]): dict(zip(header, r)) for r in rows[2:]}


def test_markdown_tables_marks_and_best(board: Path) -> None:
    md = (board / "README.md").read_text("utf-8")
    assert md.index("## dd-v1") < md.index("## paper-dd") < md.index("## paper-kd")  # measured protocols first
    dd = _table(md, "dd-v1")
    row = dd[("bird-hard", "10")]
    assert row["EDF"] == "**31.0 ± 1.4**"  # measured: no mark; best standard result of the row in bold
    assert row["Random"] == "22.0 ± 1.4✓"  # verified
    assert row["MTT"] == "40.5 ± 0.5*"  # non-standard: marked, never bold although it is the highest
    assert row["Full"] == "60.0 ± 1.0"
    assert dd[("bird-easy", "10")]["MTT"] == "–"
    nette = _table(md, "paper-dd")[("imagenette", "10")]
    assert nette["EDF"] == "**71.0 ± 0.8**†" and nette["DATM"] == "68.9 ± 0.8†"
    assert "EDF paper, Table 1 (DD methods)" in md
    assert "(plots/easy-vs-hard-dd-v1.png)" in md and "(plots/acc-vs-ipc-paper-kd.png)" in md


def test_csv_has_one_row_per_record(board: Path) -> None:
    rows = list(csv.DictReader(io.StringIO((board / "leaderboard.csv").read_text("utf-8"))))
    assert len(rows) == len(load_entries(board / "results")) == 11
    mtt = next(r for r in rows if r["method"] == "mtt")
    assert (mtt["status"], mtt["nonstandard"], mtt["n_seeds"]) == ("non-standard", "True", "2")
    easy = next(r for r in rows if r["subset"] == "bird-easy")
    assert (easy["category"], easy["difficulty"], float(easy["recovery_ratio"])) == ("bird", "easy", 0.7286)


def test_html_is_self_contained(board: Path) -> None:
    page = (board / "index.html").read_text("utf-8")
    assert page.count("<tr data-protocol=") == 11
    for external in ("<script src", "<link", "@import", "url(", "http://", "https://"):
        assert external not in page
    assert page.count('src="data:image/png;base64,') == 4  # acc-vs-ipc x3 protocols + easy-vs-hard for dd-v1
    assert 'href="results/dd-v1/bird-hard/edf-ipc10.json"' in page


def test_plots_are_pngs_and_easy_vs_hard_needs_pairs(board: Path) -> None:
    names = sorted(p.name for p in (board / "plots").iterdir())
    assert names == ["acc-vs-ipc-dd-v1.png", "acc-vs-ipc-paper-dd.png", "acc-vs-ipc-paper-kd.png",
                     "easy-vs-hard-dd-v1.png"]
    with Image.open(board / "plots" / "easy-vs-hard-dd-v1.png") as im:
        assert im.format == "PNG" and im.size == (550, 500)


def test_build_is_a_pure_function_of_the_records(board: Path, tmp_path: Path) -> None:
    first = render(list(reversed(load_entries(board / "results"))))  # input order does not matter
    copy = tmp_path / "elsewhere"
    shutil.copytree(board / "results", copy / "results")
    r = CliRunner().invoke(main, ["leaderboard", "build", "--results", str(copy / "results"), "--out", str(copy)])
    assert r.exit_code == 0, r.output
    for name, data in first.items():
        assert (copy / name).read_bytes() == data == (board / name).read_bytes(), name


def test_build_rejects_a_misplaced_record(tmp_path: Path) -> None:
    res = tmp_path / "results" / "dd-v1" / "bird-hard"
    res.mkdir(parents=True)
    (res / "edf-ipc50.json").write_text(json.dumps(measured()))
    r = CliRunner().invoke(main, ["leaderboard", "build", "--results", str(tmp_path / "results"),
                                  "--out", str(tmp_path)])
    assert r.exit_code == 2 and "must be stored at results/dd-v1/bird-hard/edf-ipc10.json" in r.output


# ---------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_evaluate_submit_build_verify_on_sample_imagenet(make_sample, tmp_path: Path) -> None:
    """A real `compdd evaluate` record (sample ImageNet, overridden epochs and seeds) enters only with
    --allow-nonstandard, shows up marked in the build, and `compdd verify` re-runs a seed and marks it verified."""
    root = make_sample(("bird-easy",), train=24, val=8, size=32)
    run, lb = tmp_path / "run", tmp_path / "lb"
    cli = CliRunner()
    r = cli.invoke(main, ["evaluate", "--method", "random", "--subset", "bird-easy", "--ipc", "10", "--res", "32",
                          "--epochs", "15", "--seeds", "0,1", "--device", "cpu", "--no-references",
                          "--imagenet-root", str(root), "--out", str(run)])
    assert r.exit_code == 0, r.output
    result = run / "result.json"
    assert ResultRecord.load(result).top1_mean > 20.0  # learned something: above chance by a margin

    r = cli.invoke(main, ["submit", str(result), "--leaderboard-dir", str(lb)])
    assert r.exit_code == 2 and "[nonstandard]" in r.output and "[seeds]" in r.output
    r = cli.invoke(main, ["submit", str(result), "--leaderboard-dir", str(lb), "--allow-nonstandard"])
    assert r.exit_code == 0, r.output
    entry = lb / "results" / "dd-v1" / "bird-easy" / "random-ipc10.json"

    r = cli.invoke(main, ["verify", str(entry), "--seeds", "1", "--device", "cpu", "--imagenet-root", str(root)])
    assert r.exit_code == 0, r.output
    rec = ResultRecord.load(entry)
    assert rec.verified and rec.verification["seeds"] == [0]
    assert rec.verification["top1"][0] == pytest.approx(rec.per_seed[0].top1, abs=1e-9)  # same seed, same device
    assert check_existing(lb / "results") == []

    r = cli.invoke(main, ["leaderboard", "build", "--results", str(lb / "results"), "--out", str(lb)])
    assert r.exit_code == 0, r.output
    row = _table((lb / "README.md").read_text("utf-8"), "dd-v1")[("bird-easy", "10")]
    assert row["Random"] == f"{rec.top1_mean:.1f} ± {rec.top1_std:.1f}✓*"
