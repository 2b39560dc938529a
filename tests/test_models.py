"""Built-in networks: parameter counts against the public code, shapes at 32/64/128 px, functional use."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import compdd
from compdd.models import create_model, list_models


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Rows of the trajectory-matching spec §1.1/§1.2 (counted by instantiating the public code).
@pytest.mark.parametrize("name,res,classes,expected", [
    ("convnet_d5", 128, 10, 615_690),
    ("convnet_d4", 64, 200, 857_160),
    ("convnet_d4", 64, 10, 467_850),
    ("convnet", 32, 10, 320_010),
    ("convnet_d3", 32, 10, 320_010),
    ("convnet_d3", 32, 100, 504_420),
    ("resnet18", 32, 10, 11_173_962),
    ("resnet18_bn", 32, 10, 11_173_962),
    ("vgg11", 32, 10, 9_231_114),
    ("vgg11_bn", 32, 10, 9_231_114),
    ("alexnet", 32, 10, 1_872_202),
])
def test_parameter_counts_match_public_code(name: str, res: int, classes: int, expected: int) -> None:
    with torch.device("meta"):
        assert n_params(create_model(name, num_classes=classes, res=res)) == expected


def test_convnet_d5_parameter_layout_matches_spec() -> None:
    with torch.device("meta"):
        model = create_model("convnet_d5", num_classes=10, res=128)
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes[:4] == [(128, 3, 3, 3), (128,), (128,), (128,)]
    assert shapes[4:8] == [(128, 128, 3, 3), (128,), (128,), (128,)]
    assert shapes[-2:] == [(10, 2048), (10,)]
    names = [n for n, _ in model.named_parameters()]
    assert names[:2] == ["features.0.weight", "features.0.bias"] and names[-1] == "classifier.bias"
    # Convs at 0/4/8/12/16, GroupNorm(C, C) right after each, the last AvgPool is features[-1] (EDF's CAM layer).
    assert [i for i, m in enumerate(model.features) if isinstance(m, torch.nn.Conv2d)] == [0, 4, 8, 12, 16]
    assert all(isinstance(model.features[i + 1], torch.nn.GroupNorm) and model.features[i + 1].num_groups == 128
               for i in (0, 4, 8, 12, 16))
    assert isinstance(model.features[-1], torch.nn.AvgPool2d)


CROSS = ["resnet18", "resnet18_bn", "vgg11", "vgg11_bn", "alexnet"]


@pytest.mark.parametrize("name", CROSS + ["convnet_d3", "convnet_d4_bn", "convnet_d5_nn"])
@pytest.mark.parametrize("res", [32, 64, 128])
def test_forward_shape_at_each_resolution(name: str, res: int) -> None:
    # The meta device checks every shape (the public heads fail here at 128 px) without computing anything.
    with torch.device("meta"):
        model = create_model(name, num_classes=7, res=res)
        fmap = model.features(torch.empty(2, 3, res, res))
        out = model(torch.empty(2, 3, res, res))
    assert out.shape == (2, 7)
    assert fmap.ndim == 4 and fmap.shape[0] == 2
    if name in CROSS:  # same head at every resolution: counts do not depend on res
        with torch.device("meta"):
            assert n_params(model) == n_params(create_model(name, num_classes=7, res=32))


def test_every_registered_model_builds_at_its_smallest_supported_size() -> None:
    names = list_models()
    assert {"convnet", "convnet_d1", "convnet_d8", "convnet_d8_bn", "convnet_d8_nn", "convnet_d3_w32", *CROSS} <= set(names)
    narrow = create_model("convnet_d3_w32", num_classes=10, res=32)
    # 3 conv layers of width 32 (3->32, 32->32, 32->32) with instance-norm affine pairs, then 32*4*4 -> 10
    assert n_params(narrow) == (3 * 32 * 9 + 32) + 2 * (32 * 32 * 9 + 32) + 3 * 2 * 32 + (32 * 16 * 10 + 10)
    with torch.device("meta"):
        for name in names:
            model = create_model(name, num_classes=3, res=256)
            assert model(torch.empty(1, 3, 256, 256)).shape == (1, 3)


def test_convnet_d1_matches_an_independent_computation() -> None:
    torch.manual_seed(0)
    model = create_model("convnet_d1", num_classes=5, res=8, width=6)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    x = torch.randn(3, 3, 8, 8)
    conv, gn, lin = model.features[0], model.features[1], model.classifier
    h = F.conv2d(x, conv.weight, conv.bias, padding=1)
    mu, var = h.mean(dim=(2, 3), keepdim=True), h.var(dim=(2, 3), unbiased=False, keepdim=True)
    h = (h - mu) / torch.sqrt(var + 1e-5) * gn.weight[:, None, None] + gn.bias[:, None, None]
    h = h.clamp_min(0)
    h = h.reshape(3, 6, 4, 2, 4, 2).mean(dim=(3, 5))
    expected = h.flatten(1) @ lin.weight.T + lin.bias
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def test_instance_norm_is_per_sample() -> None:
    torch.manual_seed(0)
    model = create_model("convnet_d3", num_classes=10, res=32, width=16)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        batched = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(4)])
        model.eval()
        evaluated = model(x)
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched, evaluated)
    assert not list(model.buffers())  # no running statistics: train and eval modes agree


@pytest.mark.parametrize("name", ["convnet_d3", "convnet_d3_bn", "convnet_d3_nn", "resnet18", "vgg11", "alexnet"])
def test_functional_call_features_split_and_cam_layer(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, res=32)
    x = torch.randn(1, 3, 32, 32)
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    seen: list[torch.Tensor] = []
    with torch.no_grad():
        handle = model.get_submodule(model.cam_layer).register_forward_hook(lambda m, i, o: seen.append(o))
        out = model(x)
        handle.remove()
        # forward == classifier(features(x)), and cam_layer's output is the map the classifier reads.
        assert len(seen) == 1 and seen[0].ndim == 4
        torch.testing.assert_close(model.classifier(model.features(x)), out, rtol=0, atol=0)
        torch.testing.assert_close(model.classifier(seen[0]), out, rtol=0, atol=0)
        torch.testing.assert_close(functional_call(model, state, (x,)), out, rtol=0, atol=0)
        # A zero head with bias b must output exactly b: the passed tensors are the ones used.
        bias = torch.arange(10, dtype=torch.float32)
        swapped = {**state, "classifier.weight": torch.zeros_like(model.classifier.weight), "classifier.bias": bias}
        torch.testing.assert_close(functional_call(model, swapped, (x,)), bias.expand(1, 10), rtol=0, atol=0)


def test_functional_call_is_differentiable_twice() -> None:
    # The trajectory-matching student: one SGD step taken functionally, then a gradient through the step.
    torch.manual_seed(0)
    model = create_model("convnet_d2", num_classes=3, res=8, width=4)
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    x = torch.randn(5, 3, 8, 8, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1])
    loss = F.cross_entropy(functional_call(model, params, (x,)), y)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    stepped = {k: v - 0.1 * g for (k, v), g in zip(params.items(), grads, strict=True)}
    outer = functional_call(model, stepped, (x,)).pow(2).sum()
    (gx,) = torch.autograd.grad(outer, x)
    assert torch.isfinite(gx).all() and gx.abs().sum() > 0


@pytest.mark.parametrize("kwargs,message", [
    (dict(name="convnet", depth=9), "depth"),
    (dict(name="convnet", norm="layer"), "norm"),
    (dict(name="convnet", pooling="min"), "pooling"),
    (dict(name="convnet_d6", res=32), "res >= 64"),
    (dict(name="vgg11", res=16), "res >= 32"),
    (dict(name="alexnet", res=16), "res >= 32"),
])
def test_bad_arguments_raise_clear_errors(kwargs: dict, message: str) -> None:
    kwargs = {"res": 32, **kwargs}
    with pytest.raises(ValueError, match=message):
        create_model(kwargs.pop("name"), num_classes=10, **kwargs)


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(compdd.UnknownNameError, match="convnet_d3"):
        create_model("convnet_d33", num_classes=10, res=32)
