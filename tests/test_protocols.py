"""Protocols: dd-v1 says what the spec says, schedules, overrides, learned lr, clear errors."""

from __future__ import annotations

import math

import pytest

from compdd.evaluation.protocols import (
    Protocol,
    ProtocolError,
    ScheduleSpec,
    get_protocol,
    list_protocols,
    parse_protocol,
)
from compdd.models import create_model


def test_dd_v1_matches_the_dd_standard():
    p = get_protocol("dd-v1")
    assert "dd-v1" in list_protocols()
    assert p.id == "dd-v1" and p.selection == "final_epoch" and p.test_split == "validation"
    assert p.models == {32: "convnet_d3", 64: "convnet_d4", 128: "convnet_d5"}
    assert p.epochs == 1000 and p.batch_size == 256 and p.seeds == (0, 1, 2, 3, 4)
    o = p.optimizer
    assert (o.name, o.lr, o.momentum, o.weight_decay, o.use_learned_lr, o.decay_bias_and_norm) == \
        ("sgd", 0.01, 0.9, 5e-4, True, True)
    assert (p.schedule.name, p.schedule.milestones, p.schedule.gamma) == ("step", (0.5,), 0.1)
    a = p.augmentation
    assert (a.name, a.strategy, a.crop_ratio) == ("dsa", "color_crop_cutout_flip_scale_rotate", 0.125)
    assert p.label_mode == "auto" and p.soft_temperature == 1.0


@pytest.mark.parametrize(("res", "params"), [(32, 320_010), (64, 467_850), (128, 615_690)])
def test_dd_v1_models_exist_with_the_spec_parameter_counts(res, params):
    model = create_model(get_protocol("dd-v1").model_for(res), num_classes=10, res=res)
    assert sum(p.numel() for p in model.parameters()) == params


def test_model_for_unknown_resolution_names_what_is_covered():
    with pytest.raises(ProtocolError, match=r"no model for 48 px; it covers \[32, 64, 128\]"):
        get_protocol("dd-v1").model_for(48)


def test_step_schedule_decays_by_gamma_from_half_the_epochs():
    s = get_protocol("dd-v1").schedule
    assert [s.factor(e, 1000) for e in (0, 499, 500, 999)] == [1.0, 1.0, pytest.approx(0.1), pytest.approx(0.1)]
    assert s.factor(1, 3) == 1.0 and s.factor(2, 3) == pytest.approx(0.1)  # round(1.5) = 2


def test_cosine_schedules():
    full, half = ScheduleSpec(name="cosine"), ScheduleSpec(name="half_cosine")
    assert full.factor(0, 10) == 1.0 and full.factor(5, 10) == pytest.approx(0.5) and full.factor(10, 10) == pytest.approx(0)
    # RDED's half cosine ends at half the lr
    assert half.factor(0, 10) == 1.0 and half.factor(10, 10) == pytest.approx(0.5)
    assert half.factor(5, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert ScheduleSpec(name="constant").factor(7, 10) == 1.0


def test_overrides_record_only_what_changed():
    p = get_protocol("dd-v1")
    q, applied = p.with_overrides(epochs=20, seeds=[0, 1])
    assert (q.epochs, q.seeds) == (20, (0, 1)) and applied == {"epochs": 20, "seeds": (0, 1)}
    assert p.epochs == 1000  # the registered protocol is untouched
    same, none = p.with_overrides(epochs=1000, seeds=[0, 1, 2, 3, 4], batch_size=None)
    assert none == {} and same == p


@pytest.mark.parametrize(("kw", "msg"), [
    ({"lr": 0.1}, r"cannot override \['lr'\]"),
    ({"seeds": []}, "non-empty"),
    ({"seeds": [0, 0]}, "without repeats"),
    ({"epochs": 0}, "at least 1"),
])
def test_bad_overrides_are_refused(kw, msg):
    with pytest.raises(ProtocolError, match=msg):
        get_protocol("dd-v1").with_overrides(**kw)


def test_learned_lr_is_used_only_if_the_protocol_takes_it():
    p = get_protocol("dd-v1")
    assert p.eval_lr(0.03) == 0.03 and p.eval_lr(None) == 0.01
    fixed = p.model_copy(update={"optimizer": p.optimizer.model_copy(update={"use_learned_lr": False})})
    assert fixed.eval_lr(0.03) == 0.01


def test_parse_errors_name_the_file_and_field():
    doc = get_protocol("dd-v1").model_dump(mode="json")
    with pytest.raises(ProtocolError, match=r"my\.yaml: optimizer\.momentom"):
        parse_protocol({**doc, "optimizer": {**doc["optimizer"], "momentom": 0.9}}, "my.yaml")
    with pytest.raises(ProtocolError, match="mine.yaml: label_mode"):
        parse_protocol({**doc, "label_mode": "fuzzy"}, "mine.yaml")
    assert isinstance(parse_protocol(doc), Protocol)


def test_kd_augmentation_is_declared_in_the_protocol():
    import torch

    from compdd.evaluation.protocols import AugmentSpec, get_protocol
    from compdd.evaluation.trainer import make_augment
    from compdd.teachers import kd_crop_cutmix

    kd = get_protocol("kd-v1").augmentation
    assert (kd.name, kd.crop_scale, kd.flip, kd.cutmix_beta) == ("kd-crop-cutmix", (0.08, 1.0), True, 1.0)
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(make_augment(kd, torch.device("cpu"))(x, 7), kd_crop_cutmix(x, 7))
    # the whole image, unflipped, one image (no CutMix partner): the identity up to bilinear rounding
    same = make_augment(AugmentSpec(name="kd-crop-cutmix", crop_scale=(1.0, 1.0), flip=False), torch.device("cpu"))
    assert torch.allclose(same(x[:1], 3), x[:1], atol=1e-6)
    assert not torch.allclose(make_augment(kd, torch.device("cpu"))(x[:1], 3), x[:1], atol=1e-3)
    with pytest.raises(ValueError, match="crop_scale configure kd-crop-cutmix, not 'dsa'"):
        AugmentSpec(name="dsa", crop_scale=(0.5, 1.0))
    with pytest.raises(ValueError, match="crop_ratio configure dsa, not 'kd-crop-cutmix'"):
        AugmentSpec(name="kd-crop-cutmix", crop_ratio=0.25)
    with pytest.raises(ValueError, match="crop_scale must satisfy 0 < low <= high <= 1"):
        AugmentSpec(name="kd-crop-cutmix", crop_scale=(0.5, 0.2))
