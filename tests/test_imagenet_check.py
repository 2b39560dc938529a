"""Checking an ImageNet tree and sorting a flat val/ folder (compdd.imagenet, compdd check-imagenet / prepare-imagenet-val)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from compdd import imagenet
from compdd.cli import main

W = imagenet.wnids()


def _jpeg(mode: str = "RGB", size: int = 24, seed: int = 0, fmt: str = "JPEG") -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    im = Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def odd_files_tree(root: Path) -> dict[str, str]:
    """A 2-class train split with one good, one grayscale, one CMYK, one PNG-named-JPEG and one corrupt file."""
    d0, d1 = root / "train" / W[0], root / "train" / W[1]
    d0.mkdir(parents=True)
    d1.mkdir(parents=True)
    files = {
        "ok": d0 / "a.JPEG", "grayscale": d0 / "b.JPEG", "cmyk": d1 / "c.JPEG", "png-named-jpeg": d1 / "d.JPEG",
        "unreadable": d1 / "e.JPEG",
    }
    files["ok"].write_bytes(_jpeg())
    files["grayscale"].write_bytes(_jpeg("L", seed=1))
    files["cmyk"].write_bytes(_jpeg("CMYK", seed=2))
    files["png-named-jpeg"].write_bytes(_jpeg(seed=3, fmt="PNG"))
    files["unreadable"].write_bytes(_jpeg(seed=4)[:60])  # truncated inside the header
    return {k: v.relative_to(root).as_posix() for k, v in files.items()}


def test_sample_tree_is_ok_but_partial(sample_root: Path) -> None:
    rep = imagenet.check_imagenet(sample_root, progress=False)
    assert rep.ok
    assert set(rep.counts) == {"train", "val"}
    assert len(rep.counts["train"]) == 20 and set(rep.counts["train"].values()) == {24}
    assert set(rep.counts["val"].values()) == {8}
    partial = [p for p in rep.problems if "of 1000" in p.message]
    assert len(partial) == 2 and all(p.severity == "warning" for p in partial)
    assert not imagenet.check_imagenet(sample_root, full=True, progress=False).ok  # --full: 20 classes is an error


def test_layout_problems_are_named_with_a_fix(tmp_path: Path) -> None:
    root = tmp_path / "in1k"
    (root / "train" / W[0]).mkdir(parents=True)
    (root / "train" / W[0] / "x.JPEG").write_bytes(_jpeg())
    (root / "train" / W[0] / "notes.txt").write_text("hi")
    (root / "train" / W[1]).mkdir()  # empty class
    (root / "train" / "my_extra_folder").mkdir()
    (root / "val").mkdir()
    for i in range(3):
        (root / "val" / f"ILSVRC2012_val_{i + 1:08d}.JPEG").write_bytes(_jpeg(seed=i))
    rep = imagenet.check_imagenet(root, progress=False)
    text = rep.summary()
    assert not rep.ok
    assert "flat layout" in text and "prepare-imagenet-val" in text
    assert "empty class folder" in text and W[1] in text
    assert "my_extra_folder" in text
    assert "non-image file" in text
    missing = imagenet.check_imagenet(tmp_path / "nope", progress=False)
    assert not missing.ok and "--imagenet-root" in missing.summary()


def test_decode_census_counts_each_odd_kind(tmp_path: Path) -> None:
    files = odd_files_tree(tmp_path)
    for kind, rel in files.items():
        assert imagenet.classify_image_file(tmp_path / rel) == kind, kind
    rep = imagenet.check_imagenet(tmp_path, ("train",), decode=True, progress=False)
    assert rep.decode == {"ok": 1, "grayscale": 1, "cmyk": 1, "png-named-jpeg": 1, "unreadable": 1}
    assert rep.odd_files["unreadable"] == [files["unreadable"]]
    assert rep.ok  # unreadable files are skipped at scoring time, so they only warn
    assert any("unreadable" in p.message for p in rep.problems)


def test_check_cli_exit_codes(sample_root: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["check-imagenet", "--imagenet-root", str(sample_root)])
    assert r.exit_code == 0, r.output
    assert "20 of 1000 classes" in r.output
    r = CliRunner().invoke(main, ["check-imagenet", "--imagenet-root", str(tmp_path / "missing")])
    assert r.exit_code == 1 and "does not exist" in r.output


def _flat_val(root: Path, n: int = 6) -> dict[str, str]:
    """val/ with n flat images; image i belongs to class W[i % 3]."""
    (root / "val").mkdir(parents=True)
    truth = {}
    for i in range(n):
        stem = f"ILSVRC2012_val_{i + 1:08d}"
        (root / "val" / f"{stem}.JPEG").write_bytes(_jpeg(seed=i))
        truth[stem] = W[i % 3]
    return truth


def _assert_sorted(root: Path, truth: dict[str, str]) -> None:
    for stem, w in truth.items():
        assert (root / "val" / w / f"{stem}.JPEG").is_file()
    assert not list((root / "val").glob("*.JPEG"))
    rep = imagenet.check_imagenet(root, ("val",), progress=False)
    assert rep.ok and sum(rep.counts["val"].values()) == len(truth)


def test_prepare_val_from_kaggle_csv_is_resumable(tmp_path: Path) -> None:
    truth = _flat_val(tmp_path)
    csv = tmp_path / "LOC_val_solution.csv"
    csv.write_text("ImageId,PredictionString\n" + "".join(f"{s},{w} 1 2 3 4 {w} 5 6 7 8\n" for s, w in truth.items()))
    # interrupted run: two files were already moved
    first = sorted(truth)[:2]
    for s in first:
        (tmp_path / "val" / truth[s]).mkdir(exist_ok=True)
        shutil.move(tmp_path / "val" / f"{s}.JPEG", tmp_path / "val" / truth[s] / f"{s}.JPEG")
    dry = imagenet.prepare_imagenet_val(tmp_path, csv, dry_run=True)
    assert len(dry.moves) == 4 and dry.already_sorted == 2 and list((tmp_path / "val").glob("*.JPEG"))
    plan = imagenet.prepare_imagenet_val(tmp_path, csv)
    assert len(plan.moves) == 4 and plan.unlabelled == [] and plan.missing == 0
    _assert_sorted(tmp_path, truth)
    again = imagenet.prepare_imagenet_val(tmp_path, csv)
    assert again.moves == {} and again.already_sorted == 6


def test_prepare_val_from_wnid_lines_and_devkit(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    truth = _flat_val(a)
    (tmp_path / "labels.txt").write_text("".join(f"{truth[s]}\n" for s in sorted(truth)))
    imagenet.prepare_imagenet_val(a, tmp_path / "labels.txt")
    _assert_sorted(a, truth)

    truth = _flat_val(b)
    # a devkit-style map whose IDs are NOT the sorted index: ID k+1 <-> W[999 - k]
    (tmp_path / "map_clsloc.txt").write_text("".join(f"{W[999 - k]} {k + 1} name_{k}\n" for k in range(1000)))
    (tmp_path / "gt.txt").write_text("".join(f"{1000 - W.index(truth[s])}\n" for s in sorted(truth)))
    with pytest.raises(ValueError, match="synset-map"):
        imagenet.read_val_labels(tmp_path / "gt.txt")
    r = CliRunner().invoke(main, ["prepare-imagenet-val", "--imagenet-root", str(b), "--labels",
                                  str(tmp_path / "gt.txt"), "--synset-map", str(tmp_path / "map_clsloc.txt")])
    assert r.exit_code == 0, r.output
    assert "moved 6 images into 3 class folders" in r.output
    _assert_sorted(b, truth)


def test_bad_label_files_say_what_is_expected(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(ValueError, match="ImageId"):
        imagenet.read_val_labels(tmp_path / "x.csv")
    (tmp_path / "y.csv").write_text("filename,wnid\nILSVRC2012_val_00000001.JPEG,n99999999\n")
    with pytest.raises(ValueError, match="n99999999"):
        imagenet.read_val_labels(tmp_path / "y.csv")
    (tmp_path / "z.csv").write_text("filename,label\nILSVRC2012_val_00000001.JPEG,7\n")
    assert imagenet.read_val_labels(tmp_path / "z.csv") == {"ILSVRC2012_val_00000001": W[7]}


def test_scoring_a_flat_val_folder_points_at_the_fix(tmp_path: Path) -> None:
    _flat_val(tmp_path)
    r = CliRunner().invoke(main, ["score", "--imagenet-root", str(tmp_path), "--split", "val", "--weights", "random"])
    assert r.exit_code == 2 and "prepare-imagenet-val" in r.output
