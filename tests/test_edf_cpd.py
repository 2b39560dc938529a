"""EDF Common Pattern Dropout: values against hand computation, gradients, selection, criteria."""

from __future__ import annotations

import pytest
import torch

from edf.cpd import CRITERIA, CommonPatternDropout, cpd_loss, dropped_indices, num_dropped

R = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7, 0.2])
D = torch.tensor([1.0, 2.0, 1.0, 2.0, 1.0, 2.0])


def test_loss_matches_hand_computation():
    # alpha 0.5: k = 3, drop r = 0.1, 0.2, 0.3 (rows 1, 5, 3); kept rows 0, 2, 4
    assert cpd_loss(R, D, 0.5).item() == pytest.approx((0.5 + 0.9 + 0.7) / (1 + 1 + 1))
    # alpha 0.34: k = floor(2.04) = 2, drop rows 1, 5; the denominator is over the kept rows only (not sum(D) = 9)
    assert cpd_loss(R, D, 0.34).item() == pytest.approx((0.5 + 0.9 + 0.3 + 0.7) / (1 + 1 + 2 + 1))
    # alpha 0: DATM's loss, the very same expression
    assert torch.equal(cpd_loss(R, D, 0.0), R.sum() / D.sum())


def test_gradient_flows_only_through_kept_elements():
    torch.manual_seed(0)
    target = torch.randn(50)
    start = torch.randn(50)
    theta = torch.randn(50, requires_grad=True)
    r = (theta - target) ** 2
    d = (start - target) ** 2
    loss = cpd_loss(r, d, 0.3)
    (g,) = torch.autograd.grad(loss, theta)
    k = num_dropped(0.3, 50)
    assert k == 15
    dropped = torch.argsort(r.detach())[:k]  # independent computation: a full sort
    kept = torch.ones(50, dtype=torch.bool)
    kept[dropped] = False
    expected = torch.where(kept, 2 * (theta.detach() - target) / d[kept].sum(), 0.0)
    assert torch.all(g[dropped] == 0)
    assert torch.allclose(g, expected, rtol=1e-6, atol=0)


def test_partial_selection_equals_full_sort_on_a_large_vector():
    torch.manual_seed(1)
    r = torch.rand(100_003) ** 3
    d = torch.rand(100_003) + 0.5
    for alpha in (0.125, 0.25, 0.375, 0.5):
        order = torch.argsort(r)  # the public code's way
        kept = order[int(alpha * r.numel()):]
        want = r[kept].sum() / d[kept].sum()
        assert cpd_loss(r, d, alpha).item() == pytest.approx(want.item(), rel=1e-5)


@pytest.mark.parametrize("criterion", CRITERIA)
def test_every_criterion_drops_exactly_k_distinct_elements(criterion):
    r = torch.rand(1000)
    idx = dropped_indices(r, 250, criterion, torch.Generator().manual_seed(0))
    assert idx.numel() == 250 and idx.unique().numel() == 250
    assert int(idx.min()) >= 0 and int(idx.max()) < 1000


def test_static_criteria_positions():
    r = torch.rand(1000)
    assert dropped_indices(r, 250, "first").tolist() == list(range(250))
    assert dropped_indices(r, 250, "last").tolist() == list(range(750, 1000))
    assert dropped_indices(r, 250, "middle").tolist() == list(range(375, 625))
    uniform = dropped_indices(r, 250, "uniform")
    assert uniform.tolist() == list(range(0, 1000, 4))  # every 4th: each layer loses a quarter
    # loss-based is the k smallest
    assert set(dropped_indices(r, 250, "loss").tolist()) == set(torch.argsort(r)[:250].tolist())


def test_random_criterion_is_seeded_and_redrawn_each_call():
    r = torch.rand(500)
    d = torch.rand(500) + 0.1
    a, b = CommonPatternDropout(0.25, "random", seed=3), CommonPatternDropout(0.25, "random", seed=3)
    first = a(r, d)
    assert torch.equal(first, b(r, d))
    assert not torch.equal(first, a(r, d))  # a new draw every iteration (dynamic dropout)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="alpha"):
        cpd_loss(R, D, 1.0)
    with pytest.raises(ValueError, match="criterion"):
        CommonPatternDropout(0.25, "by-magic")
    with pytest.raises(ValueError, match="flat vectors"):
        cpd_loss(R.view(2, 3), D.view(2, 3), 0.25)


def test_random_criterion_state_survives_a_checkpoint():
    r = torch.rand(500)
    d = torch.rand(500) + 0.1
    a = CommonPatternDropout(0.25, "random", seed=5)
    a(r, d)
    resumed = CommonPatternDropout(0.25, "random", seed=5)
    resumed.load_state_dict({k: v.clone() for k, v in a.state_dict().items()})
    assert torch.equal(a(r, d), resumed(r, d))
