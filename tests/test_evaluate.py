"""The evaluation pipeline end to end: CLI runs, records, cached references, and a learnable-task sanity order."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from compdd.cli import main
from compdd.data import load_tensors_from_imagenet
from compdd.distilled import DistilledSet
from compdd.evaluation import run, trainer
from compdd.evaluation.protocols import Protocol
from compdd.evaluation.records import ResultRecord
from compdd.models import MODELS
from compdd.models.convnet import ConvNet
from compdd.teachers import Teacher

TINY = "test_convnet_w16"


@pytest.fixture(autouse=True, scope="module")
def _tiny_model_one_thread():
    """A small ConvNet for the learnable-task test; one intra-op thread (tiny layers only lose to hand-offs)."""
    MODELS.add(TINY, lambda num_classes, res, channels=3: ConvNet(num_classes, res, channels, depth=3, width=16),
               replace=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_evaluate_random_end_to_end_writes_a_valid_record(sample_root, tmp_path):
    out = tmp_path / "run"
    r = invoke("evaluate", "--method", "random", "--subset", "bird-hard", "--ipc", 1, "--res", 32,
               "--epochs", 1, "--seeds", "0", "--imagenet-root", sample_root, "--out", out, "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "NON-STANDARD" in r.output and "full data" in r.output and "recovery" in r.output
    rec = ResultRecord.load(out / "result.json")
    ds = DistilledSet.load(out / "distilled")
    assert (rec.method, rec.subset, rec.ipc, rec.resolution, rec.protocol) == ("random", "bird-hard", 1, 32, "dd-v1")
    assert rec.source == "measured" and rec.overrides == {"epochs": 1, "seeds": [0]}
    assert rec.protocol_config["epochs"] == 1 and rec.protocol_config["models"]["32"] == "convnet_d3"
    assert [s.seed for s in rec.per_seed] == [0] and rec.label_mode == "hard" and rec.eval_lr == 0.01
    assert rec.artifact.sha256 == ds.sha256() and rec.artifact.n_images == len(ds) == 10
    assert rec.distill_seed == 0 and ds.meta["subset"] == "bird-hard" and ds.labels.tolist() == list(range(10))
    # the random reference at the same ipc is this very run (same draw seed, same protocol seeds)
    assert rec.random_reference.mean == pytest.approx(rec.top1_mean)
    assert rec.recovery_ratio == pytest.approx(rec.top1_mean / rec.full_reference.mean)
    assert rec.versions["torch"] == torch.__version__ and rec.hardware["device"] == "cpu"
    assert set(rec.wall_time_s) == {"distill", "evaluate", "references"}
    full = ResultRecord.load(rec.full_reference.record)
    assert full.method == "full" and full.artifact.n_images == 240 and full.overrides == rec.overrides

    # the set scores again from its folder with the same numbers (deterministic on CPU), now without references
    r = invoke("eval-distilled", out / "distilled", "--subset", "bird-hard", "--epochs", 1, "--seeds", "0",
               "--imagenet-root", sample_root, "--no-references", "--device", "cpu", "--out", tmp_path / "again.json")
    assert r.exit_code == 0, r.output
    again = ResultRecord.load(tmp_path / "again.json")
    assert again.per_seed[0].top1 == rec.per_seed[0].top1 and again.full_reference is None
    assert again.random_reference is None
    # --no-full-reference keeps the (cached) random reference only
    r = invoke("eval-distilled", out / "distilled", "--subset", "bird-hard", "--epochs", 1, "--seeds", "0",
               "--imagenet-root", sample_root, "--no-full-reference", "--device", "cpu", "--out", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    partial = ResultRecord.load(tmp_path / "r.json")
    assert partial.full_reference is None and partial.random_reference == rec.random_reference

    r = invoke("show", out / "distilled", "--out", tmp_path / "grid.png")
    assert r.exit_code == 0 and (tmp_path / "grid.png").stat().st_size > 0


def test_imported_sets_keep_their_learned_lr_and_soft_labels(sample_root, tmp_path):
    g = torch.Generator().manual_seed(0)
    torch.save(torch.randn(10, 3, 32, 32, generator=g), tmp_path / "images_best.pt")
    torch.save(torch.randn(10, 10, generator=g), tmp_path / "labels_best.pt")
    torch.save(torch.tensor(0.005), tmp_path / "lr_best.pt")
    r = invoke("import", "--images", tmp_path / "images_best.pt", "--labels", tmp_path / "labels_best.pt",
               "--lr", tmp_path / "lr_best.pt", "--subset", "bird-hard", "--method-name", "datm",
               "--out", tmp_path / "datm")
    assert r.exit_code == 0, r.output
    r = invoke("eval-distilled", tmp_path / "datm", "--subset", "bird-hard", "--epochs", 1, "--seeds", "0,1",
               "--imagenet-root", sample_root, "--no-references", "--device", "cpu")
    assert r.exit_code == 0, r.output
    rec = ResultRecord.load(tmp_path / "datm" / "result.json")
    assert rec.method == "datm" and rec.label_mode == "soft" and rec.artifact.label_type == "soft"
    assert rec.eval_lr == pytest.approx(0.005) and rec.artifact.learned_lr == pytest.approx(0.005)


@pytest.mark.parametrize(("args", "msg"), [
    (("--method", "random", "--set", "steps=3"), "bad config for method 'random'"),
    (("--method", "nope"), "unknown method 'nope'"),
    (("--method", "random", "--protocol", "dd-v9"), "unknown protocol 'dd-v9'"),
    (("--method", "random", "--res", 48), "no model for 48 px"),
    (("--method", "random", "--ipc", 100), "fewer than ipc=100"),
])
def test_evaluate_errors_are_clear(sample_root, tmp_path, args, msg):
    base = {"--ipc": 1, "--res": 32}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    flat = [str(x) for kv in base.items() for x in kv]
    r = CliRunner().invoke(main, ["evaluate", "--subset", "bird-hard", *flat, "--epochs", "1",
                                  "--imagenet-root", str(sample_root), "--out", str(tmp_path / "o"), "--no-references"])
    assert r.exit_code == 2 and msg in r.output, r.output


def test_eval_distilled_refuses_another_subset(sample_root, tmp_path):
    DistilledSet(torch.zeros(10, 3, 32, 32), torch.arange(10), None, {"subset": "bird-easy"}).save(tmp_path / "s")
    r = CliRunner().invoke(main, ["eval-distilled", str(tmp_path / "s"), "--subset", "bird-hard", "--no-references",
                                  "--imagenet-root", str(sample_root)])
    assert r.exit_code == 2 and "distilled from 'bird-easy'" in r.output


def test_reference_kinds():
    assert run.reference_kinds(True) == ("random", "full") and run.reference_kinds(False) == ()
    assert run.reference_kinds(["full", "random"]) == ("random", "full") and run.reference_kinds({"full"}) == ("full",)
    with pytest.raises(ValueError, match=r"unknown reference kind\(s\) \['ful'\]; choose from random, full"):
        run.reference_kinds(["ful"])


def test_references_are_cached_by_what_determines_them(sample_root, monkeypatch):
    train = load_tensors_from_imagenet("bird-hard", sample_root, "train", 32, progress=False)
    test = load_tensors_from_imagenet("bird-hard", sample_root, "val", 32, progress=False)
    proto = Protocol(name="t", version=1, models={32: TINY}, epochs=1, seeds=(0,), augmentation={"name": "none"})
    first, path = run.reference("random", train, test, proto, ipc=2, device="cpu", progress=False)
    assert path.is_file() and first.ipc == 2 and first.artifact.n_images == 20

    def no_training(*a, **k):
        raise AssertionError("a cached reference was trained again")

    monkeypatch.setattr(trainer, "train_and_evaluate", no_training)
    again, path2 = run.reference("random", train, test, proto, ipc=2, device="cpu", progress=False)
    assert path2 == path and again.per_seed == first.per_seed
    key = json.loads(again.notes.split("key: ", 1)[1])
    assert key["ipc"] == 2 and key["subset_sha256"] == first.subset_sha256 and key["protocol"]["epochs"] == 1
    # another ipc, another protocol setting or other data each miss the cache
    for kw in ({"ipc": 3}, {"ipc": 2, "overrides": {"epochs": 2}}):
        with pytest.raises(AssertionError, match="trained again"):
            run.reference("random", train, test, proto, device="cpu", progress=False, **kw)
    test.images[0, 0, 0, 0] ^= 1
    with pytest.raises(AssertionError, match="trained again"):
        run.reference("random", train, test, proto, ipc=2, device="cpu", progress=False)


def test_learnable_task_full_beats_random_10_beats_random_1_beats_chance(make_sample):
    root = make_sample(("bird-easy",), train=40, val=20, size=32)
    train = load_tensors_from_imagenet("bird-easy", root, "train", 32, progress=False)
    test = load_tensors_from_imagenet("bird-easy", root, "val", 32, progress=False)
    proto = Protocol(name="t", version=1, models={32: TINY}, epochs=10, batch_size=50, seeds=(0, 1))
    acc = {}
    for kind, ipc in (("random", 1), ("random", 10), ("full", None)):
        rec, _ = run.reference(kind, train, test, proto, ipc=ipc, device="cpu", progress=False, cache=False)
        acc[kind, ipc] = rec.top1_mean
    # measured: about 86.5 > 57.3 > 33.0 > 10 (two seeds, 200 test images)
    assert acc["full", None] > acc["random", 10] + 5 > acc["random", 1] + 10 > 10 + 10, acc


class CountingTeacher(torch.nn.Module):
    """A stand-in teacher: a linear map of the mean colour; counts its forward passes."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 10)
        self.register_buffer("steps", torch.tensor(0))  # a 0-d buffer, like BatchNorm's num_batches_tracked
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.lin(x.mean((2, 3)))


@pytest.mark.parametrize(("kw", "mode"), [
    ({"label_mode": "kd", "augmentation": {"name": "kd-crop-cutmix"}, "kd": {"temperature": 4}}, "kd"),
    ({"label_mode": "soft", "augmentation": {"name": "none"}, "kd": {"relabel": "static"}}, "soft"),
])
def test_teacher_protocols_score_the_set_and_references_with_the_teacher(sample_root, tmp_path, kw, mode):
    train = load_tensors_from_imagenet("bird-hard", sample_root, "train", 32, progress=False)
    from compdd.methods import create_method

    create_method("random").distill(train, 1).save(tmp_path / "set")
    proto = Protocol(name="t", version=1, models={32: TINY}, epochs=1, seeds=(0,), batch_size=64, **kw)
    teacher = CountingTeacher()
    # a plain module, or a cached-teacher object whose record (id, recipe, hashes) goes into the result
    given = teacher if mode == "soft" else Teacher(teacher, {"id": "t-123", "model": "counting"})
    rec = run.run_eval_distilled(tmp_path / "set", "bird-hard", protocol=proto, imagenet_root=sample_root,
                                 teacher=given, device="cpu", progress=False)
    if mode == "soft":
        assert rec.teacher == {"id": None, "weights_fingerprint": run.module_fingerprint(teacher)}
    else:
        assert rec.teacher["id"] == "t-123" and rec.teacher["model"] == "counting"
    assert rec.label_mode == mode and teacher.calls > 0 and rec.random_reference is not None
    full = ResultRecord.load(rec.full_reference.record)
    assert full.label_mode == mode and full.teacher == rec.teacher


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["kd-v1", "soft-static-v1"])
def test_shipped_teacher_protocols_end_to_end(sample_root, tmp_path, protocol):
    out = tmp_path / "run"
    r = invoke("evaluate", "--method", "random", "--subset", "bird-hard", "--ipc", 2, "--res", 32, "--protocol",
               protocol, "--epochs", 2, "--seeds", "0", "--imagenet-root", sample_root, "--out", out, "--device", "cpu")
    assert r.exit_code == 0, r.output
    rec = ResultRecord.load(out / "result.json")
    assert rec.protocol == protocol and rec.teacher["id"] and rec.teacher["recipe"]["epochs"] == 60
    assert rec.label_mode == ("kd" if protocol == "kd-v1" else "soft")
    assert ResultRecord.load(rec.full_reference.record).teacher == rec.teacher
