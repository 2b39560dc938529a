"""DSA: each op does what it says, gradients reach the input, and randomness is explicit and siamese."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from compdd.augment import (
    DSA,
    GROUPS,
    STANDARD_STRATEGY,
    DSAParams,
    brightness,
    cutout,
    hflip,
    parse_strategy,
    rotate,
    scale,
    translate,
)


def image(b: int = 4, side: int = 32, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(b, 3, side, side, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def only(params: DSAParams, name: str) -> dict[str, torch.Tensor]:
    (op,) = [op for op in params.ops if op.name == name]
    return op.args


# --- each op on a known image ---------------------------------------------------------------------------


def test_flip_mirrors_exactly_the_masked_samples() -> None:
    x = image(2)
    out = hflip(x, torch.tensor([True, False]))
    assert torch.equal(out[0], x[0, :, :, torch.arange(31, -1, -1)])
    assert torch.equal(out[1], x[1])


def test_translate_moves_by_whole_pixels_and_fills_zero() -> None:
    x = image(2, side=8)
    out = translate(x, dy=torch.tensor([2, -3]), dx=torch.tensor([-1, 0]))
    expected = torch.zeros_like(x)
    expected[0, :, 2:, :7] = x[0, :, :6, 1:]  # content down 2, left 1
    expected[1, :, :5, :] = x[1, :, 3:, :]  # content up 3
    assert torch.equal(out, expected)


def test_crop_shift_range_follows_the_ratio() -> None:
    for ratio, side, s in [(0.125, 32, 4), (0.25, 32, 8), (0.125, 128, 16), (0.25, 128, 32)]:
        p = DSA("crop", crop_ratio=ratio).sample((4000, 3, side, side), 0)
        args = only(p, "translate")
        for v in (args["dy"], args["dx"]):
            assert v.min() == -s and v.max() == s and v.dtype == torch.int64


def test_cutout_zeroes_a_square_of_half_the_side() -> None:
    x = image(3) + 10  # no value is zero before cutout
    p = DSA("cutout").sample(x.shape, 0)
    (op,) = p.ops
    assert op.size == (16, 16)  # int(0.5 * 32 + 0.5)
    out = cutout(x, torch.tensor([16, 0, 32]), torch.tensor([10, 0, 20]), op.size)
    zeros = out == 0
    assert zeros[0].all(0)[8:24, 2:18].all() and zeros[0].sum() == 3 * 16 * 16
    assert zeros[1].all(0)[:8, :8].all() and zeros[1].sum() == 3 * 8 * 8  # clipped at the corner
    assert zeros[2].all(0)[24:, 12:28].all() and zeros[2].sum() == 3 * 8 * 16  # rows 24..39 clipped to 24..31
    assert torch.equal(out[~zeros], x[~zeros])
    # Centres range over all H + 1 = 33 values for an even side, as in the public code.
    centres = DSA("cutout").sample((4000, 3, 32, 32), 0).ops[0].args
    assert set(centres["cy"].tolist()) == set(range(33)) == set(centres["cx"].tolist())


def test_brightness_adds_the_sampled_shift() -> None:
    x = image(4)
    p = DSA("color").sample(x.shape, 3)
    shift = only(p, "brightness")["shift"]
    assert shift.shape == (4,) and (shift.abs() <= 0.5).all()
    torch.testing.assert_close(brightness(x, shift) - x, shift.view(4, 1, 1, 1).expand_as(x))


def test_color_matches_the_published_formulas() -> None:
    x = image(4)
    p = DSA("color").sample(x.shape, 5)
    assert p.names == ["brightness", "saturation", "contrast"]
    sh, sf, cf = only(p, "brightness")["shift"], only(p, "saturation")["factor"], only(p, "contrast")["factor"]
    assert ((sf >= 0) & (sf <= 2)).all() and ((cf >= 0.5) & (cf <= 1.5)).all()
    y = x + sh.view(-1, 1, 1, 1)
    m = y.mean(1, keepdim=True)
    y = (y - m) * sf.view(-1, 1, 1, 1) + m
    m = y.mean((1, 2, 3), keepdim=True)
    y = (y - m) * cf.view(-1, 1, 1, 1) + m
    torch.testing.assert_close(DSA("color").apply(x, p), y)


def test_rotate_by_90_degrees_is_an_exact_quarter_turn() -> None:
    x = image(2, side=16)
    quarter = rotate(x, torch.full((2,), math.pi / 2))
    torch.testing.assert_close(quarter, torch.rot90(x, 1, dims=(2, 3)), rtol=0, atol=1e-5)  # anticlockwise
    # A four-fold symmetric image is unchanged by the turn.
    sym = x + x.rot90(1, (2, 3)) + x.rot90(2, (2, 3)) + x.rot90(3, (2, 3))
    torch.testing.assert_close(rotate(sym, torch.full((2,), math.pi / 2)), sym, rtol=0, atol=1e-5)
    torch.testing.assert_close(rotate(x, torch.zeros(2)), x, rtol=0, atol=1e-5)


def test_rotate_angles_stay_within_15_degrees() -> None:
    angle = only(DSA("rotate").sample((5000, 3, 8, 8), 0), "rotate")["angle"]
    assert angle.abs().max() <= math.radians(15) and angle.abs().max() > math.radians(14.9)
    assert angle.min() < 0 < angle.max()


def test_scale_resamples_a_ramp_exactly() -> None:
    side = 9
    ramp = torch.arange(side, dtype=torch.float64).expand(1, 1, side, side).contiguous()  # value = column
    out = scale(ramp, sx=torch.tensor([0.5], dtype=torch.float64), sy=torch.tensor([1.0], dtype=torch.float64))
    # Output column j reads normalised x = 0.5·(-1 + 2j/8), i.e. pixel column 2 + j/2, which bilinear gives exactly.
    expected = (2 + torch.arange(side, dtype=torch.float64) / 2).expand(1, 1, side, side)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(scale(ramp, torch.ones(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)),
                               ramp)
    factors = only(DSA("scale").sample((5000, 3, 8, 8), 0), "scale")
    for f in factors.values():
        assert f.min() >= 1 / 1.2 and f.max() <= 1.2 and f.min() < 0.84 and f.max() > 1.19


# --- the DSA object -------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", GROUPS)
def test_gradient_reaches_the_input_through_every_group(group: str) -> None:
    x = image(2, side=6, dtype=torch.float64).requires_grad_()
    dsa = DSA(group)
    p = dsa.sample(x.shape, 1)
    # Every op is linear in x for fixed parameters, so finite differences check the backward exactly.
    assert torch.autograd.gradcheck(lambda t: dsa.apply(t, p), (x,))
    (g,) = torch.autograd.grad(dsa.apply(x, p).square().sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_standard_strategy_on_a_batch_of_4_at_32px() -> None:
    x = image(4).requires_grad_()
    dsa = DSA()
    assert dsa.strategy == STANDARD_STRATEGY
    for seed in range(12):
        out = dsa(x, seed)
        assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
        (g,) = torch.autograd.grad(out.sum(), x)
        assert g.abs().sum() > 0


def test_same_seed_same_output_different_seed_different() -> None:
    x = image(4)
    dsa = DSA(mode="all")  # every group at once: two seeds cannot coincide by picking alike
    torch.manual_seed(123)
    a = dsa(x, 7)
    torch.manual_seed(456)  # the global RNG has no say
    assert torch.equal(dsa(x, 7), a)
    assert not torch.allclose(dsa(x, 8), a)


def test_global_rng_is_left_alone() -> None:
    state = torch.get_rng_state()
    DSA()(image(4), torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), state)


def test_generator_advances_and_replays() -> None:
    x = image(4)
    dsa = DSA(mode="all")
    g = torch.Generator().manual_seed(0)
    first, second = dsa(x, g), dsa(x, g)
    assert not torch.allclose(first, second)
    g.manual_seed(0)
    assert torch.equal(dsa(x, g), first) and torch.equal(dsa(x, g), second)


def test_siamese_one_draw_applied_to_real_and_synthetic() -> None:
    real, syn = image(4, seed=1), image(4, seed=2)
    dsa = DSA()
    for seed in range(6):
        p = dsa.sample(real.shape, seed)
        # Same draw on both batches == separate calls with the same seed: the pairing is by seed.
        assert torch.equal(dsa.apply(real, p), dsa(real, seed))
        assert torch.equal(dsa.apply(syn, p), dsa(syn, seed))
    # A shared draw (the public seeded mode) transforms every sample alike, whatever the batch size.
    shared = DSA("crop", per_sample=False)
    p = shared.sample(real.shape, 0)
    one = shared.apply(real[:1], p)
    torch.testing.assert_close(shared.apply(torch.cat([real[:1], real[:1], real[:1]]), p), one.expand(3, -1, -1, -1))
    with pytest.raises(ValueError, match="per sample"):
        dsa.apply(real[:2], DSA("flip").sample(real.shape, 0))


def test_single_mode_picks_one_group_uniformly_and_per_sample_params() -> None:
    dsa = DSA()
    counts = Counter()
    for seed in range(600):
        p = dsa.sample((4, 3, 32, 32), seed)
        counts[p.names[0]] += 1
        assert len(p.ops) == (3 if p.names[0] == "brightness" else 1)
    assert set(counts) == {"brightness", "translate", "cutout", "hflip", "scale", "rotate"}
    assert all(60 <= c <= 140 for c in counts.values()), counts  # ~100 each; binomial sd ~9
    angle = only(DSA("rotate").sample((4, 3, 32, 32), 0), "rotate")["angle"]
    assert len(set(angle.tolist())) == 4


def test_strategy_parsing_and_bad_input() -> None:
    assert parse_strategy("Color_Crop") == ("color", "crop")
    x = image(2)
    assert torch.equal(DSA("none")(x, 0), x) and torch.equal(DSA("")(x, 0), x)
    with pytest.raises(ValueError, match="'blur'"):
        DSA("color_blur")
    with pytest.raises(ValueError, match="mode"):
        DSA(mode="M")
    with pytest.raises(TypeError, match="seed"):
        DSA()(x, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        DSA().apply(image(2, side=16), DSA().sample(x.shape, 0))
