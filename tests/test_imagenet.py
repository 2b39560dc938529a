import pytest
import torch

from compdd import imagenet


def test_thousand_unique_sorted_wnids():
    w = imagenet.wnids()
    assert len(w) == 1000 == len(set(w))
    assert w == sorted(w)


@pytest.mark.parametrize(("index", "wnid", "name"), [
    (0, "n01440764", "tench"), (420, "n02787622", "banjo"), (999, "n15075141", "toilet tissue"),
])
def test_known_classes_both_ways(index, wnid, name):
    assert imagenet.lookup(index).wnid == wnid
    assert imagenet.index_of(wnid) == index
    assert imagenet.name_of(wnid) == name
    assert imagenet.lookup(wnid) in imagenet.find_by_name(name)


def test_lemmas_are_kept_as_extra_names():
    assert "Tinca tinca" in imagenet.lookup(0).names


def test_unknown_keys_raise_with_hint():
    with pytest.raises(KeyError, match="not an ImageNet-1K wnid"):
        imagenet.lookup("n99999999")
    with pytest.raises(KeyError, match="out of range"):
        imagenet.lookup(1000)


def test_decode_handles_grayscale_png_in_disguise_and_garbage(tmp_path):
    from PIL import Image

    gray = tmp_path / "g.JPEG"
    Image.new("L", (9, 7), 100).save(gray, format="JPEG")
    png = tmp_path / "p.JPEG"
    Image.new("RGB", (5, 4), (10, 200, 30)).save(png, format="PNG")
    bad = tmp_path / "bad.JPEG"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")

    g = imagenet.read_image(gray)
    assert g.shape == (3, 7, 9) and g.dtype == torch.uint8
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])
    p = imagenet.read_image(png)
    assert p[:, 0, 0].tolist() == [10, 200, 30]
    with pytest.raises(imagenet.UnreadableImage, match="bad.JPEG"):
        imagenet.read_image(bad)


def test_missing_split_names_expected_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="train/<wnid>"):
        imagenet.split_dir(tmp_path, "train")
