"""Networks, registered by name: the DD ConvNet family and the cross-architecture models.

Built-in model modules live in this package and register factories with :func:`register_model`; a
factory takes ``num_classes``, ``res`` (input side in pixels) and ``channels`` plus its own keywords.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from compdd.plugins import import_submodules
from compdd.registry import Registry

ModelFactory = Callable[..., nn.Module]


def _load(reg: Registry[ModelFactory]) -> None:
    import compdd.models as pkg

    import_submodules(pkg)


MODELS: Registry[ModelFactory] = Registry("model", _load)


def register_model(name: str, **meta: Any) -> Callable[[ModelFactory], ModelFactory]:
    return MODELS.register(name, **meta)


def list_models(pattern: str = "*") -> list[str]:
    return MODELS.names(pattern)


def create_model(name: str, num_classes: int, res: int, channels: int = 3, **kwargs: Any) -> nn.Module:
    """Build a registered model for ``res`` x ``res`` inputs with ``num_classes`` outputs."""
    return MODELS.get(name)(num_classes=num_classes, res=res, channels=channels, **kwargs)
