"""Cross-architecture evaluation networks: ResNet-18, VGG-11 and AlexNet as in the DD code (``networks.py``).

The bodies follow the public code (CIFAR-style ResNet stem, instance norm = GroupNorm(C, C)); the heads do
not: the public ones are sized for 32 px (64 px for the ``_Tiny`` variants) and crash with a shape
mismatch at 128 px. Here each head adaptively average-pools the final map to the size the public head
expects at 32 px, so parameter counts equal the public ones and any resolution >= 32 px works.

Registered names: ``resnet18`` (instance norm), ``resnet18_bn``, ``vgg11`` (instance norm), ``vgg11_bn``,
``alexnet`` (no norm).
"""

from __future__ import annotations

from torch import Tensor, nn

from compdd.models import register_model
from compdd.models._common import PooledLinear, SplitNet, check_res, norm_layer


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm_layer(norm, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = norm_layer(norm, out_ch)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                          norm_layer(norm, out_ch))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(SplitNet):
    """``stem_stride=2`` gives the public ``ResNet18_Tiny`` stem (cheaper at 64 px and above)."""

    def __init__(self, num_classes: int, res: int, channels: int = 3, norm: str = "instance", stem_stride: int = 1):
        check_res("resnet18", res, 8 * stem_stride)
        layers: list[nn.Module] = [nn.Conv2d(channels, 64, 3, stride=stem_stride, padding=1, bias=False),
                                   norm_layer(norm, 64), nn.ReLU()]
        in_ch = 64
        for i, width in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(in_ch, width, stride, norm), BasicBlock(width, width, 1, norm)))
            in_ch = width
        super().__init__(nn.Sequential(*layers), PooledLinear(512, num_classes, pool=1), res)


VGG11_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11(SplitNet):
    def __init__(self, num_classes: int, res: int, channels: int = 3, norm: str = "instance"):
        check_res("vgg11", res, 32)
        layers: list[nn.Module] = []
        in_ch = channels
        for v in VGG11_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                assert isinstance(v, int)
                layers += [nn.Conv2d(in_ch, v, 3, padding=1), norm_layer(norm, v), nn.ReLU()]
                in_ch = v
        super().__init__(nn.Sequential(*layers), PooledLinear(512, num_classes, pool=1), res)


class AlexNet(SplitNet):
    """The DD AlexNet (no norm). As in the public code the first conv has stride 2 unless res == 32."""

    def __init__(self, num_classes: int, res: int, channels: int = 3):
        check_res("alexnet", res, 32)
        features = nn.Sequential(
            nn.Conv2d(channels, 128, 5, stride=1 if res == 32 else 2, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(128, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(192, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 192, 3, padding=1), nn.ReLU(),
            nn.Conv2d(192, 192, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
        )
        super().__init__(features, PooledLinear(192 * 4 * 4, num_classes, pool=4), res)


@register_model("resnet18", family="resnet", norm="instance")
def resnet18(num_classes: int, res: int, channels: int = 3, **kwargs) -> ResNet18:
    return ResNet18(num_classes, res, channels, norm="instance", **kwargs)


@register_model("resnet18_bn", family="resnet", norm="batch")
def resnet18_bn(num_classes: int, res: int, channels: int = 3, **kwargs) -> ResNet18:
    return ResNet18(num_classes, res, channels, norm="batch", **kwargs)


@register_model("vgg11", family="vgg", norm="instance")
def vgg11(num_classes: int, res: int, channels: int = 3) -> VGG11:
    return VGG11(num_classes, res, channels, norm="instance")


@register_model("vgg11_bn", family="vgg", norm="batch")
def vgg11_bn(num_classes: int, res: int, channels: int = 3) -> VGG11:
    return VGG11(num_classes, res, channels, norm="batch")


@register_model("alexnet", family="alexnet", norm="none")
def alexnet(num_classes: int, res: int, channels: int = 3) -> AlexNet:
    return AlexNet(num_classes, res, channels)
