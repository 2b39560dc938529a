"""Option parsing shared by several commands (private: not a command module)."""

from __future__ import annotations

from typing import Any

import click


def parse_sets(items: tuple[str, ...]) -> dict[str, Any]:
    """``--set key=value`` pairs to a dict; values are parsed as YAML scalars (``20`` -> int, ``true`` -> bool)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r}: use key=value, e.g. --set syn_steps=20", param_hint="--set")
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else raw
    return out
