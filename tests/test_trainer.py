"""The trainer: losses against hand computations, label modes that do what they say, determinism, stacked seeds."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compdd.evaluation import trainer as T
from compdd.evaluation.protocols import AugmentSpec, Protocol, get_protocol
from compdd.models import MODELS
from compdd.models.convnet import ConvNet

TINY = "test_convnet_w8"
TINY_BN = "test_convnet_w8_bn"


@pytest.fixture(autouse=True, scope="module")
def _tiny_model_one_thread():
    """Register a tiny ConvNet; one intra-op thread, because tiny layers only lose to thread hand-offs
    (several times slower on a busy 2-core machine)."""
    MODELS.add(TINY, lambda num_classes, res, channels=3: ConvNet(num_classes, res, channels, depth=2, width=8),
               replace=True)
    MODELS.add(TINY_BN, lambda num_classes, res, channels=3: ConvNet(num_classes, res, channels, depth=2, width=8,
                                                                     norm="batch"), replace=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def proto(epochs: int = 4, aug: str = "none", model: str = TINY, **kw) -> Protocol:
    return Protocol(name="test", version=1, models={16: model}, epochs=epochs, batch_size=16,
                    augmentation=AugmentSpec(name=aug), seeds=(0, 1), **kw)


PALETTE = torch.tensor([[1, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1], [1, -1, 1],
                        [-1, 1, 1], [1, 1, 1], [-1, -1, -1], [0, 1, -1], [1, 0, 0]], dtype=torch.float32)


def colour_task(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A learnable task: class c is a flat image of colour PALETTE[c] plus noise (normalised space, 16 px)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(10).repeat_interleave(n_per_class)
    x = PALETTE[y].view(-1, 3, 1, 1) + 0.3 * torch.randn(len(y), 3, 16, 16, generator=g)
    return x, y


class ColourOracle(nn.Module):
    """A frozen 'teacher' that classifies by mean colour (nearest palette entry)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -torch.cdist(x.mean((2, 3)), PALETTE) * 10


# --------------------------------------------------------------------------------------------- losses

def test_soft_cross_entropy_matches_a_hand_computation():
    z = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], requires_grad=True)
    t = torch.tensor([[0.2, 0.1, 3.0], [1.0, 1.0, 1.0]])
    for temp in (1.0, 2.0):
        want = 0.0
        for b in range(2):
            p = [math.exp(v / temp) for v in t[b].tolist()]
            q = [math.exp(v / temp) for v in z[b].tolist()]
            want -= sum(pk / sum(p) * math.log(qk / sum(q)) for pk, qk in zip(p, q)) / 2
        assert T.soft_cross_entropy(z, t, temp).item() == pytest.approx(want, rel=1e-6)
    # gradient w.r.t. the logits is (softmax(z) - softmax(t)) / B at T = 1
    T.soft_cross_entropy(z, t).backward()
    torch.testing.assert_close(z.grad, (F.softmax(z, 1) - F.softmax(t, 1)).detach() / 2)


def test_soft_cross_entropy_with_one_hot_like_targets_is_hard_cross_entropy():
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 3, 1, 1, 2])
    assert T.soft_cross_entropy(z, F.one_hot(y, 4).float() * 1e4).item() == pytest.approx(F.cross_entropy(z, y).item())


def test_kd_loss_is_the_batch_mean_kl_of_softened_outputs():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], requires_grad=True)
    t = torch.tensor([[0.2, 0.1, 3.0], [2.0, 1.0, 0.0]])
    temp = 4.0
    want = 0.0
    for b in range(2):
        p_t = F.softmax(t[b] / temp, 0).tolist()
        p_s = F.softmax(s[b].detach() / temp, 0).tolist()
        want += sum(a * math.log(a / c) for a, c in zip(p_t, p_s)) / 2
    assert T.kd_loss(s, t, temp).item() == pytest.approx(want, rel=1e-5)
    assert T.kd_loss(s, t, temp, scale_t2=True).item() == pytest.approx(want * temp**2, rel=1e-5)
    assert T.kd_loss(t, t, temp).item() == pytest.approx(0.0, abs=1e-7)
    T.kd_loss(s, t, temp).backward()  # d/ds = (p_S - p_T) / (T B), no T^2
    torch.testing.assert_close(s.grad, (F.softmax(s / temp, 1) - F.softmax(t / temp, 1)).detach() / (temp * 2))


def test_label_mode_resolution():
    p = proto()
    assert T.resolve_label_mode(p, torch.zeros(4, dtype=torch.long), None) == "hard"
    assert T.resolve_label_mode(p, torch.zeros(4, 10), None) == "soft"
    with pytest.raises(T.TrainerError, match="pass a teacher"):
        T.resolve_label_mode(proto(label_mode="kd"), torch.zeros(4, dtype=torch.long), None)
    with pytest.raises(T.TrainerError, match="labels are hard"):
        T.resolve_label_mode(proto(label_mode="soft"), torch.zeros(4, dtype=torch.long), None)


# --------------------------------------------------------------------------------------------- label modes learn

def test_hard_soft_and_kd_modes_learn_from_their_own_signal():
    x, y = colour_task(6, seed=1)
    xt, yt = colour_task(4, seed=2)
    p = proto(epochs=12, optimizer={"lr": 0.05})

    def acc(labels, q, teacher=None):
        res = T.train_and_evaluate(x, labels, xt, yt, q, num_classes=10, seeds=[0], teacher=teacher, progress=False)
        return res[0].top1

    assert acc(y, p) >= 90
    assert acc(F.one_hot(y, 10).float() * 5, p) >= 90  # soft logits pointing at the class
    wrong = torch.zeros_like(y)  # every stored label says class 0 ...
    assert acc(wrong, p) == pytest.approx(10.0)
    # ... but under kd the stored labels are ignored and the student learns the teacher
    kd = proto(epochs=12, optimizer={"lr": 0.05}, label_mode="kd", kd={"temperature": 1.0})
    assert acc(wrong, kd, teacher=ColourOracle()) >= 90


# --------------------------------------------------------------------------------------------- determinism, stacking

def _flat(stack: T.ModelStack, i: int) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in stack.unstack(i).parameters()])


def test_seeded_runs_repeat_exactly_and_leave_the_global_rng_alone():
    x, y = colour_task(3, seed=1)
    p = proto(epochs=3, aug="dsa")
    state = torch.random.get_rng_state()
    a = T.train_stack(x, y, p, [0], num_classes=10, progress=False)
    b = T.train_stack(x, y, p, [0], num_classes=10, progress=False)
    c = T.train_stack(x, y, p, [1], num_classes=10, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(_flat(a, 0), _flat(b, 0))
    assert not torch.allclose(_flat(a, 0), _flat(c, 0))


@pytest.mark.parametrize("model", [TINY, TINY_BN])
def test_stacked_seeds_train_like_sequential_ones(model):
    x, y = colour_task(3, seed=1)
    p = proto(epochs=3, aug="dsa", model=model)
    stacked = T.train_stack(x, y, p, [0, 1], num_classes=10, progress=False)
    for i, s in enumerate([0, 1]):
        alone = T.train_stack(x, y, p, [s], num_classes=10, progress=False)
        torch.testing.assert_close(_flat(stacked, i), _flat(alone, 0), atol=1e-4, rtol=1e-4)
        # batch-norm running statistics are tracked per seed too
        want, got = alone.unstack(0).state_dict(), stacked.unstack(i).state_dict()
        for k in want:
            torch.testing.assert_close(got[k], want[k], atol=1e-4, rtol=1e-4)
    xt, yt = colour_task(2, seed=3)
    both = T.train_and_evaluate(x, y, xt, yt, p, num_classes=10, batched=True, progress=False)
    one_by_one = T.train_and_evaluate(x, y, xt, yt, p, num_classes=10, batched=False, progress=False)
    assert [r.seed for r in both] == [0, 1]
    assert [r.top1 for r in both] == pytest.approx([r.top1 for r in one_by_one], abs=5.01)  # at most one image flips


def test_uint8_pixels_train_exactly_like_their_normalised_floats():
    from compdd.data import SubsetTensors

    g = torch.Generator().manual_seed(0)
    pix = torch.randint(0, 256, (20, 3, 16, 16), dtype=torch.uint8, generator=g)
    y = torch.arange(10).repeat(2)
    floats = SubsetTensors(pix, y, tuple(f"n{i:08d}" for i in range(10)), "s", "train").normalized()
    p = proto(epochs=2, aug="dsa")
    a = T.train_stack(pix, y, p, [0], num_classes=10, progress=False)
    b = T.train_stack(floats, y, p, [0], num_classes=10, progress=False)
    assert torch.equal(_flat(a, 0), _flat(b, 0))


def test_evaluation_scores_the_whole_test_set_top1_and_top5():
    class Fixed(nn.Module):
        def forward(self, x):  # the logits are written into the first image row
            return x[:, 0, 0, :10]

    x = torch.zeros(7, 3, 16, 16)
    for i in range(7):
        x[i, 0, 0, :10] = torch.arange(10.0).roll(i)  # ranking: class (9 + i - k) % 10 is k-th
    y = torch.tensor([9, 5, 8, 2, 0, 4, 5])
    stack = T.ModelStack([Fixed()], torch.device("cpu"))
    (top1, top5), = T.evaluate_stack(stack, x, y, batch_size=3)  # 3 batches, the last one short
    assert top1 == pytest.approx(100 * 4 / 7) and top5 == pytest.approx(100 * 6 / 7)


def test_inputs_that_do_not_fit_are_refused():
    x, y = colour_task(1, seed=0)
    p = proto()
    with pytest.raises(T.TrainerError, match="soft labels have 3 classes"):
        T.train_stack(x, torch.zeros(10, 3), p, [0], num_classes=10, progress=False)
    with pytest.raises(T.TrainerError, match="test images are 32 px"):
        T.train_and_evaluate(x, y, torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long), p, num_classes=10)
    with pytest.raises(ValueError, match="no model for 32 px"):
        T.train_stack(torch.zeros(10, 3, 32, 32), y, p, [0], num_classes=10, progress=False)


def test_dd_v1_runs_its_own_model_with_dsa():
    x = torch.randn(10, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.arange(10)
    p, _ = get_protocol("dd-v1").with_overrides(epochs=1, seeds=[3])
    (r,) = T.train_and_evaluate(x, y, x, y, p, num_classes=10, progress=False)
    assert r.seed == 3 and 0 <= r.top1 <= 100 and r.top5 is not None and r.train_time_s > 0
