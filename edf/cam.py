"""Class activation maps of synthetic images, for DAE and for the analysis figures.

A :class:`CamNet` is a frozen classifier plus the name of the layer whose output the CAM weighs (the
last convolutional block by default) and a map from the subset's local labels to the classifier's
output indices. Two kinds are built here:

* an **ImageNet classifier** (:func:`imagenet_cam_net`, loaded as ``compdd score --weights`` loads its
  scorer, e.g. ``resnet18.tv_in1k``, the torchvision ``IMAGENET1K_V1`` weights the public EDF code uses);
  local label ``c`` maps to the ImageNet index of the subset's ``c``-th wnid;
* any **model trained on the real subset** (:func:`subset_cam_net`, e.g. an expert's final snapshot);
  labels map to themselves. Needs no download, so it is the offline fallback.

Two CAM algorithms:

``gradcam``          Grad-CAM (the paper): ``ReLU(sum_k mean_hw(dS/dA_k) * A_k)``, one forward and one
                     gradient from the logits back to the layer.
``smoothgradcampp``  torchcam's Smooth Grad-CAM++ as the public code runs it (torchcam 0.4.0/0.5.0,
                     4 noisy copies with sigma 0.3, the map weighted on the **last** noisy pass; spec §5.2),
                     with the noise drawn from an explicit generator.

Maps are min-max normalised per image at the layer's resolution, then bilinearly upsampled to the image
size (what ``transforms.Resize`` does in the public code).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compdd import imagenet

CAM_METHODS: tuple[str, ...] = ("gradcam", "smoothgradcampp")
EPS = 1e-8


class CamWeightsError(ValueError):
    """The ImageNet classifier for CAMs could not be loaded (offline, not cached, or a bad file)."""


@dataclass
class CamNet:
    """A frozen classifier for CAMs.

    ``module`` maps images in its own input normalisation (``mean``/``std``, pixel values in [0, 1]) to
    logits; ``layer`` names the sub-module whose output is weighed; ``class_index[c]`` is the output
    index of local label ``c``.
    """

    module: nn.Module
    layer: str
    class_index: Tensor  # int64 (C,)
    mean: tuple[float, float, float] = imagenet.MEAN
    std: tuple[float, float, float] = imagenet.STD
    name: str = ""
    kind: str = "subset"  # "imagenet" or "subset"
    sha256: str = ""  # of the weights, when known

    def __post_init__(self) -> None:
        self.module.eval().requires_grad_(False)
        names = dict(self.module.named_modules())
        if self.layer not in names:
            raise ValueError(f"CAM layer {self.layer!r} is not a sub-module of {self.name or type(self.module).__name__}; "
                             f"some valid names: {', '.join(n for n in list(names)[1:12])}")
        self._target = names[self.layer]

    def to(self, device: str | torch.device) -> CamNet:
        self.module.to(device)
        return self

    def prepare(self, images: Tensor) -> Tensor:
        """Synthetic images (ImageNet-normalised, compdd's space) -> this model's input space."""
        if tuple(self.mean) == tuple(imagenet.MEAN) and tuple(self.std) == tuple(imagenet.STD):
            return images
        dev = images.device
        src_m, src_s = (torch.tensor(v, device=dev).view(1, 3, 1, 1) for v in (imagenet.MEAN, imagenet.STD))
        dst_m, dst_s = (torch.tensor(v, device=dev).view(1, 3, 1, 1) for v in (self.mean, self.std))
        return ((images * src_s + src_m) - dst_m) / dst_s

    def activations_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Run the model; return the layer's output (a leaf that requires grad) and the logits.

        The hook cuts the graph below the layer, so the gradient of a score reaches the activations only,
        never the trunk (Grad-CAM needs no more, and it costs about one forward pass).
        """
        store: list[Tensor] = []

        def hook(_m: nn.Module, _inp: tuple[Tensor, ...], out: Tensor) -> Tensor:
            a = out.detach().requires_grad_()
            store.append(a)
            return a.clone()  # later in-place ops must not touch the stored leaf

        handle = self._target.register_forward_hook(hook)
        try:
            with torch.enable_grad():
                logits = self.module(x)
        finally:
            handle.remove()
        return store[-1], logits


def _normalise(cam: Tensor) -> Tensor:
    """Per-image min-max to [0, 1] (torchcam's rule, eps 1e-8)."""
    cam = cam - cam.amin(dim=(-2, -1), keepdim=True)
    return cam / (cam.amax(dim=(-2, -1), keepdim=True) + EPS)


def _target_grad(a: Tensor, logits: Tensor, targets: Tensor) -> Tensor:
    score = logits.gather(1, targets.view(-1, 1)).sum()
    (g,) = torch.autograd.grad(score, a)
    return g


def grad_cam(net: CamNet, x: Tensor, targets: Tensor) -> Tensor:
    """Grad-CAM of ``x`` (model input space) for output indices ``targets``: ``(N, h, w)`` in [0, 1]."""
    a, logits = net.activations_and_logits(x)
    g = _target_grad(a, logits, targets)
    cam = F.relu((g.mean(dim=(2, 3), keepdim=True) * a.detach()).sum(1))
    return _normalise(cam)


def smooth_grad_campp(net: CamNet, x: Tensor, targets: Tensor, generator: torch.Generator,
                      num_samples: int = 4, std: float = 0.3) -> Tensor:
    """torchcam's ``SmoothGradCAMpp`` (the public EDF code's CAM), with noise from ``generator``.

    alpha = mean_s G_s^2 / (2 mean_s G_s^2 + sum_hw(mean_s G_s^3 * A_0) + eps); the map is
    ``ReLU(sum_k sum_hw(alpha * ReLU(G_last)) * A_last)``, where ``A_0`` is the clean activation and
    ``G_last``, ``A_last`` come from the last noisy pass (torchcam's hooks keep only that one).
    """
    with torch.no_grad():
        a0, _ = net.activations_and_logits(x)
    a0 = a0.detach()
    g2 = torch.zeros_like(a0)
    g3 = torch.zeros_like(a0)
    for _ in range(num_samples):
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).mul_(std).to(x.device)
        a, logits = net.activations_and_logits(x + noise)
        g = _target_grad(a, logits, targets)
        g2 += g.pow(2)
        g3 += g.pow(3)
    g2 /= num_samples
    g3 /= num_samples
    alpha = g2 / (2 * g2 + (g3 * a0).flatten(2).sum(-1)[..., None, None] + EPS)
    w = (alpha * F.relu(g)).flatten(2).sum(-1)
    cam = F.relu((w[..., None, None] * a.detach()).sum(1))
    return _normalise(cam)


def compute_cams(net: CamNet, images: Tensor, targets: Tensor, *, method: str = "gradcam",
                 batch_size: int = 64, generator: torch.Generator | None = None) -> Tensor:
    """CAMs of synthetic ``images`` (N, 3, H, W) for output indices ``targets`` (N,): ``(N, H, W)`` in [0, 1].

    ``images`` are in compdd's ImageNet-normalised space; ``targets`` index the CAM model's outputs
    (see :func:`target_indices`). Maps are upsampled to ``H x W``.
    """
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {', '.join(CAM_METHODS)}")
    if targets.shape != (images.shape[0],):
        raise ValueError(f"need one CAM target per image, got {tuple(targets.shape)} for {images.shape[0]} images")
    if method == "smoothgradcampp" and generator is None:
        raise ValueError("smoothgradcampp draws noise: pass an explicit torch.Generator")
    images = images.detach()
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = net.prepare(images[i:i + batch_size])
        t = targets[i:i + batch_size].to(images.device)
        if method == "gradcam":
            cam = grad_cam(net, x, t)
        else:
            cam = smooth_grad_campp(net, x, t, generator)  # type: ignore[arg-type]
        out.append(F.interpolate(cam.unsqueeze(1), size=images.shape[-2:], mode="bilinear",
                                 align_corners=False).squeeze(1))
    return torch.cat(out).detach()


def target_indices(net: CamNet, classes: Tensor, soft_labels: Tensor | None = None, *,
                   target: str = "class", compat_edf_code: bool = False) -> Tensor:
    """Output indices of the CAM model that each synthetic image's CAM is computed for.

    ``target="class"``: the image's own class ``classes[i]`` (the paper); ``"label-argmax"``: the argmax
    of its learned soft label (the public code). Local labels go through ``net.class_index``.
    ``compat_edf_code=True`` reproduces the public code's bug (spec §5.2): the argmax of the soft label, a
    local index 0..C-1, is used as the output index **without** mapping, so on an ImageNet model the CAM is
    that of ImageNet classes 0..9 (tench, goldfish, ...) rather than the subset's classes.
    """
    if compat_edf_code:
        if soft_labels is None:
            raise ValueError("the edf-code CAM target needs the soft labels (argmax of the learned label)")
        return soft_labels.detach().argmax(1).cpu()
    if target == "class":
        local = classes.detach().cpu()
    elif target == "label-argmax":
        if soft_labels is None:
            raise ValueError("cam_target 'label-argmax' needs soft labels")
        local = soft_labels.detach().argmax(1).cpu()
    else:
        raise ValueError(f"unknown CAM target {target!r}; choose 'class' or 'label-argmax'")
    return net.class_index[local]


def subset_cam_net(module: nn.Module, num_classes: int, layer: str | None = None, name: str = "") -> CamNet:
    """A model trained on the subset's images (its outputs are the local labels), e.g. an expert snapshot.

    ``layer`` defaults to the model's ``cam_layer`` (compdd models: ``features``, the last block's output).
    """
    layer = layer or getattr(module, "cam_layer", None)
    if layer is None:
        raise ValueError(f"{type(module).__name__} does not say which layer to use for CAMs; pass cam_layer")
    return CamNet(module, layer, torch.arange(num_classes), name=name, kind="subset")


def imagenet_cam_net(weights: str, wnids: Sequence[str], *, arch: str | None = None,
                     layer: str | None = None) -> CamNet:
    """An ImageNet-1k classifier as CAM model, loaded like ``compdd score --weights``.

    ``weights``: a timm name with a pretrained tag (``resnet18.tv_in1k``, from the Hugging Face cache or, when
    online, the Hub), a local ``.safetensors``/``.pth`` file (``arch`` names the timm architecture of a foreign
    file), or ``random`` (tests only). ``layer`` defaults to the last block (``forward_features``'s output).
    """
    from compdd.complexity.cam import last_block_name
    from compdd.complexity.scorer import ScorerWeightsError, load_scorer

    try:
        with torch.random.fork_rng(devices=[]):  # building a model must not move the caller's global RNG
            scorer = load_scorer(weights, arch=arch)
    except ScorerWeightsError as e:
        raise CamWeightsError(f"cam_weights={weights!r}: {e}\nOr leave cam_weights=expert to use a model trained "
                              "on the real subset (works offline).") from None
    index = torch.tensor([imagenet.index_of(w) for w in wnids], dtype=torch.int64)
    return CamNet(scorer.model, layer or last_block_name(scorer.model), index, mean=tuple(scorer.mean),
                  std=tuple(scorer.std), name=weights, kind="imagenet", sha256=scorer.sha256)
