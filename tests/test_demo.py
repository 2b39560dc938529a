"""`compdd demo --quick` end to end (the README's first command): every step's artifacts exist, reload and agree."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from compdd.benchmark import load_definition
from compdd.cli import main
from compdd.demo import QUICK
from compdd.distilled import DistilledSet
from compdd.evaluation.records import ResultRecord

SUBSETS = ("bird-easy", "bird-hard", "car-easy", "car-hard")
METHODS = ("random", "datm", "edf")


def test_demo_quick_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    (out / "runs" / "stale").mkdir(parents=True)  # a previous run's leftovers are replaced, not mixed in
    r = CliRunner().invoke(main, ["demo", "--quick", "--out", str(out)])
    assert r.exit_code == 0, r.output
    text = r.output
    for n in range(1, 6):
        assert f"[{n}/5]" in text
    assert "NON-STANDARD" in text and "stands in for the pretrained ResNet-18" in text
    assert "compdd evaluate --method edf --subset bird-hard --ipc 10 --imagenet-root /data/imagenet" in text

    # 1-2: the sample tree, the scores of all 40 classes, a rebuilt definition with four subsets, the figures
    assert len(list((out / "sample-in1k" / "train").iterdir())) == 40
    classes = pd.read_csv(out / "scores" / "classes.csv")
    assert len(classes) == 40 and classes["n"].eq(24).all()
    defn = load_definition(out / "sample-definition.json")
    assert sorted(s.name for s in defn.subsets) == sorted(SUBSETS)
    for name in ("complexity-distribution", "easy-vs-hard", "train-images"):
        assert (out / "report" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (out / "report" / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
    for line in re.findall(r"(\S+-(?:easy|hard)) +(\d+)/10 classes in common", text):
        assert line[0] in SUBSETS and 0 <= int(line[1]) <= 10

    # 3: the Hub layout, loaded back in the demo
    for name in SUBSETS:
        assert list((out / "hub-export" / name).glob("train-*.parquet"))
    assert "'bird-hard'): 240 train / 80 validation rows" in text

    # 4: six records, each scoring exactly the set written next to it, flagged non-standard
    for method in METHODS:
        for name in ("bird-easy", "bird-hard"):
            run = out / "runs" / f"{method}-{name}"
            rec = ResultRecord.load(run / "result.json")
            ds = DistilledSet.load(run / "distilled")
            assert rec.method == method and rec.subset == name and rec.ipc == 1 and len(ds) == 10
            assert rec.artifact.sha256 == ds.sha256() and rec.nonstandard
            assert len(rec.per_seed) == 1 and 0.0 <= rec.top1_mean <= 100.0
    assert not (out / "runs" / "stale").exists()

    # 5: the leaderboard holds all six, and the summary table prints the records' numbers
    board = pd.read_csv(out / "leaderboard" / "leaderboard.csv")
    assert len(board) == 6 and set(board["method"]) == set(METHODS)
    assert (out / "leaderboard" / "index.html").stat().st_size > 1000
    easy = {m: ResultRecord.load(out / "runs" / f"{m}-bird-easy" / "result.json").top1_mean for m in METHODS}
    row = re.search(r"^  bird-easy +([\d.]+) +([\d.]+) +([\d.]+)$", text, re.M)
    assert row is not None, text
    assert [float(x) for x in row.groups()] == [round(easy[m], 1) for m in METHODS]
    assert json.loads((out / "scores" / "run.json").read_text())["scorer"]["trained"]["epochs"] == QUICK.scorer_epochs
