"""Expert trajectories: GSAM's step, seeded and resumable training, storage options, and their errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from compdd.data import SubsetTensors
from compdd.methods.tm.experts import ExpertConfig, ExpertError, ExpertSet, train_experts
from compdd.methods.tm.gsam import gsam_gradients
from compdd.methods.tm.student import FunctionalStudent
from compdd.models import MODELS, create_model, register_model
from compdd.models.convnet import ConvNet

if "tm_tiny" not in MODELS:
    @register_model("tm_tiny")
    def _tm_tiny(num_classes: int, res: int, channels: int = 3) -> nn.Module:
        return ConvNet(num_classes, res, channels, depth=2, width=8)


def toy_subset(n_per_class=8, classes=3, res=16, seed=0, split="train") -> SubsetTensors:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    base = torch.randint(40, 215, (classes, 3, 1, 1), generator=torch.Generator().manual_seed(99))
    images = (base[labels] + torch.randint(-40, 41, (len(labels), 3, res, res), generator=g)).clamp(0, 255)
    return SubsetTensors(images.to(torch.uint8), labels, ("n01530575", "n01531178", "n01532829")[:classes],
                         "toy", split)


# ------------------------------------------------------------------------------------------- GSAM

@pytest.mark.parametrize("adaptive", [True, False])
def test_gsam_step_matches_its_formula_on_a_quadratic(adaptive):
    a = [np.array([2.0, 1.0]), np.array([1.0, 3.0, 0.5])]
    b = [np.array([0.5, -1.0]), np.array([0.0, 1.0, -2.0])]
    w0 = [np.array([1.0, -2.0]), np.array([0.5, 3.0, -1.0])]
    rho, alpha, eps = 0.05, 0.3, 1e-12

    # by hand: L(w) = sum 1/2 a w^2 + b w, so grad L(w) = a w + b
    g = [ai * wi + bi for ai, wi, bi in zip(a, w0, b)]
    if adaptive:
        n = np.sqrt(sum(np.sum((np.abs(wi) * gi) ** 2) for wi, gi in zip(w0, g)))
        e = [rho * gi * wi**2 / (n + eps) for wi, gi in zip(w0, g)]
    else:
        n = np.sqrt(sum(np.sum(gi**2) for gi in g))
        e = [rho * gi / (n + eps) for gi in g]
    gp = [ai * (wi + ei) + bi for ai, wi, ei, bi in zip(a, w0, e, b)]
    ng, ngp = np.sqrt(sum(np.sum(x**2) for x in g)), np.sqrt(sum(np.sum(x**2) for x in gp))
    cos = sum(np.sum(x * y) for x, y in zip(g, gp)) / (ngp * ng + eps)
    want = [p - alpha * (q - cos * ng * p / (ngp + eps)) for q, p in zip(g, gp)]

    params = [torch.tensor(w, requires_grad=True) for w in w0]
    at, bt = [torch.tensor(x) for x in a], [torch.tensor(x) for x in b]

    def loss():
        return sum((0.5 * ai * p**2 + bi * p).sum() for ai, p, bi in zip(at, params, bt))

    value, got = gsam_gradients(params, loss, rho=rho, alpha=alpha, adaptive=adaptive)
    for gi, wi in zip(got, want):
        np.testing.assert_allclose(gi.numpy(), wi, rtol=1e-12)
    for p, w in zip(params, w0):  # the perturbation is undone
        np.testing.assert_array_equal(p.detach().numpy(), w)
    assert float(value) == pytest.approx(sum(np.sum(0.5 * ai * wi**2 + bi * wi) for ai, wi, bi in zip(a, w0, b)))
    # the direction differs from the plain gradient: GSAM really did something
    assert not np.allclose(np.concatenate(want), np.concatenate(g))


# ----------------------------------------------------------------------------------------- training

def cfg(**kw) -> ExpertConfig:
    return ExpertConfig(**{"model": "tm_tiny", "optimizer": "gsam", "epochs": 3, "batch_size": 8, **kw})


def test_experts_are_seeded_resumable_and_described_by_a_manifest(tmp_path):
    train, val = toy_subset(), toy_subset(n_per_class=4, seed=1, split="val")
    one = train_experts(train, tmp_path / "a", cfg(), 1, val=val, progress=False)
    first = (tmp_path / "a" / "expert_0000.safetensors").read_bytes()
    assert len(one) == 1
    two = train_experts(train, tmp_path / "a", cfg(), 2, val=val, progress=False)  # resumes: trains expert 1 only
    assert (tmp_path / "a" / "expert_0000.safetensors").read_bytes() == first
    fresh = train_experts(train, tmp_path / "b", cfg(), 2, val=val, progress=False)
    for i in range(2):
        assert torch.equal(two.params(i, 3), fresh.params(i, 3))
    assert not torch.equal(two.params(0, 3), two.params(1, 3))  # experts differ from each other

    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert m["num_experts"] == 2 and m["saved_epochs"] == [0, 1, 2, 3]
    assert m["config"]["optimizer"] == "gsam" and m["config"]["dsa_crop_ratio"] == 0.125
    assert "validation" in m["accuracy_split"]
    e0 = m["experts"][0]
    assert len(e0["accuracy"]) == 4 and len(e0["train_loss"]) == 3 and e0["storage_error"] == 0.0
    # epoch 0 is the initialisation of the model built from the expert's seed, in parameters() order
    torch.manual_seed(e0["seed"])
    init = create_model("tm_tiny", num_classes=3, res=16)
    assert torch.equal(two.params(0, 0), FunctionalStudent(init).flatten())
    # training moved the parameters every epoch
    assert all(not torch.equal(two.params(0, e), two.params(0, e + 1)) for e in range(3))


def test_sgd_experts_follow_plain_sgd(tmp_path):
    train = toy_subset()
    experts = train_experts(train, tmp_path, cfg(optimizer="sgd", epochs=1, dsa=False, batch_size=100), 1,
                            progress=False)
    theta0 = experts.params(0, 0)
    model = create_model("tm_tiny", num_classes=3, res=16)
    st = FunctionalStudent(model)
    theta = theta0.clone().requires_grad_()
    loss = nn.functional.cross_entropy(st(theta, train.normalized()), train.labels)  # one full batch, no DSA
    (g,) = torch.autograd.grad(loss, theta)
    assert torch.allclose(experts.params(0, 1), theta0 - 0.01 * g, atol=1e-6)


def test_fp16_and_kept_epochs_shrink_storage_at_a_stated_cost(tmp_path):
    train = toy_subset()
    full = train_experts(train, tmp_path / "full", cfg(epochs=4), 1, progress=False)
    small = train_experts(train, tmp_path / "small", cfg(epochs=4, storage_dtype="float16", keep_epochs=1), 1,
                          progress=False)
    assert small.saved_epochs == [0, 1, 4]
    raw = load_file(str(tmp_path / "small" / "expert_0000.safetensors"))
    assert raw["trajectory"].dtype == torch.float16 and raw["trajectory"].shape[0] == 3
    assert torch.allclose(small.params(0, -1), full.params(0, 4), rtol=1e-3, atol=1e-4)
    err = small.entries[0]["storage_error"]
    assert 0 < err < 1
    with pytest.raises(ExpertError, match="epoch 2 is not stored"):
        small.params(0, 2)
    with pytest.raises(ExpertError, match="epochs up to 3"):
        small.check(epochs=[3])


def test_folder_with_other_settings_is_refused(tmp_path):
    train = toy_subset()
    train_experts(train, tmp_path, cfg(), 1, progress=False)
    with pytest.raises(ExpertError, match="different config"):
        train_experts(train, tmp_path, cfg(rho=0.05), 1, progress=False)
    with pytest.raises(ExpertError, match="not an expert folder"):
        ExpertSet(tmp_path / "nothing")
