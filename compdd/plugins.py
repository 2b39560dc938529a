"""Discovery of built-in and third-party components.

Built-ins are the modules of a package (``compdd.methods``, ``compdd.models``, ``compdd.cli``): each
registers itself when imported, so adding a file is all it takes. Third-party methods come through the
``compdd.methods`` entry-point group (``name = "module:factory"``).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from importlib.metadata import entry_points
from types import ModuleType

log = logging.getLogger(__name__)


def import_submodules(package: ModuleType) -> list[ModuleType]:
    """Import every direct submodule (and subpackage) of ``package``, in name order."""
    mods = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            mods.append(importlib.import_module(f"{package.__name__}.{info.name}"))
    return mods


def load_entry_points(group: str) -> dict[str, object]:
    """Load every entry point of ``group``; a broken plugin is logged and skipped, not fatal."""
    out: dict[str, object] = {}
    for ep in entry_points(group=group):
        try:
            out[ep.name] = ep.load()
        except Exception as e:  # a third-party import error must not break compdd itself
            log.warning("could not load %s entry point %r (%s): %s", group, ep.name, ep.value, e)
    return out
