"""The DD ConvNet family (MTT/FTD/DATM/EDF ``ConvNet``, ``ConvNetD1``..``ConvNetD8``).

``depth`` blocks of conv3x3(width) -> norm -> ReLU -> 2x2 pool, then one linear layer on the flattened
final map. Layer order and parameter order are those of the public code (``features.0.weight`` ...,
``classifier.weight``), so flat parameter vectors line up with expert trajectories saved by it.

Registered names: ``convnet`` (generic: ``depth=3, width=128, norm="instance", pooling="avg"``),
``convnet_d1``..``convnet_d8`` (instance norm), ``convnet_dK_bn`` (batch norm), ``convnet_dK_nn`` (no norm),
and narrow instance-norm variants ``convnet_dK_w32`` / ``convnet_dK_w64`` (width 32 / 64 instead of 128) for
trajectory matching on a CPU, where the unrolled student dominates the cost.
"""

from __future__ import annotations

from torch import nn

from compdd.models import register_model
from compdd.models._common import PooledLinear, SplitNet, norm_layer

POOLINGS = ("avg", "max", "none")


class ConvNet(SplitNet):
    def __init__(self, num_classes: int, res: int, channels: int = 3, depth: int = 3, width: int = 128,
                 norm: str = "instance", pooling: str = "avg"):
        if not 1 <= depth <= 8:
            raise ValueError(f"ConvNet depth must be in 1..8, got {depth}")
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        side = res
        layers: list[nn.Module] = []
        in_ch = channels
        for _ in range(depth):
            layers += [nn.Conv2d(in_ch, width, kernel_size=3, padding=1), norm_layer(norm, width), nn.ReLU()]
            if pooling != "none":
                layers.append(nn.AvgPool2d(2, 2) if pooling == "avg" else nn.MaxPool2d(2, 2))
                side //= 2
            in_ch = width
        if side < 1:
            raise ValueError(f"ConvNet depth {depth} pools a {res} px input down to nothing; "
                             f"use res >= {2 ** depth} or a smaller depth")
        super().__init__(nn.Sequential(*layers), PooledLinear(width * side * side, num_classes), res)
        self.depth, self.width, self.norm, self.pooling = depth, width, norm, pooling


@register_model("convnet", family="convnet")
def convnet(num_classes: int, res: int, channels: int = 3, **kwargs) -> ConvNet:
    return ConvNet(num_classes, res, channels, **kwargs)


def _register_named(depth: int, norm: str, suffix: str, width: int = 128) -> None:
    def factory(num_classes: int, res: int, channels: int = 3, **kwargs) -> ConvNet:
        return ConvNet(num_classes, res, channels, depth=depth, norm=norm, **{"width": width, **kwargs})

    factory.__name__ = f"convnet_d{depth}{suffix}"
    register_model(factory.__name__, family="convnet", depth=depth, norm=norm, width=width)(factory)


for _depth in range(1, 9):
    for _norm, _suffix in (("instance", ""), ("batch", "_bn"), ("none", "_nn")):
        _register_named(_depth, _norm, _suffix)
    for _width in (32, 64):
        _register_named(_depth, "instance", f"_w{_width}", _width)
