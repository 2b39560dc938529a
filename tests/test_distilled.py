"""Distilled sets on disk: bit-identical reload, hash checks, foreign formats (.pt, PNG folders) and grids."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from compdd import get_subset
from compdd.distilled import IMAGES_FILE, LABELS_FILE, META_FILE, DistilledSet, DistilledSetError
from compdd.evaluation import interop

SUBSET = "bird-hard"


def make_set(soft: bool = False, lr: float | None = 0.0123456789, ipc: int = 2) -> DistilledSet:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10 * ipc, 3, 8, 8, generator=g)
    y = torch.randn(10 * ipc, 10, generator=g) if soft else torch.arange(10).repeat_interleave(ipc)
    return DistilledSet(x, y, lr, {"method": "test", "subset": SUBSET, "ipc": ipc, "seed": 7})


@pytest.mark.parametrize("soft", [False, True])
def test_save_load_is_bit_identical(tmp_path, soft):
    ds = make_set(soft=soft)
    ds.save(tmp_path / "set")
    back = DistilledSet.load(tmp_path / "set")
    assert torch.equal(back.images, ds.images) and back.images.dtype == torch.float32
    assert torch.equal(back.labels, ds.labels) and back.labels.dtype == ds.labels.dtype
    assert back.lr == ds.lr  # the exact float, not a float32 rounding
    assert back.label_type == ("soft" if soft else "hard")
    assert back.meta["seed"] == 7 and back.meta["n_images"] == 20 and back.meta["resolution"] == 8
    assert back.sha256() == ds.sha256()  # available right after save, and the same after load


def test_no_lr_round_trips_as_none(tmp_path):
    make_set(lr=None).save(tmp_path / "s")
    assert DistilledSet.load(tmp_path / "s").lr is None


def test_changed_tensor_file_fails_the_hash_check(tmp_path):
    folder = make_set().save(tmp_path / "set")
    other = tmp_path / "other"
    DistilledSet(torch.zeros(20, 3, 8, 8), torch.arange(10).repeat(2)).save(other)
    (folder / IMAGES_FILE).write_bytes((other / IMAGES_FILE).read_bytes())
    with pytest.raises(DistilledSetError, match=r"images\.safetensors: sha256 .* does not match meta\.json"):
        DistilledSet.load(folder)
    assert torch.equal(DistilledSet.load(folder, verify=False).images, torch.zeros(20, 3, 8, 8))


def test_missing_hashes_and_files_are_errors(tmp_path):
    folder = make_set().save(tmp_path / "set")
    meta = json.loads((folder / META_FILE).read_text())
    del meta["sha256"]
    (folder / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(DistilledSetError, match="has no sha256"):
        DistilledSet.load(folder)
    (folder / LABELS_FILE).unlink()
    with pytest.raises(DistilledSetError, match="missing labels.safetensors"):
        DistilledSet.load(folder)


def test_saving_over_a_set_replaces_it(tmp_path):
    make_set(ipc=2).save(tmp_path / "s")
    make_set(ipc=1).save(tmp_path / "s")
    assert len(DistilledSet.load(tmp_path / "s")) == 10
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no temporary left behind


def test_bad_shapes_are_refused():
    with pytest.raises(DistilledSetError, match="images must be"):
        DistilledSet(torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))
    with pytest.raises(DistilledSetError, match="does not fit 4 images"):
        DistilledSet(torch.zeros(4, 3, 8, 8), torch.zeros(5, dtype=torch.long))
    with pytest.raises(DistilledSetError, match="int64"):
        DistilledSet(torch.zeros(4, 3, 8, 8), torch.zeros(4, dtype=torch.int32))


# --------------------------------------------------------------------------------------------- foreign formats

def test_import_pt_reads_images_labels_and_lr(tmp_path):
    ds = make_set(soft=True)
    torch.save(ds.images, tmp_path / "images_best.pt")
    torch.save(ds.labels, tmp_path / "labels_best.pt")
    torch.save(torch.tensor(0.02), tmp_path / "lr_best.pt")
    got = interop.import_pt(tmp_path / "images_best.pt", SUBSET, labels=tmp_path / "labels_best.pt",
                            lr=tmp_path / "lr_best.pt", method="datm")
    assert torch.equal(got.images, ds.images) and torch.equal(got.labels, ds.labels)
    assert got.lr == pytest.approx(0.02) and got.meta["method"] == "datm" and got.meta["ipc"] == 2
    hard = interop.import_pt(tmp_path / "images_best.pt", SUBSET, lr="0.5")
    assert hard.labels.tolist() == [c for c in range(10) for _ in range(2)] and hard.lr == 0.5


def test_import_pt_refuses_pickled_objects_and_bad_shapes(tmp_path):
    torch.save({"images": argparse.Namespace(x=1)}, tmp_path / "evil.pt")  # unpickling would build an object
    with pytest.raises(interop.ForeignSetError, match="weights_only=True"):
        interop.import_pt(tmp_path / "evil.pt", SUBSET)
    torch.save(torch.zeros(21, 3, 8, 8), tmp_path / "odd.pt")
    with pytest.raises(interop.ForeignSetError, match="do not split evenly into 10 classes"):
        interop.import_pt(tmp_path / "odd.pt", SUBSET)
    torch.save(torch.zeros(20, 3, 8, 8), tmp_path / "x.pt")
    torch.save(torch.zeros(20, 7), tmp_path / "y.pt")
    with pytest.raises(interop.ForeignSetError, match=r"soft labels must be \(20, 10\)"):
        interop.import_pt(tmp_path / "x.pt", SUBSET, labels=tmp_path / "y.pt")


def test_png_folder_round_trip_keeps_pixels_and_classes(tmp_path):
    g = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.arange(10).repeat_interleave(2)
    from compdd.data import SubsetTensors

    sub = get_subset(SUBSET)
    ds = DistilledSet(SubsetTensors(pixels, labels, sub.wnids, SUBSET, "train").normalized(), labels)
    assert torch.equal(ds.to_uint8(), pixels)
    interop.export_png_folder(ds, tmp_path / "pngs", SUBSET)
    assert sorted(p.name for p in (tmp_path / "pngs").iterdir()) == sorted(sub.wnids)
    back = interop.import_png_folder(tmp_path / "pngs", SUBSET, lr=0.01)
    assert torch.equal(back.to_uint8(), pixels) and torch.equal(back.labels, labels) and back.lr == 0.01
    (tmp_path / "pngs" / "n99999999").mkdir()
    with pytest.raises(interop.ForeignSetError, match="named by a wnid of bird-hard"):
        interop.import_png_folder(tmp_path / "pngs", SUBSET)


def test_grid_has_a_row_per_class(tmp_path):
    ds = make_set(ipc=3)
    img = interop.grid_image(ds, padding=2)
    assert tuple(img.shape) == (3, 10 * (8 + 2) + 2, 3 * (8 + 2) + 2)
    assert tuple(interop.grid_image(ds, max_per_class=1, padding=0).shape) == (3, 80, 8)
    out = interop.save_grid(ds, tmp_path / "grid.png")
    from torchvision.io import read_image

    assert torch.equal(read_image(str(out)), img)
    with pytest.raises(ValueError, match="must end in .png"):
        interop.save_grid(ds, tmp_path / "grid.jpg")
