"""Lazy access to names that moved out of a plugin module (PEP 562).

The built-in plugin modules import without torch (every CLI call and every
worker loads all plugins, and importing torch costs seconds). Their
networks and torch helpers live in private modules; :func:`moved_names`
makes a module ``__getattr__`` that still serves those names from the old
place, importing the private module (and torch) on first use only.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def moved_names(module: str, moved: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``module`` that returns ``moved[name]``'s
    attribute ``name`` (``moved`` maps a name to the module now holding it,
    e.g. ``"aanbench_plugins._i3d_net"``); any other name raises
    ``AttributeError`` as usual, so ``getattr(module, name, default)`` and
    hook discovery never import torch."""

    def __getattr__(name: str) -> Any:
        target = moved.get(name)
        if target is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        return getattr(importlib.import_module(target), name)

    return __getattr__
