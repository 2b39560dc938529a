"""EDF Discriminative Area Enhancement and CAMs: F(M, beta), the gradient mask, CAMs against torchcam,
and the CAM target mapping (local label -> ImageNet index; the public code's unmapped bug under compat)."""

from __future__ import annotations

import pytest
import torch

import compdd
from compdd import imagenet
from edf.cam import (
    CamWeightsError,
    compute_cams,
    grad_cam,
    imagenet_cam_net,
    smooth_grad_campp,
    subset_cam_net,
    target_indices,
)
from edf.dae import discriminative_area, enhance_image_gradient, enhancement_weights

MAP = torch.tensor([[[0.0, 0.2], [0.6, 1.0]]])  # mean 0.45


def test_weights_on_a_known_map():
    w = enhancement_weights(MAP, beta=1.0)
    assert w.shape == (1, 1, 2, 2)
    assert torch.allclose(w[0, 0], torch.tensor([[1.0, 1.0], [1.6, 2.0]]))
    w2 = enhancement_weights(MAP, beta=2.0)
    assert torch.allclose(w2[0, 0], torch.tensor([[1.0, 1.0], [2.6, 3.0]]))
    # a fixed threshold (paper Table 6b) instead of the per-image mean
    w3 = enhancement_weights(MAP, beta=1.0, threshold=0.1)
    assert torch.allclose(w3[0, 0], torch.tensor([[1.0, 1.2], [1.6, 2.0]]))
    # at the mean counts as discriminative (M >= mean); a flat map is all "at the mean"
    flat = torch.full((1, 3, 3), 0.5)
    assert torch.allclose(enhancement_weights(flat, beta=1.0), torch.full((1, 1, 3, 3), 1.5))


def test_threshold_is_per_image():
    maps = torch.stack([MAP[0], MAP[0] * 0.5])  # second image: mean 0.225, so 0.1 stays below, 0.3 above
    w = enhancement_weights(maps, beta=1.0)
    assert torch.allclose(w[1, 0], torch.tensor([[1.0, 1.0], [1.3, 1.5]]))


def test_discriminative_area_percentage():
    assert discriminative_area(MAP).tolist() == [50.0]
    assert discriminative_area(torch.full((1, 4, 4), 0.3)).tolist() == [0.0]  # strictly above the mean
    assert discriminative_area(MAP, threshold=0.1).tolist() == [75.0]


def test_gradient_mask_scales_every_channel_of_its_pixel():
    g = torch.randn(1, 3, 2, 2)
    out = enhance_image_gradient(g, enhancement_weights(MAP, beta=1.0))
    assert torch.allclose(out, g * torch.tensor([[1.0, 1.0], [1.6, 2.0]]))
    with pytest.raises(ValueError, match="do not fit"):
        enhance_image_gradient(torch.randn(2, 3, 2, 2), enhancement_weights(MAP, beta=1.0))


def test_bad_thresholds_are_rejected():
    with pytest.raises(ValueError, match="mean"):
        enhancement_weights(MAP, 1.0, threshold="median")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        enhancement_weights(MAP, 1.0, threshold=1.5)


# ------------------------------------------------------------------------------------------ CAMs


def _convnet():
    torch.manual_seed(0)
    return compdd.create_model("convnet_d3", num_classes=10, res=32)


def test_gradcam_equals_torchcam():
    from torchcam.methods import GradCAM

    model = _convnet()
    net = subset_cam_net(model, 10)  # freezes the model; torchcam needs a graph, so its input requires grad
    x = torch.randn(6, 3, 32, 32)
    t = torch.tensor([0, 3, 2, 9, 1, 1])
    with GradCAM(model, "features") as ext:
        ref = ext(class_idx=t.tolist(), scores=model(x.clone().requires_grad_()))[0]
    mine = grad_cam(net, x, t)
    assert mine.shape == (6, 4, 4)
    assert torch.allclose(mine, ref, atol=1e-6)


def test_smooth_gradcampp_equals_torchcam_under_the_same_seed():
    from torchcam.methods import SmoothGradCAMpp

    model = _convnet()
    net = subset_cam_net(model, 10)
    x = torch.randn(4, 3, 32, 32)
    t = torch.tensor([1, 5, 5, 7])
    with SmoothGradCAMpp(model, "features") as ext:
        scores = model(x.clone().requires_grad_())
        torch.manual_seed(11)  # torchcam draws its noise from the global RNG
        ref = ext(class_idx=t.tolist(), scores=scores)[0]
    mine = smooth_grad_campp(net, x, t, torch.Generator().manual_seed(11))
    assert torch.allclose(mine, ref, atol=1e-6)


def test_compute_cams_upsamples_and_normalises():
    net = subset_cam_net(_convnet(), 10)
    images = torch.randn(5, 3, 32, 32)
    maps = compute_cams(net, images, torch.arange(5), batch_size=2)
    assert maps.shape == (5, 32, 32)
    assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0
    native = grad_cam(net, images, torch.arange(5))
    assert torch.allclose(maps, torch.nn.functional.interpolate(native[:, None], size=(32, 32), mode="bilinear",
                                                                align_corners=False)[:, 0], atol=1e-6)


@pytest.fixture(scope="module")
def r18_net():
    """bird-hard's CAM net on a random-weight ImageNet ResNet-18 (compdd's scorer loader, no download)."""
    return imagenet_cam_net("random", compdd.get_subset("bird-hard").wnids)


def test_imagenet_target_mapping_and_the_compat_bug(r18_net):
    sub = compdd.get_subset("bird-hard")
    net = r18_net
    assert net.layer == "layer4" and net.kind == "imagenet" and net.class_index.numel() == 10
    classes = torch.arange(10).repeat_interleave(2)  # class-major, ipc 2
    mapped = target_indices(net, classes)
    assert mapped.tolist() == [imagenet.index_of(sub.wnids[c]) for c in classes.tolist()]
    assert mapped[0].item() == imagenet.index_of("n01537544") == 14  # bird-hard class 0: indigo bunting
    # soft labels whose argmax differs from the class (labels drift during distillation)
    soft = torch.zeros(20, 10)
    soft[torch.arange(20), (classes + 1) % 10] = 5.0
    assert target_indices(net, classes, soft, target="label-argmax").tolist() == \
        [imagenet.index_of(sub.wnids[(c + 1) % 10]) for c in classes.tolist()]
    # the public code: argmax of the soft label used as an ImageNet index, unmapped (tench, goldfish, ...)
    assert target_indices(net, classes, soft, compat_edf_code=True).tolist() == ((classes + 1) % 10).tolist()


def test_imagenet_cams_differ_by_target(r18_net):
    net = r18_net
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64)
    right = compute_cams(net, x, target_indices(net, torch.tensor([0, 1])))
    buggy = compute_cams(net, x, torch.tensor([0, 1]))
    assert right.shape == (2, 64, 64)
    assert not torch.allclose(right, buggy)


def test_subset_model_maps_labels_to_themselves():
    net = subset_cam_net(_convnet(), 10)
    assert target_indices(net, torch.tensor([3, 7])).tolist() == [3, 7]


def test_missing_imagenet_weights_give_an_actionable_error():
    with pytest.raises(CamWeightsError, match="hf download"):
        imagenet_cam_net("resnet18.tv_in1k", ["n01440764"])


# ------------------------------------------------------------------------------------ the DAE hook


class _Ctx:
    def __init__(self, it, images, classes):
        self.iteration, self.images, self.classes = it, images, classes
        self.labels = classes
        self.generator = torch.Generator().manual_seed(it)


def test_hook_refreshes_once_per_block_of_k_iterations():
    from edf.dae import DiscriminativeAreaEnhancement

    net = subset_cam_net(_convnet(), 10)
    dae = DiscriminativeAreaEnhancement(net, beta=1.0, interval=2)
    images, classes = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    g = torch.ones(4, 3, 32, 32)
    seen = []
    for it in (0, 1, 2, 3, 4):
        out = dae(g, _Ctx(it, images, classes))
        seen.append(dae.refreshes)
    assert seen == [1, 1, 2, 2, 3]
    assert torch.equal(out, g * enhancement_weights(dae.maps, 1.0))
    # iteration 0's update skipped (loss threshold): the block's maps come at its first applied update, on the
    # same images, since a skipped update changes nothing
    late = DiscriminativeAreaEnhancement(net, beta=1.0, interval=2)
    late(g, _Ctx(1, images, classes))
    assert late.refreshes == 1 and torch.equal(late.maps, compute_cams(net, images, classes))
    # checkpoint round trip
    resumed = DiscriminativeAreaEnhancement(net, beta=1.0, interval=2)
    resumed.load_state_dict(dae.state_dict())
    resumed(g, _Ctx(5, images, classes))
    assert resumed.refreshes == 0 and torch.equal(resumed.weights, dae.weights)
