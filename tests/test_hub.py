"""Hub export, card, publish and the three load_subset sources, offline (datasets from folders, a loopback fake Hub)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import fakehub
import pytest
import torch
from click.testing import CliRunner

from compdd import imagenet
from compdd.benchmark import get_subset
from compdd.cli import main
from compdd.hub import card, export, layout
from compdd.hub.export import export_dataset
from compdd.hub.load import load_subset
from compdd.hub.publish import HubAuthError, plan_publish, publish

BIRDS = ("bird-easy", "bird-hard")
TOKEN = "hf_fake_write_token"


@pytest.fixture(autouse=True)
def _hf_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """datasets' Arrow cache and the Hub download cache in a temporary folder, never ~/.cache."""
    import datasets.config
    from huggingface_hub import constants

    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # set by conftest: an accidental download fails at once
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf" / "datasets")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch):
    """A loopback fake Hub; the client is put online (for 127.0.0.1 only) and without Xet, which the fake lacks."""
    from huggingface_hub import constants

    with fakehub.serve({TOKEN}, idle_timeout=60) as h:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        # what HF_ENDPOINT=<fake> would have set at import time (the CLI takes no --endpoint)
        monkeypatch.setattr(constants, "ENDPOINT", h.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", h.url + "/{repo_id}/resolve/{revision}/{filename}")
        yield h


@pytest.fixture(scope="module")
def export_dir(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "comp-dd"
    r = CliRunner().invoke(main, ["export", "--imagenet-root", str(sample_root), "--out", str(out),
                                  "--subsets", ",".join(BIRDS), "--repo-id", "my-lab/comp-dd"])
    assert r.exit_code == 0, r.output
    return out


def _files(out: Path) -> dict[str, int]:
    return {p.relative_to(out).as_posix(): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# Export


def test_every_config_reloads_offline_with_source_bytes(export_dir: Path, sample_root: Path, tmp_path: Path) -> None:
    import datasets

    assert datasets.get_dataset_config_names(str(export_dir)) == list(BIRDS)
    for cfg in BIRDS:
        sub = get_subset(cfg)
        dd = datasets.load_dataset(str(export_dir), cfg, cache_dir=str(tmp_path / "ds"))
        assert set(dd) == {"train", "validation"}
        for split, folder in layout.SPLITS.items():
            ds = dd[split]
            assert ds.features["label"].names == list(sub.wnids)
            expected = [p for w in sub.wnids for p in imagenet.list_images(sample_root, folder, w)]
            assert len(ds) == len(expected) == 10 * (24 if split == "train" else 8)
            raw = ds.cast_column("image", datasets.Image(decode=False))
            for row, src in zip(raw, expected, strict=True):
                assert row["image"]["path"] == src.relative_to(sample_root).as_posix()
                assert row["image"]["bytes"] == src.read_bytes()  # original bytes, no re-encode
                wnid = src.parent.name
                assert (row["wnid"], row["label"]) == (wnid, sub.wnids.index(wnid))
                assert row["imagenet_index"] == imagenet.index_of(wnid)
                assert row["class_name"] == imagenet.name_of(wnid)
        img = dd["train"][0]["image"]  # decodes through the Image feature
        assert img.mode == "RGB" and img.size == (32, 32)


def test_card_has_configs_info_licence_gating_and_classes(export_dir: Path) -> None:
    from huggingface_hub import DatasetCard

    c = DatasetCard.load(export_dir / "README.md")
    meta = c.data.to_dict()
    assert meta["license"] == "other" and meta["license_name"] == "imagenet-terms-of-access"
    assert "ImageNet terms of access" in meta["extra_gated_prompt"] and meta["extra_gated_fields"]
    assert [x["config_name"] for x in meta["configs"]] == list(BIRDS)
    assert meta["configs"][1]["data_files"] == [{"split": "train", "path": "bird-hard/train-*"},
                                                {"split": "validation", "path": "bird-hard/validation-*"}]
    info = {x["config_name"]: {s["name"]: s["num_examples"] for s in x["splits"]} for x in meta["dataset_info"]}
    assert info == {cfg: {"train": 240, "validation": 80} for cfg in BIRDS}
    body = c.text
    for w in get_subset("bird-hard").wnids:
        assert f"`{w}` {imagenet.name_of(w)}" in body
    assert "| `bird-hard` | 240 | 80 | 0 |" in body and "| **total** | 480 | 160 | 0 |" in body
    assert 'load_dataset("my-lab/comp-dd", "bird-hard")' in body
    assert "No errata apply" in body and "replaces this paragraph" not in body
    assert "arXiv:2410.17193" in body


def test_repo_card_blocks_match_the_v1_definition() -> None:
    """DATASET_CARD.md shows the v1 rendering of its class blocks, so the repo file cannot drift from the data."""
    from compdd.benchmark import load_definition

    template = card.load_template(Path(__file__).parents[1] / "DATASET_CARD.md")
    blocks = card.template_blocks(template)
    assert set(blocks) == set(card.BLOCKS)
    recs = card.definition_records(load_definition("comp-dd-v1"))
    for name in ("subsets", "errata", "complexity", "load"):
        assert blocks[name] == card.render_block(name, recs), f"refresh the {name} block of DATASET_CARD.md"
    assert "n02804610" in blocks["errata"] and "bassoon" in blocks["errata"]
    assert card.load_template() == template  # the packaged template is the repo file


def test_scores_fill_the_complexity_block(export_dir: Path, tmp_path: Path) -> None:
    """A `compdd score` classes.csv (one row per class and layer) with its run.json beside it."""
    sub = get_subset("bird-hard")
    run = tmp_path / "scores"
    run.mkdir()
    rows = [f"{w},{layer},{0.5 + i / 100 + (0.2 if layer == 'layer3' else 0)},24\n"
            for i, w in enumerate(sub.wnids) for layer in ("layer3", "layer4")]
    (run / "classes.csv").write_text("wnid,layer,complexity_mean,n\n" + "".join(rows))
    (run / "run.json").write_text(json.dumps({"cam": {"preset": "gradcam-v1", "threshold": 0.5}}))
    with pytest.raises(ValueError, match="choose one with --scores-layer"):
        card.read_scores(run)
    scores = card.read_scores(run, "layer4")
    text = card.render_readme(layout.find_records(export_dir), card.load_template(), scores=scores)
    assert "| `bird-hard` | 0.5450 | 0: 0.5000; 1: 0.5100;" in text  # layer4: mean of 0.50..0.59
    assert "| `bird-easy` | — |" in text  # no scores for those classes: said, not invented
    assert "`classes.csv`, layer `layer4`; preset = gradcam-v1, threshold = 0.5" in text
    (tmp_path / "bad.csv").write_text("class,value\nx,1\n")
    with pytest.raises(ValueError, match="'wnid' column"):
        card.read_scores(tmp_path / "bad.csv")


def test_export_is_resumable_and_redoes_unfinished_configs(sample_root: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ex"
    kw = {"shard_bytes": 40_000, "progress": False}
    real = export._write_split
    calls = []

    def dies_in_second_config(plan, split, *a, **k):
        calls.append(plan.subset.name)
        if plan.subset.name == "bird-hard":
            raise KeyboardInterrupt  # killed halfway through bird-hard
        return real(plan, split, *a, **k)

    monkeypatch.setattr(export, "_write_split", dies_in_second_config)
    with pytest.raises(KeyboardInterrupt):
        export_dataset(sample_root, out, list(BIRDS), **kw)
    assert sorted(p.name for p in out.iterdir()) == ["bird-easy"]  # nothing half-written, no README yet
    (out / ".bird-hard.x1.tmp" / "bird-hard").mkdir(parents=True)  # what a SIGKILL would leave behind
    monkeypatch.setattr(export, "_write_split", real)
    stamp = {p: p.stat().st_mtime_ns for p in (out / "bird-easy").iterdir()}

    rep = export_dataset(sample_root, out, list(BIRDS), **kw)
    assert rep.kept == ["bird-easy"] and rep.written == ["bird-hard"]
    assert {p: p.stat().st_mtime_ns for p in (out / "bird-easy").iterdir()} == stamp  # untouched
    assert not list(out.glob(".*.tmp"))
    shards = sorted(p.name for p in (out / "bird-hard").glob("train-*.parquet"))
    assert len(shards) > 1 and shards[-1].endswith(f"-of-{len(shards):05d}.parquet")

    again = export_dataset(sample_root, out, list(BIRDS), **kw)
    assert again.kept == list(BIRDS) and again.written == []
    with pytest.raises(FileExistsError, match="--overwrite"):  # other settings: not silently replaced
        export_dataset(sample_root, out, ["bird-hard"], shard_bytes=10**9, progress=False)

    # a fresh export with the same settings is byte-identical (deterministic shards)
    fresh = export_dataset(sample_root, tmp_path / "fresh", list(BIRDS), **kw)
    assert fresh.records == again.records


def test_undecodable_file_is_skipped_and_counted_everywhere(sample_root: Path, tmp_path: Path) -> None:
    from compdd.data import load_tensors

    root = tmp_path / "in1k"
    sub = get_subset("bird-hard")
    for folder in layout.SPLITS.values():
        for w in sub.wnids:
            shutil.copytree(sample_root / folder / w, root / folder / w)
    bad = imagenet.list_images(root, "train", sub.wnids[3])[5]
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    rep = export_dataset(root, tmp_path / "ex", ["bird-hard"], progress=False)
    split = rep.records["bird-hard"]["splits"]["train"]
    assert split["skipped"] == [bad.relative_to(root).as_posix()]
    assert split["num_examples"] == 239 and split["per_class"][3] == 23
    a = load_tensors("bird-hard", "train", 32, source="imagenet", imagenet_root=root, progress=False)
    b = load_tensors("bird-hard", "train", 32, source="local", path=tmp_path / "ex", progress=False)
    assert len(a) == 239 and torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_subset_selection_errors_and_classic(make_sample, tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="need --classic"):
        export.select_subsets("comp-dd-v1", ["imagenette"])
    with pytest.raises(KeyError, match="unknown subset"):
        export.select_subsets("comp-dd-v1", ["bird-medium"])
    root = make_sample(("imagenette",), train=3, val=2, size=32)
    r = CliRunner().invoke(main, ["export", "--imagenet-root", str(root), "--out", str(tmp_path / "ex"),
                                  "--classic", "--subsets", "imagenette"])
    assert r.exit_code == 0, r.output
    rec = layout.read_record(tmp_path / "ex" / "imagenette")
    assert rec["definition"]["id"] == "classic-v1" and rec["splits"]["train"]["num_examples"] == 30
    r = CliRunner().invoke(main, ["export", "--imagenet-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "does not exist" in r.output


# ---------------------------------------------------------------------------------------------
# Loading


def test_three_sources_agree_image_for_image(export_dir: Path, sample_root: Path, hub) -> None:
    import datasets

    from compdd.data import load_tensors

    publish(plan_publish(export_dir, "my-lab/comp-dd"), token=TOKEN)
    kw = {"repo_id": "my-lab/comp-dd", "path": export_dir, "imagenet_root": sample_root}
    got = {src: load_subset("bird-hard", src, **kw) for src in ("hub", "local", "imagenet")}
    sub = get_subset("bird-hard")
    for split in ("train", "validation"):
        rows = {}
        for src, dd in got.items():
            assert dd[split].features["label"].names == list(sub.wnids)
            raw = dd[split].cast_column("image", datasets.Image(decode=False))
            rows[src] = [(r["label"], r["wnid"], r["imagenet_index"],
                          r["image"]["bytes"] or Path(r["image"]["path"]).read_bytes()) for r in raw]
        assert rows["hub"] == rows["local"] == rows["imagenet"]
        assert len(rows["hub"]) == (240 if split == "train" else 80)

    tensors = {src: load_tensors("bird-hard", "val", 32, source=src, progress=False, **kw)
               for src in ("hub", "local", "imagenet")}
    for t in tensors.values():
        assert torch.equal(t.images, tensors["imagenet"].images) and torch.equal(t.labels, tensors["imagenet"].labels)
        assert t.wnids == sub.wnids and t.split == "val" and len(t) == 80
    assert tensors["hub"].meta["revision"] == hub.repos["my-lab/comp-dd"].branches["main"]


def test_wnids_are_checked_against_the_definition(export_dir: Path, tmp_path: Path) -> None:
    from compdd.data import load_tensors

    wnids = list(get_subset("bird-hard").wnids)
    d = {"format": "compdd-definition/1", "name": "swapped", "version": "1.0.0",
         "subsets": [{"name": "bird-hard", "wnids": wnids[1:] + wnids[:1]}]}
    path = tmp_path / "swapped.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="pass definition="):
        load_subset("bird-hard", "local", path=export_dir, definition=path)
    with pytest.raises(ValueError, match="pass definition="):
        load_tensors("bird-hard", "train", 32, source="local", path=export_dir, definition=path, progress=False)
    with pytest.raises(FileNotFoundError, match="no train files for config 'dog-hard'"):
        load_subset("dog-hard", "local", path=export_dir)
    with pytest.raises(ValueError, match="repo_id="):
        load_subset("bird-hard", "hub")


# ---------------------------------------------------------------------------------------------
# Publish


def test_publish_dry_run_lists_every_file_and_sends_nothing(export_dir: Path, hub) -> None:
    r = CliRunner().invoke(main, ["publish", "--repo-id", "my-lab/comp-dd", "--from", str(export_dir), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert hub.requests == [] and "dry run: nothing was sent" in r.output
    files = _files(export_dir)
    assert len(files) == 7  # README + 2 x (2 shards + record)
    for rel, size in files.items():
        assert f"{size:,}  " in r.output and rel in r.output
    assert "commit:   Comp-DD export: 2 configs, 480 train + 160 validation images" in r.output


def test_publish_uploads_the_planned_files_as_one_commit(export_dir: Path, hub, tmp_path: Path) -> None:
    plan = plan_publish(export_dir, "my-lab/comp-dd", private=True)
    assert {f.path for f in plan.files} == set(_files(export_dir))
    res = publish(plan, token=TOKEN)
    repo = hub.repos["my-lab/comp-dd"]
    assert repo.private and repo.gated == "auto"
    assert len(repo.commits) == 2  # the repo's initial commit + ours
    head = repo.head("main")
    assert head.oid == res.commit_oid and head.message == plan.commit_message
    for rel in _files(export_dir):
        assert head.files[rel] == (export_dir / rel).read_bytes()

    # republishing a folder that lost a config deletes that config's data files in the same single commit
    smaller = tmp_path / "smaller"
    shutil.copytree(export_dir, smaller)
    shutil.rmtree(smaller / "bird-easy")
    (smaller / "README.md").write_text(card.render_readme(layout.find_records(smaller), card.load_template()))
    res2 = publish(plan_publish(smaller, "my-lab/comp-dd", revision="v2"), token=TOKEN)
    assert sorted(res2.deleted) == [f for f in _files(export_dir) if f.startswith("bird-easy/")]
    assert sorted(repo.head("v2").files) == [".gitattributes", *sorted(_files(smaller))]
    assert repo.head("main").oid == res.commit_oid  # main untouched by the branch commit


def test_publish_without_or_with_a_bad_token_fails_clearly(export_dir: Path, hub, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    args = ["publish", "--repo-id", "my-lab/comp-dd", "--from", str(export_dir)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "no Hugging Face token found" in r.output and "hf auth login" in r.output

    monkeypatch.setenv("HF_TOKEN", "hf_wrong_secret_value")
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "rejected" in r.output and "HTTP 401" in r.output
    assert "hf_wrong_secret_value" not in r.output  # the token is never printed
    assert hub.repos == {}
    with pytest.raises(HubAuthError):
        publish(plan_publish(export_dir, "my-lab/comp-dd"), token="hf_other_wrong")


def test_plan_rejects_bad_input(export_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ORG/NAME"):
        plan_publish(export_dir, "comp-dd")
    with pytest.raises(FileNotFoundError, match="compdd export"):
        plan_publish(tmp_path, "my-lab/comp-dd")
    changed = tmp_path / "changed"
    shutil.copytree(export_dir, changed)
    with open(changed / "bird-hard" / "train-00000-of-00001.parquet", "ab") as f:
        f.write(b"x")
    with pytest.raises(ValueError, match="changed since export"):
        plan_publish(changed, "my-lab/comp-dd")


def test_fake_hub_is_loopback_only_and_stops_by_itself() -> None:
    import socket

    h = fakehub.serve(idle_timeout=0.3).start()
    host, port = h.server.server_address[:2]
    assert host == "127.0.0.1"
    assert h.closed.wait(5), "the fake Hub did not stop after its idle timeout"
    with pytest.raises(ConnectionRefusedError), socket.create_connection((host, port), timeout=2):
        pass
