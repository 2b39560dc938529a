"""The trajectory-matching engine: meta-gradients, memory modes, hooks, checkpoints and divergence."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compdd.augment import DSA
from compdd.data import SubsetTensors
from compdd.methods.tm.engine import DivergenceError, TMConfig, latest_checkpoint, run
from compdd.methods.tm.experts import ExpertConfig, ExpertSet, train_experts
from compdd.methods.tm.hooks import (
    Hooks,
    ImageInit,
    LabelInit,
    LossThresholdGate,
    StartEpochWindow,
    init_soft_labels,
)
from compdd.methods.tm.memory import SavedTensorMeter
from compdd.methods.tm.student import FunctionalStudent
from compdd.methods.tm.unroll import matching_gradients, plan_inner_steps
from compdd.models import MODELS, register_model
from compdd.models.convnet import ConvNet

if "tm_tiny" not in MODELS:
    @register_model("tm_tiny")
    def _tm_tiny(num_classes: int, res: int, channels: int = 3) -> nn.Module:
        return ConvNet(num_classes, res, channels, depth=2, width=8)


# ------------------------------------------------------------------------------- a tiny problem

class TinyNet(nn.Module):
    """conv -> instance norm -> relu -> avgpool -> linear, in ``parameters()`` order w, b, gn_w, gn_b, fc_w, fc_b."""

    def __init__(self, width: int = 4, side: int = 8, classes: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.norm = nn.GroupNorm(width, width)
        self.fc = nn.Linear(width * (side // 2) ** 2, classes)

    def forward(self, x):
        return self.fc(F.avg_pool2d(F.relu(self.norm(self.conv(x))), 2).flatten(1))


def naive_loss(params, S, Y, lr, steps, augment, target, start):
    """An independent unroll: explicit layers on a list of tensors, per-tensor updates, per-tensor loss sums."""
    theta = [p.detach().clone().requires_grad_() for p in params]
    for st in steps:
        x = augment(S[st.indices], torch.Generator().manual_seed(st.seed))
        w, b, gw, gb, fw, fb = theta
        h = F.avg_pool2d(F.relu(F.group_norm(F.conv2d(x, w, b, padding=1), w.shape[0], gw, gb)), 2)
        out = F.linear(h.flatten(1), fw, fb)
        y = Y[st.indices]
        if y.is_floating_point():
            ce = -(F.log_softmax(out, 1) * F.softmax(y, 1)).sum(1).mean()
        else:
            ce = F.cross_entropy(out, y)
        grads = torch.autograd.grad(ce, theta, create_graph=True)
        theta = [t - lr * g for t, g in zip(theta, grads)]
    num = sum(((t - q) ** 2).sum() for t, q in zip(theta, target))
    den = sum(((s - q) ** 2).sum() for s, q in zip(start, target))
    return num / den


def problem(dtype=torch.float32, n=6, side=8, classes=3, syn_steps=4, batch=4, soft=True, seed=0):
    torch.manual_seed(seed)
    net = TinyNet(side=side, classes=classes).to(dtype)
    start = [p.detach().clone() for p in net.parameters()]
    target = [p + 0.05 * torch.randn_like(p) for p in start]
    S = torch.randn(n, 3, side, side, dtype=dtype)
    Y = torch.randn(n, classes, dtype=dtype) if soft else torch.arange(n) % classes
    lr = torch.tensor(0.05, dtype=dtype)
    steps = plan_inner_steps(n, syn_steps, batch, torch.Generator().manual_seed(seed))
    return net, start, target, S, Y, lr, steps


def engine_grads(net, start, target, S, Y, lr, steps, augment, **kw):
    st = FunctionalStudent(net)
    flat = lambda ts: torch.cat([t.reshape(-1) for t in ts])  # noqa: E731
    return matching_gradients(st, flat(start), flat(target), S, Y, lr, steps, augment=augment, **kw)


def rel(a, b):
    return float((a - b).norm() / b.norm())


DSA_SMALL = DSA(crop_ratio=0.125)


# ------------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("soft", [True, False])
def test_engine_gradients_match_an_independent_unroll(soft):
    net, start, target, S, Y, lr, steps = problem(soft=soft)
    Sn = S.clone().requires_grad_()
    lrn = lr.clone().requires_grad_()
    Yn = Y.clone().requires_grad_(soft)
    L = naive_loss(start, Sn, Yn, lrn, steps, DSA_SMALL, target, start)
    want = torch.autograd.grad(L, [Sn, lrn, Yn] if soft else [Sn, lrn])
    for mode in ("plain", "exact"):
        got = engine_grads(net, start, target, S, Y, lr, steps, DSA_SMALL, mode=mode)
        assert math.isclose(float(got.loss), float(L.detach()), rel_tol=1e-6)
        assert rel(got.grad_images, want[0]) < 1e-5, mode
        assert rel(got.grad_lr, want[1]) < 1e-5, mode
        if soft:
            assert rel(got.grad_labels, want[2]) < 1e-5, mode
        else:
            assert got.grad_labels is None


def test_gradients_match_finite_differences():
    net, start, target, S, Y, lr, steps = problem(torch.float64, n=4, side=4, classes=2, syn_steps=3, batch=3)
    got = engine_grads(net, start, target, S, Y, lr, steps, DSA_SMALL, mode="exact")
    st = FunctionalStudent(net)
    flat = lambda ts: torch.cat([t.reshape(-1) for t in ts])  # noqa: E731

    def loss(S_, lr_, Y_):
        return float(matching_gradients(st, flat(start), flat(target), S_, Y_, lr_, steps, augment=DSA_SMALL,
                                        mode="plain").loss)

    g = torch.Generator().manual_seed(1)
    eps = 1e-6
    for name, base, grad in (("images", S, got.grad_images), ("labels", Y, got.grad_labels)):
        v = torch.randn(base.shape, generator=g, dtype=base.dtype)
        if name == "images":
            fd = (loss(S + eps * v, lr, Y) - loss(S - eps * v, lr, Y)) / (2 * eps)
        else:
            fd = (loss(S, lr, Y + eps * v) - loss(S, lr, Y - eps * v)) / (2 * eps)
        assert math.isclose(fd, float((grad * v).sum()), rel_tol=1e-5), name
    fd = (loss(S, lr + eps, Y) - loss(S, lr - eps, Y)) / (2 * eps)
    assert math.isclose(fd, float(got.grad_lr), rel_tol=1e-5)


def test_memory_saving_mode_gives_the_plain_gradient_with_far_fewer_saved_bytes():
    net, start, target, S, Y, lr, steps = problem(n=8, syn_steps=6, batch=8)
    with SavedTensorMeter() as m_plain:
        plain = engine_grads(net, start, target, S, Y, lr, steps, DSA_SMALL, mode="plain")
    with SavedTensorMeter() as m_exact:
        exact = engine_grads(net, start, target, S, Y, lr, steps, DSA_SMALL, mode="exact")
    with SavedTensorMeter() as m_chunk:
        chunked = engine_grads(net, start, target, S, Y, lr, steps, DSA_SMALL, mode="exact", chunk_size=2)
    for r in (exact, chunked):
        assert rel(r.grad_images, plain.grad_images) < 1e-5
        assert rel(r.grad_lr, plain.grad_lr) < 1e-5
        assert rel(r.grad_labels, plain.grad_labels) < 1e-5
    assert m_exact.peak * 4 <= m_plain.peak  # one step alive instead of six
    assert m_chunk.peak < m_exact.peak  # and a quarter of the batch instead of all of it


def test_tesla_is_an_approximation_that_is_exact_for_one_step():
    net, start, target, S, Y, lr, steps = problem(syn_steps=1)
    one_exact = engine_grads(net, start, target, S, Y, lr, steps, DSA_SMALL, mode="exact")
    one_tesla = engine_grads(net, start, target, S, Y, lr, steps, DSA_SMALL, mode="tesla")
    assert rel(one_tesla.grad_images, one_exact.grad_images) < 1e-6
    net, start, target, S, Y, lr, steps = problem(syn_steps=5)
    many_exact = engine_grads(net, start, target, S, Y, lr, steps, DSA_SMALL, mode="exact")
    many_tesla = engine_grads(net, start, target, S, Y, lr, steps, DSA_SMALL, mode="tesla")
    assert rel(many_tesla.grad_images, many_exact.grad_images) > 1e-3  # cross-step terms dropped


def test_loss_reduction_hook_sees_per_element_errors():
    net, start, target, S, Y, lr, steps = problem()
    seen = {}

    def keep_largest_half(r, d):
        seen["shapes"] = (r.shape, d.shape, r.requires_grad, d.requires_grad)
        keep = r.detach().argsort()[r.numel() // 2:]
        return r[keep].sum() / d[keep].sum()

    plain = engine_grads(net, start, target, S, Y, lr, steps, DSA_SMALL, mode="plain", reduction=keep_largest_half)
    exact = engine_grads(net, start, target, S, Y, lr, steps, DSA_SMALL, mode="exact", reduction=keep_largest_half)
    P = sum(p.numel() for p in start)
    assert seen["shapes"] == ((P,), (P,), True, False)
    full = engine_grads(net, start, target, S, Y, lr, steps, DSA_SMALL, mode="exact")
    assert rel(exact.grad_images, plain.grad_images) < 1e-5
    assert float(exact.loss) != pytest.approx(float(full.loss))


# ------------------------------------------------------------------------------- schedule and init

def test_datm_window_follows_the_spec_formula():
    w = StartEpochWindow(min_start=0, max_start=10, initial_max=5, expansion_end=1000)
    for it in (0, 1, 199, 200, 399, 400, 999, 1000, 5000):
        want = min(10, 5 + int((10 - 5) * it / 1000))  # DATM: int() of the fraction, capped at max
        assert w.upper_bound(it) == want
    g = torch.Generator().manual_seed(0)
    draws = [w.sample(250, g) for _ in range(400)]
    assert set(draws) == set(range(0, 6))  # UniformInt[0, 6): both ends reached, 6 never
    mtt = StartEpochWindow(0, 10)
    assert {mtt.upper_bound(it) for it in (0, 10**6)} == {10}
    with pytest.raises(ValueError, match="window"):
        StartEpochWindow(min_start=5, max_start=10, initial_max=5)


def test_soft_label_init_is_the_mean_logit_of_correct_experts():
    images = torch.zeros(3, 3, 2, 2)
    classes = torch.tensor([0, 1, 2])
    logits = [torch.tensor([[2.0, 0, 0], [0, 1.0, 3], [0, 0, 5]]),   # right on 0 and 2
              torch.tensor([[4.0, 1, 0], [0, 2.0, 1], [1, 0, 0]]),   # right on 0 and 1
              torch.tensor([[0.0, 1, 0], [1, 6.0, 0], [0, 0, 1]])]   # right on 1 and 2
    labels = init_soft_labels(images, classes, lambda e: (lambda x: logits[e]), 3)
    want = torch.stack([(logits[0][0] + logits[1][0]) / 2, (logits[1][1] + logits[2][1]) / 2,
                        (logits[0][2] + logits[2][2]) / 2])
    assert torch.equal(labels, want)
    assert torch.equal(labels.argmax(1), classes)
    # nobody right: the mean of all experts, not 0/0
    fallback = init_soft_labels(images[:1], torch.tensor([2]), lambda e: (lambda x: logits[e][:1]), 2)
    assert torch.allclose(fallback, (logits[0][:1] + logits[1][:1]) / 2)


# ------------------------------------------------------------------------------- the outer loop

def toy_subset(n_per_class=12, classes=4, res=16, seed=0) -> SubsetTensors:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    base = torch.randint(40, 215, (classes, 3, 1, 1), generator=g)
    noise = torch.randint(-40, 41, (len(labels), 3, res, res), generator=g)
    images = (base[labels] + noise).clamp(0, 255).to(torch.uint8)
    wnids = ("n01530575", "n01531178", "n01532829", "n01534433", "n01537544")[:classes]
    return SubsetTensors(images, labels, wnids, "toy", "train")


@pytest.fixture(scope="module")
def toy_experts(tmp_path_factory):
    train = toy_subset()
    cfg = ExpertConfig(model="tm_tiny", optimizer="gsam", epochs=4, batch_size=16)
    folder = tmp_path_factory.mktemp("experts")
    train_experts(train, folder, cfg, 2, progress=False)
    return train, ExpertSet(folder)


def tm_config(**kw) -> TMConfig:
    base = dict(model="tm_tiny", iterations=4, syn_steps=3, max_start_epoch=2, expert_epochs=2, lr_img=100.0,
                lr_lr=1e-4, lr_teacher=0.01, image_init="real_correct", label_mode="soft", lr_label=2.0,
                update_threshold=10.0, ema_decay=0.9, checkpoint_every=2, batch_syn=6)
    base.update(kw)
    return TMConfig(**base)


def datm_hooks(cfg: TMConfig) -> Hooks:
    hooks = Hooks(window=cfg.window(), init_images=ImageInit(cfg.image_init), init_labels=LabelInit(cfg.label_mode),
                  ema_decay=cfg.ema_decay)
    if cfg.update_threshold is not None:
        hooks.update_gate = LossThresholdGate(cfg.update_threshold)
    return hooks


def test_resume_gives_the_images_of_an_uninterrupted_run(toy_experts, tmp_path):
    train, experts = toy_experts
    cfg = tm_config()
    full = run(cfg, datm_hooks(cfg), train, 2, experts, seed=3, run_dir=tmp_path / "a", progress=False)

    class Stop(Exception):
        pass

    def stop_at_2(ctx):
        if ctx.iteration == 2:
            raise Stop

    hooks = datm_hooks(cfg)
    hooks.on_iteration_end = stop_at_2
    with pytest.raises(Stop):
        run(cfg, hooks, train, 2, experts, seed=3, run_dir=tmp_path / "b", progress=False)
    assert latest_checkpoint(tmp_path / "b").name.endswith("0000002")
    resumed = run(cfg, datm_hooks(cfg), train, 2, experts, seed=3, run_dir=tmp_path / "b", progress=False)
    assert torch.equal(resumed.images, full.images)
    assert torch.equal(resumed.labels, full.labels)
    assert resumed.syn_lr == full.syn_lr
    assert resumed.meta["loss_curve"] == full.meta["loss_curve"]
    # the run really moved: images (EMA), labels and lr all changed from their start
    assert full.labels.dtype == torch.float32 and full.labels.shape == (8, 4)
    assert full.syn_lr != 0.01
    assert full.meta["images"] == "ema"


def test_gate_skips_updates_above_the_threshold(toy_experts, tmp_path):
    train, experts = toy_experts
    cfg = tm_config(update_threshold=1e-9, ema_decay=None, iterations=2, checkpoint_every=0)
    out = run(cfg, datm_hooks(cfg), train, 1, experts, seed=0, progress=False)
    assert out.meta["skipped_updates"] == 2
    assert out.syn_lr == pytest.approx(0.01)


def test_image_gradient_transform_hook_scales_the_update(toy_experts):
    train, experts = toy_experts
    cfg = tm_config(ema_decay=None, iterations=1, checkpoint_every=0, update_threshold=None, lr_label=0.0,
                    momentum_img=0.0)
    before = run(tm_config(iterations=0, checkpoint_every=0), datm_hooks(cfg), train, 1, experts,
                 progress=False).images
    plain = run(cfg, datm_hooks(cfg), train, 1, experts, progress=False).images
    hooks = datm_hooks(cfg)
    calls = []

    def double(grad, ctx):
        calls.append((ctx.iteration, tuple(grad.shape), ctx.wnids))
        return 2 * grad

    hooks.image_grad_transform = double
    doubled = run(cfg, hooks, train, 1, experts, progress=False).images
    assert calls == [(0, (4, 3, 16, 16), train.wnids)]
    assert torch.allclose(doubled - before, 2 * (plain - before), rtol=1e-4, atol=1e-6)


def test_divergence_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(toy_experts, tmp_path):
    train, experts = toy_experts
    cfg = tm_config(lr_teacher=1e8, label_mode="hard", lr_label=0.0, ema_decay=None, update_threshold=None)
    with pytest.raises(DivergenceError, match=r"diverged at iteration 0.*last good checkpoint \(iteration 0\)"):
        run(cfg, datm_hooks(cfg), train, 1, experts, run_dir=tmp_path, progress=False)
    assert latest_checkpoint(tmp_path).name.endswith("0000000")


def test_experts_too_short_for_the_window_are_a_clear_error(toy_experts):
    train, experts = toy_experts
    cfg = tm_config(max_start_epoch=5)
    with pytest.raises(ValueError, match=r"(?s)epochs up to 6 .*compdd experts --subset toy"):
        run(cfg, datm_hooks(cfg), train, 1, experts, progress=False)
