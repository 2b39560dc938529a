"""RDED: candidate scoring, selection by the teacher's score, the rank rule of the stitched layout, cell geometry."""

from __future__ import annotations

import pytest
import torch
from _toy_data import toy_split
from torch import nn

from compdd import imagenet
from compdd.data import SubsetTensors
from compdd.methods import create_method
from compdd.methods.rded import RDEDConfig, cell_bounds, score_candidates, select, stitch, synthesize
from compdd.teachers import get_teacher

TINY = {"model": "convnet_d2_bn", "model_kwargs": {"width": 8}, "epochs": 3, "batch_size": 8}


class Brightness(nn.Module):
    """A stub teacher: class 0 is more likely the brighter the input, class 1 the darker; records its inputs."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.clone())
        m = x.mean((1, 2, 3))
        return torch.stack([5 * m, -5 * m], 1)


def flat_images(values: list[int], res: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, res, res).contiguous()


def normalised(v: int) -> torch.Tensor:
    return (v / 255 - torch.tensor(imagenet.MEAN)) / torch.tensor(imagenet.STD)


def test_cells_tile_the_side_without_dropping_pixels():
    for size in (15, 16, 30, 32, 33):
        for f in (1, 2, 3, 4):
            b = cell_bounds(size, f)
            lengths = [e - s for s, e in b]
            assert b[0][0] == 0 and b[-1][1] == size and all(b[i][1] == b[i + 1][0] for i in range(f - 1))
            assert max(lengths) - min(lengths) <= 1 and lengths == sorted(lengths, reverse=True)
    assert [e - s for s, e in cell_bounds(32, 3)] == [11, 11, 10]  # public ShufflePatches kept 30 of 32 (R5)


def test_stitch_follows_the_rank_rule_and_covers_every_pixel():
    ipc, f, res = 2, 3, 32
    ranks = torch.arange(ipc * f * f, dtype=torch.float32)
    patches = ranks.view(-1, 1, 1, 1).expand(-1, 3, res // f, res // f).contiguous()
    out = stitch(patches, ipc, f, res)
    assert out.shape == (ipc, 3, res, res)
    bounds = [0, 11, 22, 32]
    for j in range(ipc):
        for k in range(f * f):
            r, c = divmod(k, f)
            cell = out[j, :, bounds[r]:bounds[r + 1], bounds[c]:bounds[c + 1]]
            assert torch.all(cell == k * ipc + j), (j, k)  # image j, cell k holds rank k * ipc + j
    with pytest.raises(ValueError, match="ipc \\* factor\\^2"):
        stitch(patches[:-1], ipc, f, res)


def test_select_keeps_each_images_best_crop_and_the_best_images():
    scores = torch.rand(12, 5, generator=torch.Generator().manual_seed(0))
    best_crop, ranked = select(scores, 4)
    assert torch.equal(best_crop, scores.argmin(1))
    best = scores.min(1).values
    assert ranked.tolist() == best.argsort()[:4].tolist()
    assert torch.all(best[ranked][1:] >= best[ranked][:-1])


def test_scoring_centres_each_patch_on_a_mean_colour_canvas():
    res, f = 16, 2
    x = torch.randn(3, 3, res, res, generator=torch.Generator().manual_seed(0))
    stub = Brightness()
    cand = score_candidates(stub, x, 0, RDEDConfig(factor=f, num_crop=4), torch.Generator().manual_seed(1))
    assert cand.patches.shape == (3, 4, 3, 8, 8) and cand.scores.shape == (3, 4)
    canvas = torch.cat(stub.seen)
    assert canvas.shape == (12, 3, res, res)
    inner = torch.zeros(res, res, dtype=torch.bool)
    inner[4:12, 4:12] = True
    assert torch.all(canvas[:, :, ~inner] == 0)
    assert torch.equal(canvas[:, :, 4:12, 4:12], cand.patches.flatten(0, 1))
    want = torch.nn.functional.cross_entropy(stub(canvas), torch.zeros(12, dtype=torch.long), reduction="none")
    assert torch.allclose(cand.scores.flatten(), want)
    assert torch.all(cand.boxes[..., 2] == cand.boxes[..., 3])  # square crops (ratio 1)


def test_selection_picks_what_the_teacher_scores_best_and_lays_it_out_by_rank():
    # class 0: flat images of 12 distinct grey levels; class 1: another 12; the stub prefers bright for 0, dark for 1
    levels0 = [30, 200, 90, 150, 10, 250, 120, 60, 180, 220, 40, 100]
    levels1 = [35, 205, 95, 155, 15, 245, 125, 65, 185, 225, 45, 105]
    res, ipc, f = 15, 2, 2  # 15 % 2 != 0: cells of 8 and 7 pixels
    train = SubsetTensors(flat_images(levels0 + levels1, res), torch.arange(2).repeat_interleave(12),
                          ("n00000000", "n00000001"), "toy", "train")
    images, labels, prov = synthesize(Brightness(), train, ipc, RDEDConfig(factor=f, num_crop=3, mipc=12), seed=0)
    assert images.shape == (4, 3, res, res) and labels.tolist() == [0, 0, 1, 1]
    chosen = {0: sorted(levels0, reverse=True)[:8], 1: sorted(levels1)[:8]}  # best first
    bounds = [(0, 8), (8, 15)]
    for c in (0, 1):
        for j in range(ipc):
            for k in range(f * f):
                (r0, r1), (c0, c1) = bounds[k // f], bounds[k % f]
                cell = images[c * ipc + j, :, r0:r1, c0:c1]
                want = normalised(chosen[c][k * ipc + j]).view(3, 1, 1)
                assert torch.allclose(cell, want.expand_as(cell), atol=1e-5), (c, j, k)
    # provenance names the source image, rank, image and cell of every patch
    assert len(prov) == 16
    for p in prov:
        level = (levels0 + levels1)[p["train_index"]]
        assert level == chosen[p["class"]][p["rank"]]
        assert p["image"] == p["class"] * ipc + p["rank"] % ipc and p["cell"] == p["rank"] // ipc


def test_too_few_source_images_is_a_clear_error():
    train = toy_split(per_class=8)
    with pytest.raises(ValueError, match="fewer than ipc \\* factor\\^2 = 3 \\* 2\\^2 = 12"):
        synthesize(Brightness(), train, 3, RDEDConfig(factor=2, mipc=300))
    with pytest.raises(ValueError, match="mipc=5"):
        synthesize(Brightness(), train, 2, RDEDConfig(factor=2, mipc=5))


def test_rded_method_end_to_end_with_a_trained_teacher():
    train = toy_split(per_class=10)
    m = create_method("rded", factor=2, num_crop=3, mipc=10, teacher=TINY)
    ds = m.distill(train, 2, seed=0, progress=False)
    teacher = get_teacher(train, TINY, progress=False)
    assert ds.images.shape == (6, 3, 16, 16) and ds.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert ds.meta["teacher"]["id"] == teacher.id
    prov = ds.meta["provenance"]
    assert len(prov) == 3 * 2 * 4
    assert all(int(train.labels[p["train_index"]]) == p["class"] for p in prov)
    per_class = [[p["score"] for p in prov if p["class"] == c] for c in range(3)]
    assert all(s == sorted(s) for s in per_class)
    assert torch.equal(m.distill(train, 2, seed=0, progress=False).images, ds.images)
    assert not torch.equal(m.distill(train, 2, seed=1, progress=False).images, ds.images)
    static = create_method("rded", factor=2, num_crop=3, mipc=10, teacher=TINY, relabel="static")
    st = static.distill(train, 2, seed=0, progress=False)
    assert torch.equal(st.images, ds.images) and torch.equal(st.labels, teacher.logits(ds.images))


def test_rded_presets_follow_the_public_scripts():
    assert create_method("rded", subset="bird-hard", ipc=10, res=32).config.factor == 1
    assert create_method("rded", subset="bird-hard", ipc=10, res=128).config.factor == 2
    cfg = create_method("rded").config
    assert (cfg.num_crop, cfg.mipc, cfg.crop_scale) == (5, 300, (0.08, 1.0))
