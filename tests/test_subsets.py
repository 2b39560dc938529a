"""Building subsets from class complexity: ranking, the definition and its provenance, agreement, figures, report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from compdd import imagenet
from compdd.benchmark import load_definition
from compdd.cli import main
from compdd.complexity.run import class_table
from compdd.subsets import agreement, build_definition, write_definition, write_report

V1 = load_definition("comp-dd-v1")


def fake_scores(folder: Path, complexity: dict[str, float], per_class: int = 3) -> Path:
    """A finished scores folder whose classes have exactly the given mean complexity."""
    folder.mkdir(parents=True)
    rows = []
    for w, c in complexity.items():
        for i in range(per_class):
            d = (i - (per_class - 1) / 2) * 0.01  # spread around the mean, mean unchanged
            rows.append({"path": f"train/{w}/{i}.JPEG", "wnid": w, "label": imagenet.index_of(w), "layer": "layer4",
                         "fraction": 1 - c - d, "complexity": c + d, "empty_map": False, "target": imagenet.index_of(w),
                         "pred": imagenet.index_of(w), "confidence": 0.9})
    images = pd.DataFrame(rows)
    images.to_parquet(folder / "images.parquet")
    (folder / "classes.csv").write_text(class_table(images).to_csv(index=False, float_format="%.6f"))
    run = {"format": "compdd-scores/1", "split": "train", "images": len(rows), "limit_per_class": None,
           "cam": {"preset": "gradcam-v1", "cam": "gradcam", "target": "label", "threshold": 0.5, "comparison": ">=",
                   "resolution": "native", "layers": ["layer4"], "input_size": 224, "resize": "squash"},
           "scorer": {"arch": "resnet18", "weights": "resnet18.tv_in1k", "source": "timm", "sha256": "ab" * 32}}
    (folder / "run.json").write_text(json.dumps(run))
    (folder / "summary.json").write_text(json.dumps({"images": len(rows), "scored": len(rows), "unreadable": 0,
                                                     "classes": len(complexity), "empty_maps": {"layer4": 0}}))
    return folder


def v1_like(categories: tuple[str, ...] = ("bird", "car")) -> dict[str, float]:
    """Hard classes of v1 more complex than its easy ones, every class a distinct value."""
    out = {}
    for c in categories:
        for k, w in enumerate(V1.subset(f"{c}-easy").wnids):
            out[w] = 0.50 + 0.01 * k
        for k, w in enumerate(V1.subset(f"{c}-hard").wnids):
            out[w] = 0.70 + 0.01 * k
    return out


def test_rebuilding_v1_like_scores_gives_v1(tmp_path: Path) -> None:
    scores = fake_scores(tmp_path / "s", v1_like())
    defn, agree = build_definition(scores, categories=["bird", "car"], date="2025-01-01")
    assert [s.name for s in defn.subsets] == ["bird-easy", "bird-hard", "car-easy", "car-hard"]
    for s in defn.subsets:
        assert set(s.wnids) == set(V1.subset(s.name).wnids)
        assert list(s.wnids) == sorted(s.wnids, key=imagenet.index_of)  # stable local labels
    assert [(r["subset"], r["overlap"], r["jaccard"]) for r in agree] == [
        ("bird-easy", 10, 1.0), ("bird-hard", 10, 1.0), ("car-easy", 10, 1.0), ("car-hard", 10, 1.0)]
    prov = defn.provenance
    assert prov["date"] == "2025-01-01" and prov["complexity"]["threshold"] == 0.5
    assert prov["complexity"]["comparison"] == ">=" and prov["complexity"]["layer"] == "layer4"
    assert prov["scorer"]["weights"] == "resnet18.tv_in1k" and prov["agreement"]["reference"] == "comp-dd-v1"
    assert len(prov["class_complexity"]) == 40

    path = write_definition(defn, tmp_path / "def.json")
    again = load_definition(path)  # validates like any definition file
    assert again.subsets == tuple(s.__class__(s.name, s.wnids, s.category, s.difficulty, again.name) for s in defn.subsets)
    assert again.sha256() == defn.sha256()


def test_ranking_swaps_and_ties(tmp_path: Path) -> None:
    cx = v1_like(("bird",))
    easy, hard = V1.subset("bird-easy").wnids, V1.subset("bird-hard").wnids
    cx[easy[0]], cx[hard[0]] = cx[hard[0]], cx[easy[0]]  # one class changes sides
    defn, agree = build_definition(fake_scores(tmp_path / "a", cx), categories=["bird"])
    assert hard[0] in defn.subset("bird-easy").wnids and easy[0] in defn.subset("bird-hard").wnids
    assert {r["subset"]: (r["overlap"], r["jaccard"]) for r in agree} == {
        "bird-easy": (9, round(9 / 11, 4)), "bird-hard": (9, round(9 / 11, 4))}
    assert agree[0]["only_new"] == [hard[0]] and agree[0]["only_reference"] == [easy[0]]

    # a tie across the easy/hard boundary is broken by wnid, so the result never depends on file order
    cx = v1_like(("bird",))
    a, b = sorted([easy[9], hard[0]])
    cx[a] = cx[b] = 0.6
    defn, _ = build_definition(fake_scores(tmp_path / "b", cx), categories=["bird"])
    assert a in defn.subset("bird-easy").wnids and b in defn.subset("bird-hard").wnids


def test_missing_members_and_user_categories(tmp_path: Path) -> None:
    cx = v1_like()
    dropped = V1.subset("bird-hard").wnids[3]
    del cx[dropped]
    scores = fake_scores(tmp_path / "s", cx)
    with pytest.raises(ValueError, match=f"1 of 20 member classes were not scored.*{dropped}"):
        build_definition(scores, categories=["bird"])
    with pytest.raises(ValueError, match="unknown category"):
        build_definition(scores, categories=["fungi"])

    mine = sorted(w for w in cx if w in V1.categories["bird"]) + [V1.subset("car-hard").wnids[0]]
    cats = tmp_path / "cats.json"
    cats.write_text(json.dumps({"bird": mine}))
    defn, agree = build_definition(scores, categories_file=cats, categories=["bird"])
    assert set(defn.subset("bird-easy").wnids) | set(defn.subset("bird-hard").wnids) == set(mine)
    assert defn.categories["bird"] == tuple(mine)
    assert {r["subset"]: r["jaccard"] for r in agree} == {"bird-easy": 1.0, "bird-hard": round(9 / 11, 4)}


def test_report_and_cli(tmp_path: Path) -> None:
    scores = fake_scores(tmp_path / "s", v1_like())
    r = CliRunner().invoke(main, ["build-subsets", "--scores", str(scores), "--build-categories", "bird,car",
                                  "--out", str(tmp_path / "def.json")])
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output and "bird-hard" in r.output and "10/10  1.00" in r.output
    r = CliRunner().invoke(main, ["build-subsets", "--scores", str(scores), "--out", str(tmp_path / "x.json")])
    assert r.exit_code == 2 and "category 'dog'" in r.output and "--build-categories" in r.output

    report = write_report(scores, tmp_path / "rep", definition=tmp_path / "def.json")
    text = report.read_text()
    assert "| bird | 54.5% | 74.5% | +20.0 | 10/10, 1.00 | 10/10, 1.00 |" in text
    for stem in ("complexity-distribution", "easy-vs-hard", "train-images"):
        for ext in (".png", ".pdf"):
            f = tmp_path / "rep" / f"{stem}{ext}"
            assert f.is_file() and f.stat().st_size > 5000, f
    # without a built definition the report compares v1's subsets for the fully scored categories
    r = CliRunner().invoke(main, ["report", "--scores", str(scores), "--out", str(tmp_path / "rep2")])
    assert r.exit_code == 0, r.output
    assert "## Subsets (comp-dd-v1)" in (tmp_path / "rep2" / "report.md").read_text()


def test_agreement_ignores_subsets_the_reference_lacks() -> None:
    classic = load_definition("classic")
    assert agreement(classic, V1) == []
    assert [r["jaccard"] for r in agreement(V1, V1)] == [1.0] * 16
