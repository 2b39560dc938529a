"""Subsets as tensors: the resize rule, decoding order and skips, the cache (keys, atomic writes), split names."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compdd import data
from compdd.benchmark import get_subset
from compdd.data import SubsetTensors, load_tensors, load_tensors_from_imagenet, resize_uint8
from compdd.hub.export import export_dataset
from compdd.imagenet import MEAN, STD


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")  # lossless, so pixels can be compared exactly
    return buf.getvalue()


def test_shorter_side_resize_then_centre_crop_keeps_aspect() -> None:
    img = torch.zeros(3, 40, 80, dtype=torch.uint8)
    img[:, :, 14:66] = 200  # a centred block a little wider than the square the crop keeps
    out = resize_uint8(img, 20)
    assert out.shape == (3, 20, 20) and out.dtype == torch.uint8
    assert int(out.min()) == 200  # the crop keeps the middle half: all inside the square
    squashed = resize_uint8(img, 20, "squash")
    assert int(squashed[:, :, 0].max()) == 0 and int(squashed[:, :, 10].min()) == 200  # squash keeps the black sides
    with pytest.raises(ValueError, match="resize rule"):
        resize_uint8(img, 20, "stretch")


def test_decode_all_keeps_order_and_skips_bad_files() -> None:
    rng = np.random.default_rng(0)
    arrs = [rng.integers(0, 255, (24, 24 + i, 3), dtype=np.uint8) for i in range(12)]
    items = [(i % 10, _png(a), f"img{i}") for i, a in enumerate(arrs)]
    items[7] = (7, b"not an image", "img7")
    images, labels, skipped = data._decode_all(iter(items), len(items), 16, "shorter-crop", "", False)
    assert skipped == ["img7"] and images.shape == (11, 3, 16, 16)
    assert labels.tolist() == [i % 10 for i in range(12) if i != 7]
    ref = resize_uint8(torch.from_numpy(arrs[8]).permute(2, 0, 1).contiguous(), 16)
    assert torch.equal(images[7], ref)  # image 8 moved up one slot, decoded exactly


def test_cache_is_keyed_and_reused(sample_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ex"
    export_dataset(sample_root, out, ["bird-easy"], progress=False)
    cache_dir = Path(os.environ["COMPDD_HOME"]) / "tensors"
    first = load_tensors("bird-easy", "validation", 24, source="local", path=out, progress=False)
    assert first.split == "val" and len(first) == 80 and first.resolution == 24
    assert first.meta["source"] == "local" and first.meta["path"] == str(out.resolve())
    assert len(list(cache_dir.iterdir())) == 1  # one file, no temporary left behind

    def no_decoding(*a, **k):
        raise AssertionError("a cached load must not decode")

    monkeypatch.setattr(data, "_decode_all", no_decoding)
    again = load_tensors("bird-easy", "val", 24, source="local", path=out, progress=False)
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
    assert again.wnids == get_subset("bird-easy").wnids and again.meta == first.meta
    with pytest.raises(AssertionError, match="must not decode"):  # another resolution is another entry
        load_tensors("bird-easy", "val", 16, source="local", path=out, progress=False)
    with pytest.raises(AssertionError, match="must not decode"):  # so is another resize rule
        load_tensors("bird-easy", "val", 24, source="local", path=out, resize="squash", progress=False)
    shard = next((out / "bird-easy").glob("validation-*.parquet"))
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="must not decode"):  # a rewritten export is another revision
        load_tensors("bird-easy", "val", 24, source="local", path=out, progress=False)


def test_imagenet_source_is_the_imagenet_loader(sample_root: Path) -> None:
    a = load_tensors("bird-hard", "val", 16, source="imagenet", imagenet_root=sample_root, progress=False)
    b = load_tensors_from_imagenet("bird-hard", sample_root, "val", 16, progress=False)
    assert torch.equal(a.images, b.images) and a.labels.tolist() == [c for c in range(10) for _ in range(8)]
    assert a.split == "val" and a.meta["skipped"] == []
    x = a.normalized()
    manual = (a.images[3].float() / 255 - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    assert x.dtype == torch.float32 and torch.allclose(x[3], manual, atol=1e-6)


def test_bad_arguments_say_what_to_fix(sample_root: Path) -> None:
    with pytest.raises(ValueError, match="unknown source"):
        load_tensors("bird-hard", source="ftp")
    with pytest.raises(ValueError, match="imagenet_root="):
        load_tensors("bird-hard", source="imagenet")
    with pytest.raises(ValueError, match="path="):
        load_tensors("bird-hard", source="local")
    with pytest.raises(ValueError, match="unknown split"):
        load_tensors("bird-hard", "test", source="imagenet", imagenet_root=sample_root)
    with pytest.raises(FileNotFoundError, match="compdd export"):
        load_tensors("bird-hard", source="local", path=sample_root / "missing")
    with pytest.raises(KeyError, match="unknown subset"):
        load_tensors("bird-medium", source="imagenet", imagenet_root=sample_root)
    with pytest.raises(ValueError, match="uint8"):
        SubsetTensors(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.int64), ("a",), "s", "train")
    with pytest.raises(ValueError, match="labels shape"):
        SubsetTensors(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64), ("a",), "s", "train")
