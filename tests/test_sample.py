import hashlib
import json

import pytest
import torch
from torch import nn

from compdd import benchmark
from compdd.data import load_tensors_from_imagenet
from compdd.sample import STYLES, make_sample_imagenet


def _tree_digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.JPEG")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_layout_and_counts(sample_root):
    for split, n in (("train", 24), ("val", 8)):
        dirs = sorted(d.name for d in (sample_root / split).iterdir())
        want = sorted(benchmark.get_subset("bird-easy").wnids + benchmark.get_subset("bird-hard").wnids)
        assert dirs == want
        for d in dirs:
            assert len(list((sample_root / split / d).glob("*.JPEG"))) == n
    info = json.loads((sample_root / "sample-info.json").read_text())
    assert info["classes"]["n01537544"]["style"] == "hard"  # indigo bunting, bird-hard
    assert info["classes"]["n02007558"]["style"] == "easy"  # flamingo, bird-easy


def test_deterministic_in_seed(tmp_path):
    kw = dict(train_per_class=2, val_per_class=1, size=32, progress=False)
    a = make_sample_imagenet(tmp_path / "a", ["bird-easy"], seed=3, **kw)
    b = make_sample_imagenet(tmp_path / "b", ["bird-easy"], seed=3, **kw)
    c = make_sample_imagenet(tmp_path / "c", ["bird-easy"], seed=4, **kw)
    da, db, dc = (_tree_digest(tmp_path / x.root.split("/")[-1]) for x in (a, b, c))
    assert da == db != dc


def test_refuses_to_clobber_and_rejects_unknown_subset(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        make_sample_imagenet(tmp_path / "x", ["bird-easy"], train_per_class=1, val_per_class=1, progress=False)
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"
    with pytest.raises(KeyError, match="unknown subset 'bird-medium'"):
        make_sample_imagenet(tmp_path / "y", ["bird-medium"], progress=False)
    assert not (tmp_path / "y").exists()


def test_hard_classes_draw_smaller_objects_on_busier_backgrounds():
    assert STYLES["hard"].scale[1] < STYLES["easy"].scale[0]
    assert STYLES["hard"].distractors[0] > STYLES["easy"].distractors[1]


def _small_cnn(num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(32, num_classes),
    )


def _train_eval(root, subset: str, epochs: int = 20) -> float:
    torch.manual_seed(0)
    tr = load_tensors_from_imagenet(subset, root, "train", 32, progress=False)
    va = load_tensors_from_imagenet(subset, root, "val", 32, progress=False)
    x, y = tr.normalized(), tr.labels
    net = _small_cnn(tr.num_classes)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(32):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    with torch.no_grad():
        return (net(va.normalized()).argmax(1) == va.labels).float().mean().item()


def test_small_cnn_learns_the_sample_far_above_chance(sample_root):
    easy = _train_eval(sample_root, "bird-easy")
    hard = _train_eval(sample_root, "bird-hard")
    print(f"accuracy easy {easy:.3f} hard {hard:.3f}")
    assert easy >= 0.7, easy  # chance is 0.1
    assert hard >= 0.3, hard
    assert easy > hard
