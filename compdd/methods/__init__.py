"""Distillation methods: the interface every method implements, and the method registry.

A method turns the real training split of a subset (:class:`compdd.data.SubsetTensors`) and an IPC
into a :class:`compdd.distilled.DistilledSet`. Built-in methods are the modules of this package and
register themselves on import; third-party ones (like ``edf``) register through the entry-point group
``compdd.methods`` with a value pointing at a :class:`Method` subclass.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from compdd.plugins import import_submodules, load_entry_points
from compdd.registry import Registry

if TYPE_CHECKING:
    import torch

    from compdd.data import SubsetTensors
    from compdd.distilled import DistilledSet

ENTRY_POINT_GROUP = "compdd.methods"


class ConfigError(ValueError):
    """A method or protocol was given a config key or value it does not accept."""


class MethodConfig(BaseModel):
    """Base of every method's config: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Method(ABC):
    """A dataset-distillation method.

    Subclasses set ``name``, a ``Config`` (a :class:`MethodConfig` subclass holding every
    hyper-parameter with its default) and implement :meth:`distill`.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    description: ClassVar[str] = ""

    def __init__(self, **config: Any):
        try:
            self.config = self.Config(**config)
        except ValidationError as e:
            known = ", ".join(self.Config.model_fields) or "(none)"
            raise ConfigError(f"bad config for method {self.name!r}: {e.errors()[0]['loc']}: "
                              f"{e.errors()[0]['msg']}; known keys: {known}") from None

    @classmethod
    def preset(cls, subset: str, ipc: int, res: int) -> dict[str, Any]:
        """Hyper-parameters this method ships for (subset, ipc, res), e.g. from its YAML tables.

        User config given to :func:`create_method` overrides these key by key.
        """
        return {}

    @abstractmethod
    def distill(self, train: SubsetTensors, ipc: int, *, seed: int = 0,
                device: str | torch.device = "cpu", progress: bool = True) -> DistilledSet:
        """Distil ``ipc`` images per class from ``train``. Must be deterministic in ``seed`` on a device."""

    @classmethod
    def has_analysis(cls) -> bool:
        """Whether this method overrides :meth:`write_analysis` (``compdd evaluate --analysis``)."""
        return cls.write_analysis is not Method.write_analysis

    def write_analysis(self, distilled: DistilledSet, train: SubsetTensors, folder: Path) -> list[Path]:
        """Write method-specific analysis files about ``distilled`` into ``folder``; return their paths.

        Optional: methods without analysis outputs keep this default, which refuses.
        """
        raise ConfigError(f"method {self.name!r} has no analysis outputs; drop --analysis")


def _load(reg: Registry[type[Method]]) -> None:
    import compdd.methods as pkg

    import_submodules(pkg)
    for name, obj in load_entry_points(ENTRY_POINT_GROUP).items():
        if not (isinstance(obj, type) and issubclass(obj, Method)):
            continue
        reg.add(name, obj, replace=True, origin="entry-point", description=obj.description)


METHODS: Registry[type[Method]] = Registry("method", _load)


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator for built-in methods: registers ``cls`` under ``cls.name``."""
    return METHODS.add(cls.name, cls, origin="builtin", description=cls.description)


def list_methods(pattern: str = "*") -> list[str]:
    return METHODS.names(pattern)


def create_method(name: str, *, subset: str | None = None, ipc: int | None = None, res: int | None = None,
                  **config: Any) -> Method:
    """Build a method by name; ``config`` keys are validated against the method's ``Config``.

    Given ``subset``, ``ipc`` and ``res``, the method's shipped :meth:`Method.preset` for them is applied
    first and ``config`` overrides it.
    """
    cls = METHODS.get(name)
    if subset is not None and ipc is not None and res is not None:
        config = {**cls.preset(subset, ipc, res), **config}
    return cls(**config)
