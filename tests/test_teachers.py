"""Teachers (trained, cached by hash, imported from weights), protocol teachers and the KD batch augmentation."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from compdd import teachers
from compdd.data import SubsetTensors
from compdd.evaluation.protocols import get_protocol
from compdd.teachers import (
    TeacherError,
    TeacherRecipe,
    get_teacher,
    kd_crop_cutmix,
    load_teacher,
    protocol_labels,
    protocol_teacher,
)

TINY = {"model": "convnet_d2_bn", "model_kwargs": {"width": 8}, "epochs": 3, "batch_size": 8}


def toy_split(classes: int = 3, per_class: int = 8, res: int = 16, seed: int = 0) -> SubsetTensors:
    """Class ``c`` = a distinct flat colour plus noise: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.tensor([[220, 40, 40], [40, 220, 40], [40, 40, 220], [200, 200, 40]])[:classes]
    labels = torch.arange(classes).repeat_interleave(per_class)
    x = colours[labels].view(-1, 3, 1, 1).float() + 30 * torch.randn(len(labels), 3, res, res, generator=g)
    return SubsetTensors(x.clamp(0, 255).to(torch.uint8), labels, tuple(f"n{i:08d}" for i in range(classes)),
                         "toy", "train")


def test_teacher_is_trained_once_then_found_by_its_hash(monkeypatch):
    train = toy_split()
    t1 = get_teacher(train, TINY, progress=False)
    assert t1.path is not None and (t1.path / "teacher.json").is_file()
    assert t1.info["source"] == "trained" and t1.info["data_sha256"] == teachers.tensors_sha256(train)
    assert not t1.model.training and not any(p.requires_grad for p in t1.model.parameters())

    def no_training(*a, **k):
        raise AssertionError("a cached teacher must not be retrained")

    monkeypatch.setattr(teachers, "train_teacher", no_training)
    t2 = get_teacher(train, TINY, progress=False)
    assert t2.id == t1.id and t2.path == t1.path
    for (k, a), (_, b) in zip(t1.model.state_dict().items(), t2.model.state_dict().items()):
        assert torch.equal(a, b), k
    x = train.normalized()
    assert torch.equal(t1.logits(x), t2.logits(x))
    # the uint8 pixels give the same logits as the normalised floats
    assert torch.allclose(t1.logits(train.images), t1.logits(x), atol=1e-5)


def test_teacher_id_changes_with_recipe_and_data():
    train = toy_split()
    base = get_teacher(train, TINY, progress=False)
    other_recipe = get_teacher(train, {**TINY, "epochs": 2}, progress=False)
    changed = toy_split()
    changed.images[0, 0, 0, 0] ^= 1
    other_data = get_teacher(changed, TINY, progress=False)
    assert len({base.id, other_recipe.id, other_data.id}) == 3
    assert len(list(teachers.teachers_dir().iterdir())) == 3


def test_teacher_training_is_seeded_and_learns():
    train, val = toy_split(seed=0), toy_split(per_class=6, seed=1)
    recipe = TeacherRecipe(**{**TINY, "epochs": 8})
    a = teachers.train_teacher(train, recipe, progress=False)
    b = teachers.train_teacher(train, recipe, progress=False)
    for (k, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), k
    t = get_teacher(train, recipe, val=val, progress=False)
    assert t.info["train_top1"] >= 90 and t.info["val_top1"] >= 90  # chance is 33 %


def test_teacher_from_weights_file(tmp_path):
    train = toy_split()
    donor = get_teacher(train, TINY, progress=False)
    state = donor.model.state_dict()
    st_file, pt_file = tmp_path / "w.safetensors", tmp_path / "w.pt"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st_file))
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, pt_file)  # a DataParallel checkpoint
    x = train.normalized()
    for f in (st_file, pt_file):
        t = get_teacher(train, TINY, weights=f, progress=False)
        assert t.info["source"] == "weights" and t.info["weights_sha256"] and t.info["recipe"] is None
        assert torch.equal(t.logits(x), donor.logits(x))
        assert load_teacher(t.path).id == t.id
    wrong = tmp_path / "wrong.safetensors"
    save_file({"features.0.weight": torch.zeros(3, 3, 3, 3)}, str(wrong))
    with pytest.raises(TeacherError, match="wrong.safetensors does not fit"):
        get_teacher(train, TINY, weights=wrong, progress=False)
    with pytest.raises(FileNotFoundError, match="no such file"):
        get_teacher(train, TINY, weights=tmp_path / "missing.pt", progress=False)


def test_bad_recipe_key_is_named():
    with pytest.raises(TeacherError, match="epoch.*known keys"):
        get_teacher(toy_split(), {"epoch": 3}, progress=False)


def test_protocol_teachers_share_the_default_recipe():
    kd, static, dd = get_protocol("kd-v1"), get_protocol("soft-static-v1"), get_protocol("dd-v1")
    # methods use TeacherRecipe() by default, so they and both KD protocols train one teacher per subset and res
    assert teachers.parse_recipe(kd.kd["teacher"]) == TeacherRecipe()
    assert teachers.parse_recipe(static.kd["teacher"]) == TeacherRecipe()
    assert protocol_teacher(dd, toy_split()) is None
    assert teachers.protocol_needs_teacher(kd) and teachers.protocol_needs_teacher(static)
    assert kd.label_mode == "kd" and kd.kd["temperature"] == 20 and kd.selection == "final_epoch"
    assert kd.seeds == (0, 1, 2, 3, 4) and static.seeds == (0, 1, 2, 3, 4)


def test_static_relabel_replaces_labels_with_teacher_logits():
    train = toy_split()
    t = get_teacher(train, TINY, progress=False)
    static, kd = get_protocol("soft-static-v1"), get_protocol("kd-v1")
    x = train.normalized()[:5]
    y = train.labels[:5]
    got = protocol_labels(static, t.model, x, y)
    assert got.shape == (5, 3) and got.dtype == torch.float32
    assert torch.equal(got, t.logits(x))
    assert protocol_labels(kd, t.model, x, y) is y
    with pytest.raises(TeacherError, match="relabels with a teacher"):
        protocol_labels(static, None, x, y)


def test_kd_crop_cutmix_is_seeded_out_of_place_and_exact_without_crop():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 16, 16, generator=g)
    before = x.clone()
    a, b, c = kd_crop_cutmix(x, 1), kd_crop_cutmix(x, 1), kd_crop_cutmix(x, 2)
    assert torch.equal(x, before)  # RDED's loop mixed the logged batch in place (R4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # a full-image crop without flip is the identity (bilinear sampling at the pixel centres)
    one = kd_crop_cutmix(x[:1], 3, crop_scale=(1.0, 1.0), flip=False)
    assert torch.allclose(one, x[:1], atol=1e-5)
    # with full crops and no flip, every output pixel is the pixel of its own or of one other image
    mixed = kd_crop_cutmix(x, 4, crop_scale=(1.0, 1.0), flip=False)
    own = (mixed - x).abs().amax(1) < 1e-5
    assert own.any() and (~own).any()
    for k in range(6):
        others = [(mixed[k] - x[j]).abs().amax(0) < 1e-5 for j in range(6) if j != k]
        assert (own[k] | torch.stack(others).any(0)).all()


def test_cli_teacher_trains_then_finds(make_sample):
    from compdd.cli import main

    root = make_sample(("bird-hard",), train=6, val=2, size=32)
    args = ["teacher", "--subset", "bird-hard", "--res", "32", "--imagenet-root", str(root), "--device", "cpu",
            "--set", "epochs=1", "--set", "model_kwargs={width: 8}", "--json"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    info = json.loads(first.stdout.strip().splitlines()[-1])
    assert info["model"] == "convnet_d3_bn" and info["source"] == "trained" and info["val_top1"] is not None
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0 and json.loads(second.stdout.strip().splitlines()[-1])["id"] == info["id"]
    bad = CliRunner().invoke(main, [*args[:-1], "--set", "epochz=1"])
    assert bad.exit_code == 2 and "epochz" in bad.output
