"""SRe2L: the BN-statistics loss against a hand computation, recover, the FKD store, the method end to end."""

from __future__ import annotations

import math

import pytest
import torch
from _toy_data import toy_split
from torch import nn

from compdd.distilled import DistilledSet
from compdd.methods import ConfigError, create_method
from compdd.methods.sre2l import (
    FKDStore,
    SRe2LConfig,
    _augment,
    bn_loss_of,
    bn_statistics_loss,
    pixel_bounds,
    recover,
    relabel_fkd,
)
from compdd.teachers import get_teacher

TINY = {"model": "convnet_d2_bn", "model_kwargs": {"width": 8}, "epochs": 4, "batch_size": 8}


class TwoBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 5, 3, padding=1), nn.BatchNorm2d(5)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = torch.relu(self.bn2(self.conv2(h)))
        return self.head(h.mean((2, 3)))


def _stats_by_hand(t: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and biased variance with explicit sums over (batch, height, width)."""
    b, c, h, w = t.shape
    means, variances = [], []
    for ch in range(c):
        vals = [float(v) for v in t[:, ch].reshape(-1)]
        m = sum(vals) / len(vals)
        means.append(m)
        variances.append(sum((v - m) ** 2 for v in vals) / len(vals))
    return means, variances


def test_bn_loss_matches_a_hand_computation():
    torch.manual_seed(0)
    net = TwoBN().eval()
    for bn in (net.bn1, net.bn2):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    x = torch.randn(4, 3, 6, 6)
    with torch.no_grad():
        in1 = net.conv1(x)
        in2 = net.conv2(torch.relu(net.bn1(in1)))
    want = 0.0
    for weight, inp, bn in ((10.0, in1, net.bn1), (1.0, in2, net.bn2)):
        m, v = _stats_by_hand(inp)
        dm = math.sqrt(sum((a - float(b)) ** 2 for a, b in zip(m, bn.running_mean)))
        dv = math.sqrt(sum((a - float(b)) ** 2 for a, b in zip(v, bn.running_var)))
        want += weight * (dm + dv)
    assert bn_loss_of(net, x, first_bn_weight=10.0) == pytest.approx(want, rel=1e-5)
    # the multiplier applies to the first BN in module order only
    w1 = bn_loss_of(net, x, first_bn_weight=1.0)
    assert bn_loss_of(net, x, first_bn_weight=3.0) - w1 == pytest.approx(2 * (want - w1) / 9, rel=1e-4)


def test_bn_loss_is_zero_when_batch_statistics_equal_running_buffers():
    torch.manual_seed(1)
    net = TwoBN().eval()
    x = torch.randn(5, 3, 6, 6)
    with torch.no_grad():
        in1 = net.conv1(x)
        net.bn1.running_mean.copy_(in1.mean((0, 2, 3)))
        net.bn1.running_var.copy_(in1.var((0, 2, 3), unbiased=False))
        in2 = net.conv2(torch.relu(net.bn1(in1)))
        net.bn2.running_mean.copy_(in2.mean((0, 2, 3)))
        net.bn2.running_var.copy_(in2.var((0, 2, 3), unbiased=False))
    assert bn_loss_of(net, x) == pytest.approx(0.0, abs=1e-5)


def test_bn_loss_needs_batchnorm():
    with pytest.raises(ValueError, match="no BatchNorm2d"), bn_statistics_loss(nn.Linear(2, 2)):
        pass


def test_recover_lowers_the_loss_keeps_pixels_in_range_and_is_seeded():
    teacher = get_teacher(toy_split(), TINY, progress=False).model
    cfg = SRe2LConfig(iterations=40, lr=0.1, r_bn=0.05, crop_scale=None, flip=False, jitter=2)
    out = recover(teacher, 3, 2, 16, cfg, seed=0, progress=False)
    assert out.images.shape == (6, 3, 16, 16)
    assert out.labels.tolist() == [0, 0, 1, 1, 2, 2]  # class-major
    for h in out.history:  # one entry per batch (one image of every class)
        assert h["bn_last"] < 0.5 * h["bn_first"] and h["ce_last"] < h["ce_first"]
    noise = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert bn_loss_of(teacher, out.images[0::2]) < bn_loss_of(teacher, noise)
    assert teacher(out.images).argmax(1).tolist() == out.labels.tolist()
    low, high = pixel_bounds(torch.device("cpu"))
    assert (out.images >= low - 1e-6).all() and (out.images <= high + 1e-6).all()
    again = recover(teacher, 3, 2, 16, cfg, seed=0, progress=False)
    assert torch.equal(out.images, again.images)
    short = cfg.model_copy(update={"iterations": 2})
    assert not torch.equal(recover(teacher, 3, 2, 16, short, seed=0, progress=False).images,
                           recover(teacher, 3, 2, 16, short, seed=1, progress=False).images)


def test_one_augmentation_per_batch_unless_per_image():
    x = torch.randn(1, 3, 16, 16).expand(6, 3, 16, 16).contiguous()
    shared = _augment(x, SRe2LConfig(jitter=4), torch.Generator().manual_seed(0))
    assert all(torch.equal(shared[0], shared[k]) for k in range(6))
    each = _augment(x, SRe2LConfig(jitter=4, per_image_aug=True), torch.Generator().manual_seed(0))
    assert not all(torch.equal(each[0], each[k]) for k in range(6))
    # gradients flow through crop, flip and jitter to the optimised pixels
    y = torch.randn(2, 3, 16, 16, requires_grad=True)
    _augment(y, SRe2LConfig(jitter=4), torch.Generator().manual_seed(0)).sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0


def test_fkd_store_replays_bit_exactly_and_round_trips(tmp_path):
    teacher = get_teacher(toy_split(), TINY, progress=False).model
    images = torch.randn(7, 3, 16, 16, generator=torch.Generator().manual_seed(0))  # 7 = 3 + 3 + a short batch
    store = relabel_fkd(teacher, images, epochs=2, batch_size=3, seed=5, progress=False)
    assert store.logits.shape == (2, 7, 3) and store.logits.dtype == torch.float16
    assert store.num_batches() == 3
    assert store.nbytes() == 2 * 7 * (2 * 3 + 17) + 2 * 3 * 4 * 2
    for e in range(2):
        assert sorted(store.order[e].tolist()) == list(range(7))
        for b in range(3):
            x, logits = store.batch(images, e, b)
            assert torch.equal(teacher(x).half(), logits)  # the student sees exactly what the teacher labelled
    path = store.save(tmp_path / "fkd.safetensors")
    back = FKDStore.load(path)
    for name, t in store._tensors().items():
        assert torch.equal(t, getattr(back, name)), name
    assert (back.batch_size, back.res, back.meta) == (3, 16, store.meta)
    x0, _ = store.batch(images, 1, 2)
    assert torch.equal(back.batch(images, 1, 2)[0], x0)
    # replayed crops differ between epochs, and CutMix really mixes
    assert not torch.equal(store.boxes[0], store.boxes[1])
    assert (store.mix_src[0] != torch.arange(7)).any()


def test_sre2l_method_end_to_end(tmp_path):
    train = toy_split()
    m = create_method("sre2l", iterations=5, crop_scale=None, flip=False, jitter=2, teacher=TINY)
    ds = m.distill(train, 2, seed=0, progress=False)
    assert ds.images.shape == (6, 3, 16, 16) and ds.labels.dtype == torch.int64
    teacher = get_teacher(train, TINY, progress=False)
    assert ds.meta["teacher"]["id"] == teacher.id and ds.meta["method"] == "sre2l"
    back = DistilledSet.load(ds.save(tmp_path / "set"))
    assert torch.equal(back.images, ds.images) and back.meta["teacher"]["id"] == teacher.id
    static = create_method("sre2l", iterations=5, crop_scale=None, flip=False, jitter=2, teacher=TINY,
                           relabel="static").distill(train, 2, seed=0, progress=False)
    assert torch.equal(static.images, ds.images)
    assert static.labels.shape == (6, 3) and torch.equal(static.labels, teacher.logits(ds.images))
    # a teacher folder can be given instead of the recipe
    by_path = create_method("sre2l", iterations=5, crop_scale=None, flip=False, jitter=2,
                            teacher_path=str(teacher.path)).distill(train, 2, seed=0, progress=False)
    assert torch.equal(by_path.images, ds.images)


def test_sre2l_config_and_presets():
    with pytest.raises(ConfigError, match="iteration"):
        create_method("sre2l", iteration=10)
    small = create_method("sre2l", subset="bird-hard", ipc=10, res=32).config
    assert small.crop_scale is None and small.flip is False and small.jitter == 4 and small.iterations == 1000
    big = create_method("sre2l", subset="bird-hard", ipc=10, res=128).config
    assert big.crop_scale == (0.08, 1.0) and big.iterations == 4000 and big.lr == 0.25 and big.r_bn == 0.01
    assert create_method("sre2l", subset="bird-hard", ipc=10, res=32, jitter=2).config.jitter == 2


@pytest.mark.slow
def test_sre2l_and_rded_under_kd_v1_on_the_sample(make_sample):
    """Both methods against random real images and against noise under kd-v1 (short), at 32 px on the sample.

    Measured on the generated sample (docs/kd-methods.md): neither method beats random real images here
    (KD makes random real images strong, and RDED's zoomed crops differ from the small-object test images), so
    that is reported, not asserted. What must hold: the images carry class information the teacher alone,
    labelling noise, cannot transfer.
    """
    from compdd.data import load_tensors_from_imagenet
    from compdd.evaluation.protocols import get_protocol
    from compdd.evaluation.run import evaluate_distilled
    from compdd.teachers import protocol_teacher

    root = make_sample(("bird-hard",), train=40, val=20, size=32)
    train = load_tensors_from_imagenet("bird-hard", root, "train", 32, progress=False)
    test = load_tensors_from_imagenet("bird-hard", root, "val", 32, progress=False)
    kd = get_protocol("kd-v1")
    recipe = {**kd.kd["teacher"], "epochs": 30, "model_kwargs": {"width": 32}}
    proto = kd.model_copy(update={"epochs": 60, "seeds": (0, 1), "kd": {**kd.kd, "teacher": recipe}})
    teacher = protocol_teacher(proto, train, val=test, progress=False)
    assert teacher.info["val_top1"] > 25  # chance is 10 %

    sets = {
        "random": create_method("random").distill(train, 10, seed=0, progress=False),
        "sre2l": create_method("sre2l", subset="bird-hard", ipc=10, res=32, iterations=200,
                               teacher=recipe).distill(train, 10, seed=0, progress=False),
        "rded": create_method("rded", subset="bird-hard", ipc=10, res=32, teacher=recipe).distill(
            train, 10, seed=0, progress=False),
    }
    low, high = pixel_bounds(torch.device("cpu"))
    noise = torch.randn(100, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    sets["noise"] = DistilledSet(torch.maximum(torch.minimum(noise, high), low), torch.arange(10).repeat_interleave(10))
    acc = {}
    for name, ds in sets.items():
        runs = evaluate_distilled(ds, test, proto, teacher=teacher, device="cpu", progress=False)
        acc[name] = sum(r.top1 for r in runs) / len(runs)
    print("kd-v1 (60 epochs, seeds 0-1) top-1:", {k: round(v, 2) for k, v in acc.items()})
    for name in ("sre2l", "rded"):
        assert acc[name] > acc["noise"] + 5, acc
