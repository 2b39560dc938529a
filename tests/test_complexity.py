"""Grad-CAM complexity: the fast engine against torchcam, the statistic, scorer weights, and the sharded scoring run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
import timm
import torch
from click.testing import CliRunner
from test_imagenet_check import odd_files_tree

from compdd.benchmark import load_definition
from compdd.cli import main
from compdd.complexity import (
    FastGradCAM,
    ScoreConfig,
    ScorerWeightsError,
    TorchcamCAM,
    activated_fraction,
    load_scorer,
    minmax_normalize,
    score,
)
from compdd.complexity.scorer import save_scorer


def _resnet(seed: int = 0, **kw) -> torch.nn.Module:
    """A timm ResNet with non-trivial BatchNorm statistics (so folding them is really tested)."""
    torch.manual_seed(seed)
    m = timm.create_model("resnet18", pretrained=False, num_classes=1000, **kw)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.normal_(0, 0.2)
    return m.eval()


def _torchcam_reference(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    from torchcam.methods import GradCAM

    with GradCAM(model, target_layer="layer4") as ext:
        return ext(class_idx=y.tolist(), scores=model(x))[0]


# ---------------------------------------------------------------------------------------------
# maps


def test_fast_gradcam_equals_torchcam() -> None:
    model = _resnet(channels=(16, 32, 64, 128))
    torch.manual_seed(1)
    x, y = torch.randn(6, 3, 96, 96), torch.randint(0, 1000, (6,))
    ref = _torchcam_reference(model, x, y)
    assert ref.shape == (6, 3, 3) and ref.amax() > 0.99 and ref.std() > 0.1  # real maps, not constants

    exact = FastGradCAM(model)(x, y)
    assert exact.maps["layer4"].shape == ref.shape
    assert (exact.maps["layer4"] - ref).abs().max() <= 1e-5
    assert torch.equal(exact.targets, y)
    assert torch.allclose(exact.logits, model(x).detach(), atol=1e-4)

    # folded BatchNorm + channels-last is the same algebra: equal in float64, float rounding apart in float32
    model64 = _resnet(channels=(16, 32, 64, 128)).double()
    ref64 = _torchcam_reference(model64, x.double(), y)
    opt64 = FastGradCAM(model64, optimize=True)(x.double(), y).maps["layer4"]
    assert (opt64 - ref64).abs().max() <= 1e-9
    opt32 = FastGradCAM(model, optimize=True)(x, y).maps["layer4"]
    assert (opt32 - ref).abs().max() <= 1e-4
    amp = FastGradCAM(model, optimize=True, amp=True)(x, y).maps["layer4"]  # bfloat16 trunk: close, not exact
    assert 0 < (amp - ref).abs().max() <= 0.1

    # predicted-class target explains the argmax
    pred = FastGradCAM(model)(x, None, "predicted")
    assert torch.equal(pred.targets, model(x).argmax(1))
    assert (pred.maps["layer4"] - _torchcam_reference(model, x, pred.targets)).abs().max() <= 1e-5


@pytest.mark.slow
def test_compiled_fast_path_matches_and_pads_small_batches() -> None:
    model = _resnet(channels=(16, 32, 64, 64))
    x, y = torch.randn(5, 3, 64, 64), torch.randint(0, 1000, (5,))
    eng = FastGradCAM(model, optimize=True, compile=True)
    full = eng(x[:4], y[:4]).maps["layer4"]
    part = eng(x[4:], y[4:]).maps["layer4"]  # padded to the compiled batch of 4
    ref = _torchcam_reference(model, x, y)
    assert part.shape == (1, 2, 2)
    assert (torch.cat([full, part]) - ref).abs().max() <= 1e-4


def test_fast_engine_refuses_models_without_a_head_split() -> None:
    with pytest.raises(ValueError, match="torchcam engine"):
        FastGradCAM(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)))


def test_smoothgradcampp_is_torchcam_and_seeded() -> None:
    from torchcam.methods import SmoothGradCAMpp

    model = _resnet(channels=(16, 32, 64, 64))
    x = torch.randn(3, 3, 64, 64)
    eng = TorchcamCAM(model, ["layer3", "layer4"], "smoothgradcampp")
    torch.manual_seed(5)
    a = eng(x, None, "predicted")
    torch.manual_seed(5)
    b = eng(x, None, "predicted")
    assert all(torch.equal(a.maps[k], b.maps[k]) for k in a.maps)
    torch.manual_seed(6)
    c = eng(x, None, "predicted")
    assert not torch.equal(a.maps["layer4"], c.maps["layer4"])  # the noise matters, so the seed must be recorded
    # the same calls torchcam makes when used directly, one extractor per layer (as the EDF scripts did)
    torch.manual_seed(5)
    direct = {}
    for layer in ("layer3", "layer4"):
        with SmoothGradCAMpp(model, target_layer=layer) as ext:
            out = model(x)
            direct[layer] = ext(class_idx=out.argmax(1).tolist(), scores=out)[0]
    assert all(torch.equal(a.maps[k], direct[k]) for k in direct)
    assert a.maps["layer3"].shape[-1] == 2 * a.maps["layer4"].shape[-1]
    with pytest.raises(ValueError, match="not in the model"):
        TorchcamCAM(model, ["layer9"])


def test_activated_fraction_by_hand() -> None:
    m = torch.tensor([[[0.0, 0.5], [0.5, 1.0]], [[0.2, 0.2], [0.2, 0.9]]])
    assert activated_fraction(m, 0.5, ">=").tolist() == [0.75, 0.25]
    assert activated_fraction(m, 0.5, ">").tolist() == [0.25, 0.25]
    up = activated_fraction(m, 0.5, ">=", size=(4, 4))
    # bilinear (align_corners=False) of [[0, .5], [.5, 1]] at 4x4: cells >= .5 are those with u + v >= 1 -> 10 of 16
    assert up[0].item() == pytest.approx(10 / 16)
    with pytest.raises(ValueError, match="comparison"):
        activated_fraction(m, 0.5, "=>")
    raw = torch.tensor([[[1.0, 3.0], [5.0, 9.0]]])
    assert torch.allclose(minmax_normalize(raw), torch.tensor([[[0.0, 0.25], [0.5, 1.0]]]), atol=1e-7)


# ---------------------------------------------------------------------------------------------
# scorer weights


def test_random_weights_warn_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        s = load_scorer("random", arch="resnet18")
    assert "meaningless" in caplog.text
    assert s.source == "random" and s.sha256 == load_scorer("random", arch="resnet18").sha256


def test_torchvision_pth_loads_into_timm_and_pickles_are_refused(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.resnet18().eval()
    torch.save(tv.state_dict(), tmp_path / "resnet18-tv.pth")
    s = load_scorer(str(tmp_path / "resnet18-tv.pth"), arch="resnet18")
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(s.model(x), tv(x), atol=1e-4)
    with pytest.raises(ScorerWeightsError, match="--arch"):
        load_scorer(str(tmp_path / "resnet18-tv.pth"))
    with pytest.raises(ScorerWeightsError, match="does not fit"):
        load_scorer(str(tmp_path / "resnet18-tv.pth"), arch="resnet34")
    torch.save({"model": tv.state_dict(), "evil": Path("x")}, tmp_path / "pickled.pth")
    with pytest.raises(ScorerWeightsError, match="weights-only"):
        load_scorer(str(tmp_path / "pickled.pth"), arch="resnet18")


def test_own_safetensors_checkpoint_round_trips(tmp_path: Path) -> None:
    kw = {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 32], "output_stride": 8}
    torch.manual_seed(0)
    m = timm.create_model("resnet18", pretrained=False, num_classes=1000, **kw).eval()
    path = save_scorer(m, tmp_path / "s.safetensors", arch="resnet18", model_kwargs=kw, input_size=48,
                       trained={"epochs": 1})
    s = load_scorer(str(path))
    assert s.input_size == 48 and s.model_kwargs == kw and s.meta == {"epochs": 1}
    x = torch.randn(2, 3, 48, 48)
    assert torch.equal(s.model(x), m(x))
    assert s.model.forward_features(x).shape[-1] == 6  # output stride 8 is rebuilt from the metadata


def test_timm_name_resolves_through_hf_cache_offline(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    # pre-seeded cache in the Hugging Face layout, as `hf download` leaves it
    torch.manual_seed(0)
    m = timm.create_model("resnet10t", pretrained=False)
    repo = tmp_path / "models--timm--resnet10t.c3_in1k"
    (repo / "snapshots" / ("a" * 40)).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(repo / "snapshots" / ("a" * 40) / "model.safetensors"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    s = load_scorer("resnet10t.c3_in1k", cache_dir=tmp_path)
    assert s.source == "timm" and s.input_size == 176  # the tag's own pretrained input size
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), s.model.state_dict().values(), strict=True))

    with pytest.raises(ScorerWeightsError) as e:
        load_scorer("resnet18.tv_in1k", cache_dir=tmp_path)
    assert "hf download timm/resnet18.tv_in1k" in str(e.value) and "--weights /path" in str(e.value)
    with pytest.raises(ScorerWeightsError, match="pretrained tag"):
        load_scorer("resnet18")
    with pytest.raises(ScorerWeightsError, match="neither a file"):
        load_scorer("resnet18.no_such_tag")
    with pytest.raises(FileNotFoundError):
        load_scorer("/no/such/file.safetensors")


# ---------------------------------------------------------------------------------------------
# the scoring run

V1 = load_definition("comp-dd-v1")
TINY = {"layers": [1, 1, 1, 1], "channels": [8, 16, 16, 16], "output_stride": 8}


@pytest.fixture(scope="module")
def tiny_scorer(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small random scorer checkpoint (32 px input, 4 x 4 maps): cheap, and its maps still differ per image."""
    torch.manual_seed(0)
    m = timm.create_model("resnet18", pretrained=False, num_classes=1000, **TINY).eval()
    path = tmp_path_factory.mktemp("scorer") / "tiny.safetensors"
    return str(save_scorer(m, path, arch="resnet18", model_kwargs=TINY, input_size=32, trained={}))


def _cfg(root: Path, out: Path, weights: str, **kw) -> ScoreConfig:
    wnids = tuple(sorted(p.name for p in (root / "train").iterdir() if p.is_dir()))
    return ScoreConfig(root=str(root), wnids=wnids, out=str(out), weights=weights, **kw)


OUTPUTS = ("run.json", "images.parquet", "classes.csv", "skipped.csv", "summary.json")


def _files(out: Path) -> dict[str, bytes]:
    names = list(OUTPUTS) + sorted(p.relative_to(out).as_posix() for p in (out / "shards").glob("*.parquet"))
    return {n: (out / n).read_bytes() for n in names}


def test_interrupted_run_resumes_to_identical_bytes(sample_root: Path, tmp_path: Path, tiny_scorer: str) -> None:
    # edf-code: Smooth Grad-CAM++ noise depends on the seed, so this also checks per-shard seeding
    kw = {"preset": "edf-code", "limit_per_class": 3, "shard_size": 16, "batch_size": 8}
    a = score(_cfg(sample_root, tmp_path / "a", tiny_scorer, **kw), progress=False)
    assert a.complete and a.images == 60 and a.shards_total == 4 and a.scored == 60

    b_cfg = _cfg(sample_root, tmp_path / "b", tiny_scorer, **kw)
    part = score(b_cfg, max_shards=2, progress=False)
    assert not part.complete and part.shards_done == 2 and not (tmp_path / "b" / "images.parquet").exists()
    # a process killed while writing shard 2 leaves only a hidden temporary folder behind
    stray = tmp_path / "b" / "shards" / ".shard-00002.parquet.killed.tmp"
    stray.mkdir()
    (stray / "shard-00002.parquet").write_bytes(b"half a parquet")
    done = score(b_cfg, progress=False)
    assert done.complete and done.scored == 60
    assert _files(tmp_path / "a") == _files(tmp_path / "b")

    images = pd.read_parquet(tmp_path / "a" / "images.parquet")
    assert len(images) == 60 * 4 and set(images.layer) == {"layer1", "layer2", "layer3", "layer4"}
    assert images.complexity.between(0, 1).all() and (images.complexity == 1 - images.fraction).all()
    assert images.fraction.nunique() > 5  # real per-image numbers
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["cam"]["comparison"] == ">" and run["cam"]["target"] == "predicted" and run["engine"]["name"] == "torchcam"

    # a different argument cannot silently mix into the finished run
    with pytest.raises(FileExistsError, match="threshold"):
        score(_cfg(sample_root, tmp_path / "a", tiny_scorer, threshold=0.4, **kw), progress=False)


def test_rank_split_merges_to_the_single_process_result(sample_root: Path, tmp_path: Path, tiny_scorer: str) -> None:
    kw = {"limit_per_class": 4, "shard_size": 12, "batch_size": 8}
    single = score(_cfg(sample_root, tmp_path / "one", tiny_scorer, **kw), progress=False)
    assert single.complete and single.shards_total == 7
    cfg = _cfg(sample_root, tmp_path / "three", tiny_scorer, **kw)
    # three ranks, run one after another; rank 0 finishing first must not merge an incomplete set
    r0 = score(cfg, rank=0, world_size=3, progress=False)
    assert not r0.complete and not (tmp_path / "three" / "images.parquet").exists()
    score(cfg, rank=2, world_size=3, progress=False)
    r1 = score(cfg, rank=1, world_size=3, progress=False)
    assert r1.complete and not (tmp_path / "three" / "images.parquet").exists()  # only rank 0 merges
    from compdd.complexity import merge_shards

    merge_shards(tmp_path / "three")
    assert _files(tmp_path / "one") == _files(tmp_path / "three")
    classes = pd.read_csv(tmp_path / "one" / "classes.csv")
    assert len(classes) == 20 and (classes.n == 4).all() and set(classes.layer) == {"layer4"}
    with pytest.raises(ValueError, match="rank"):
        score(cfg, rank=3, world_size=3, progress=False)


def test_odd_files_are_scored_or_skipped_and_counted(tmp_path: Path, tiny_scorer: str) -> None:
    files = odd_files_tree(tmp_path / "tree")
    r = CliRunner().invoke(main, ["score", "--imagenet-root", str(tmp_path / "tree"), "--weights", tiny_scorer,
                                  "--out", str(tmp_path / "out"), "--device", "cpu", "--workers", "0"])
    assert r.exit_code == 0, r.output
    assert "scored 4 of 5 images (1 unreadable" in r.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["unreadable"] == 1 and summary["scored"] == 4
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv")
    assert skipped.path.tolist() == [files["unreadable"]]
    images = pd.read_parquet(tmp_path / "out" / "images.parquet")
    assert sorted(images.path) == sorted(v for k, v in files.items() if k != "unreadable")


def test_score_cli_errors_are_clear(sample_root: Path, tmp_path: Path, tiny_scorer: str) -> None:
    r = CliRunner().invoke(main, ["score", "--imagenet-root", str(sample_root), "--classes", "n01440764",
                                  "--weights", tiny_scorer, "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "n01440764" in r.output and "missing" in r.output
    r = CliRunner().invoke(main, ["score", "--imagenet-root", str(sample_root), "--subsets", "bird-*", "--all"])
    assert r.exit_code == 2 and "only one of" in r.output
    r = CliRunner().invoke(main, ["score", "--imagenet-root", str(sample_root), "--subsets", "bird-easy",
                                  "--weights", tiny_scorer, "--engine", "fast", "--preset", "edf-code",
                                  "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "--engine fast" in r.output


def test_missing_pretrained_weights_say_how_to_provide_them(sample_root: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    r = CliRunner().invoke(main, ["score", "--imagenet-root", str(sample_root), "--subsets", "bird-easy",
                                  "--out", str(tmp_path / "o"), "--device", "cpu"])  # default weights: resnet18.tv_in1k
    assert r.exit_code == 2
    assert "resnet18.tv_in1k" in r.output and "hf download" in r.output and "train-on-tree" in r.output


def test_build_subsets_scores_the_tree_itself(sample_root: Path, tmp_path: Path, tiny_scorer: str,
                                             _isolated_home: Path) -> None:
    args = ["build-subsets", "--imagenet-root", str(sample_root), "--weights", tiny_scorer, "--build-categories",
            "bird", "--limit-per-class", "2", "--device", "cpu", "--workers", "0", "--out", str(tmp_path / "d.json")]
    out = _cli(*args)
    assert "scored 40 of 40 images" in out and "bird-hard" in out
    scores = _isolated_home / "scores" / "gradcam-v1-train"
    assert (scores / "classes.csv").is_file()
    assert load_definition(tmp_path / "d.json").provenance["scores"]["limit_per_class"] == 2
    before = _files(scores)
    _cli(*args)  # the finished default scores folder is found and reused
    assert _files(scores) == before


# ---------------------------------------------------------------------------------------------
# end to end through the CLI on the generated sample ImageNet


def _cli(*args: str) -> str:
    r = CliRunner().invoke(main, list(args))
    assert r.exit_code == 0, r.output
    return r.output


def test_sample_pipeline_through_the_cli(make_sample, tmp_path: Path) -> None:
    """Mechanics of train-on-tree -> score -> build-subsets -> report on a tiny tree (ranking: the slow test below)."""
    root = make_sample(("bird-easy", "bird-hard"), train=6, val=2, size=32)
    scores, defn, rep = tmp_path / "scores", tmp_path / "def.json", tmp_path / "report"
    out = _cli("score", "--imagenet-root", str(root), "--split", "val", "--weights", "train-on-tree", "--train-epochs",
               "1", "--out", str(scores), "--device", "cpu", "--workers", "0", "--batch-size", "16")
    assert "scored 40 of 40 images" in out
    run = json.loads((scores / "run.json").read_text())
    assert run["scorer"]["trained"]["images"] == 120 and run["scorer"]["trained"]["epochs"] == 1
    assert run["cam"]["input_size"] == 64 and run["engine"]["name"] == "fast"
    # a second identical command finds the finished run (and the trained scorer) and changes nothing
    before = _files(scores)
    _cli("score", "--imagenet-root", str(root), "--split", "val", "--weights", "train-on-tree", "--train-epochs", "1",
         "--out", str(scores), "--device", "cpu", "--workers", "0", "--batch-size", "16")
    assert _files(scores) == before

    out = _cli("build-subsets", "--scores", str(scores), "--build-categories", "bird", "--out", str(defn))
    assert "bird-easy" in out and "jaccard" in out
    d = load_definition(defn)
    assert d.provenance["scorer"]["sha256"] == run["scorer"]["sha256"] and d.provenance["scores"]["split"] == "val"

    hard = V1.subset("bird-hard").wnids[0]
    _cli("report", "--scores", str(scores), "--definition", str(defn), "--imagenet-root", str(root),
         "--cam-class", hard, "--cam-images", "2", "--out", str(rep), "--device", "cpu")
    assert (rep / f"cam-{hard}.png").stat().st_size > 5000 and (rep / f"cam-{hard}.pdf").is_file()
    assert f"cam-{hard}.png" in (rep / "report.md").read_text()


@pytest.mark.slow
def test_sample_hard_subsets_score_as_more_complex(make_sample, tmp_path: Path) -> None:
    """Done-when of the scoring issue: a scorer trained on the sample for a few CPU minutes ranks -hard above -easy."""
    root = make_sample(("bird-easy", "bird-hard", "car-easy", "car-hard"), train=40, val=8, size=64)
    scores, defn = tmp_path / "scores", tmp_path / "def.json"
    _cli("score", "--imagenet-root", str(root), "--split", "val", "--weights", "train-on-tree", "--out", str(scores),
         "--device", "cpu", "--workers", "0")
    out = _cli("build-subsets", "--scores", str(scores), "--build-categories", "bird,car", "--out", str(defn))
    classes = pd.read_csv(scores / "classes.csv").set_index("wnid")
    built = load_definition(defn)
    for cat in ("bird", "car"):
        easy = classes.loc[list(V1.subset(f"{cat}-easy").wnids), "complexity_mean"].mean()
        hard = classes.loc[list(V1.subset(f"{cat}-hard").wnids), "complexity_mean"].mean()
        assert hard > easy + 0.05, (cat, easy, hard)
        for diff in ("easy", "hard"):
            overlap = len(set(built.subset(f"{cat}-{diff}").wnids) & set(V1.subset(f"{cat}-{diff}").wnids))
            assert overlap >= 7, (cat, diff, overlap, out)


@pytest.mark.slow
def test_torchrun_two_ranks_give_the_single_process_files(sample_root: Path, tmp_path: Path, tiny_scorer: str) -> None:
    import os
    import shutil
    import subprocess
    import sys

    args = ["score", "--imagenet-root", str(sample_root), "--weights", tiny_scorer, "--limit-per-class", "3",
            "--shard-size", "7", "--batch-size", "4", "--device", "cpu", "--workers", "0"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like each torchrun rank below: CPU float results depend on the thread count
    try:
        _cli(*args, "--out", str(tmp_path / "one"))
    finally:
        torch.set_num_threads(threads)
    bindir = str(Path(sys.executable).parent)
    torchrun, compdd = shutil.which("torchrun", path=bindir), shutil.which("compdd", path=bindir)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", compdd, *args,
                        "--out", str(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _files(tmp_path / "one") == _files(tmp_path / "two")
