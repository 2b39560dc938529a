"""MTT, FTD and DATM as methods: shipped presets, show-config, errors, and the CLI end to end."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from torch import nn

import compdd
from compdd.cli import main
from compdd.data import load_tensors_from_imagenet
from compdd.evaluation.records import ResultRecord
from compdd.methods import ConfigError
from compdd.models import MODELS, register_model
from compdd.models.convnet import ConvNet

if "tm_tiny" not in MODELS:
    @register_model("tm_tiny")
    def _tm_tiny(num_classes: int, res: int, channels: int = 3) -> nn.Module:
        return ConvNet(num_classes, res, channels, depth=2, width=8)


def config_of(method, subset, ipc, **kw):
    return compdd.create_method(method, subset=subset, ipc=ipc, res=128, **kw).config


def test_datm_presets_are_the_spec_table():
    c = config_of("datm", "bird-hard", 10)  # spec §6: birds_hard IPC10
    assert (c.syn_steps, c.window_initial_max, c.max_start_epoch, c.window_expansion_end) == (40, 10, 20, 1000)
    assert (c.lr_img, c.lr_lr, c.lr_label, c.batch_syn, c.update_threshold) == (1000, 1e-5, 3.0, 200, 2.0)
    assert (c.image_init, c.label_mode, c.expert_optimizer, c.iterations) == ("real_correct", "soft", "gsam", 10000)
    c = config_of("datm", "imagewoof", 10)
    assert (c.lr_lr, c.batch_syn) == (1e-6, 250)
    c = config_of("datm", "imagesquawk", 50)
    assert (c.syn_steps, c.lr_teacher, c.batch_syn, c.update_threshold) == (80, 0.005, 128, 1.1)
    c = config_of("datm", "dog-hard", 1)
    assert c.update_threshold == 2.5
    # no public config: the most common bird/car/dog value per key
    fish = config_of("datm", "fish-hard", 50)
    assert (fish.window_expansion_end, fish.lr_label, fish.batch_syn, fish.update_threshold) == (2000, 5.0, 200, 1.0)
    # imagefruit IPC1/10 files are broken upstream (they say ipc 50): the IPC defaults apply
    assert config_of("datm", "imagefruit", 1).max_start_epoch == 10
    # IPC 20 uses the IPC10 row; user config wins over the preset
    assert config_of("datm", "bird-hard", 20).max_start_epoch == 20
    assert config_of("datm", "bird-hard", 10, syn_steps=5).syn_steps == 5


def test_mtt_and_ftd_presets():
    m = config_of("mtt", "imagenette", 1)
    assert (m.syn_steps, m.expert_epochs, m.max_start_epoch, m.lr_img, m.lr_lr) == (20, 2, 10, 1000, 1e-6)
    assert (m.label_mode, m.expert_optimizer, m.ema_decay, m.update_threshold) == ("hard", "sgd", None, None)
    f = config_of("ftd", "bird-easy", 10)
    assert (f.ema_decay, f.return_ema, f.expert_optimizer, f.label_mode) == (0.9995, True, "gsam", "hard")


def test_unknown_config_key_is_an_error():
    with pytest.raises(ConfigError, match="known keys"):
        compdd.create_method("datm", syn_step=3)


def test_show_config_prints_the_resolved_configuration():
    r = CliRunner().invoke(main, ["show-config", "--method", "datm", "--subset", "bird-hard", "--ipc", "10",
                                  "--set", "iterations=50"])
    assert r.exit_code == 0, r.output
    lines = {ln.split(":")[0]: ln for ln in r.output.splitlines()}
    assert "200" in lines["batch_syn"] and "# preset" in lines["batch_syn"]
    assert "50" in lines["iterations"] and "# --set" in lines["iterations"]
    assert "convnet_d5" in lines["model"]
    r = CliRunner().invoke(main, ["show-config", "--method", "mtt", "--subset", "bird-hard", "--ipc", "1", "--json"])
    assert json.loads(r.output)["lr_img"] == 1000


def test_missing_experts_error_names_the_command(sample_root):
    train = load_tensors_from_imagenet("bird-hard", sample_root, "train", 32, progress=False)
    method = compdd.create_method("datm", subset="bird-hard", ipc=1, res=32)
    with pytest.raises(FileNotFoundError, match="compdd experts --subset bird-hard --res 32 --optimizer gsam"):
        method.distill(train, 1, progress=False)


def test_experts_then_evaluate_datm_end_to_end(sample_root, tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["experts", "--subset", "bird-hard", "--res", "32", "--imagenet-root", str(sample_root),
                             "--num-experts", "2", "--epochs", "3", "--model", "tm_tiny", "--batch-size", "80"])
    assert r.exit_code == 0, r.output
    assert "disk:" in r.output and "2 experts in" in r.output
    out = tmp_path / "run"
    sets = {"model": "tm_tiny", "iterations": 3, "syn_steps": 3, "max_start_epoch": 2, "window_initial_max": 1,
            "window_expansion_end": 2, "update_threshold": 100}
    args = ["evaluate", "--method", "datm", "--subset", "bird-hard", "--ipc", "1", "--res", "32",
            "--imagenet-root", str(sample_root), "--epochs", "2", "--seeds", "0", "--no-references", "--out", str(out)]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    r = runner.invoke(main, args)
    assert r.exit_code == 0, r.output
    rec = ResultRecord.load(out / "result.json")
    ds = compdd.DistilledSet.load(out / "distilled")
    assert ds.label_type == "soft" and ds.labels.shape == (10, 10)
    assert rec.artifact.label_type == "soft" and rec.label_mode == "soft"
    assert rec.artifact.learned_lr == ds.lr and ds.lr != 0.01  # learned, and used by the protocol
    assert rec.eval_lr == pytest.approx(ds.lr)
    assert ds.meta["experts"]["used"] == 2 and ds.meta["iterations"] == 3


@pytest.mark.slow
def test_mtt_ftd_datm_beat_random_real_images_at_ipc1(make_sample):
    """Sample ImageNet bird-easy at 32 px, IPC 1: each method beats the mean of three random-real draws under the
    same short protocol (dd-v1 with 300 epochs, seeds 0 and 1). Experts and the student are the narrow
    convnet_d3_w32 to keep CPU time down; the protocol scores with the standard convnet_d3. ~6 min on 2 quiet CPU
    cores. Measured: random 47.7, mtt 71.5, ftd 69.5, datm 72.5."""
    from compdd.evaluation.protocols import get_protocol
    from compdd.evaluation.run import evaluate_distilled
    from compdd.methods.tm.experts import ExpertConfig, default_experts_dir, train_experts

    root = make_sample(("bird-easy",), train=30, val=10, size=32, seed=0)
    train = load_tensors_from_imagenet("bird-easy", root, "train", 32, progress=False)
    test = load_tensors_from_imagenet("bird-easy", root, "val", 32, progress=False)
    for opt in ("gsam", "sgd"):
        train_experts(train, default_experts_dir("bird-easy", 32, "convnet_d3_w32", opt),
                      ExpertConfig(model="convnet_d3_w32", optimizer=opt, epochs=15, batch_size=32, lr=0.03), 3,
                      progress=False)
    proto, _ = get_protocol("dd-v1").with_overrides(epochs=300, seeds=(0, 1))

    def top1(ds) -> float:
        seeds = evaluate_distilled(ds, test, proto, device="cpu", progress=False)
        return sum(s.top1 for s in seeds) / len(seeds)

    random_mean = sum(top1(compdd.create_method("random").distill(train, 1, seed=s, progress=False))
                      for s in range(3)) / 3
    common = dict(model="convnet_d3_w32", iterations=100, syn_steps=10, max_start_epoch=6, lr_teacher=0.03, lr_lr=1e-6,
                  lr_img=1000.0, checkpoint_every=0)
    extra = {"mtt": {}, "ftd": {"ema_decay": 0.95},
             "datm": {"window_initial_max": 3, "window_expansion_end": 50, "lr_label": 2.0, "update_threshold": 3.0}}
    acc = {name: top1(compdd.create_method(name, subset="bird-easy", ipc=1, res=32, **common, **kw).distill(
        train, 1, seed=0, progress=False)) for name, kw in extra.items()}
    print(f"dd-v1 (300 epochs, seeds 0-1) top-1: random {random_mean:.1f}", {k: round(v, 1) for k, v in acc.items()})
    for name, a in acc.items():
        assert a > random_mean + 5, f"{name}: {a:.1f}% vs random {random_mean:.1f}%"
