"""Where extraction work runs, by name: ``local`` (this machine) and ``ray``
(a local or existing Ray cluster).

A backend is any object with a ``name`` and a
``run(job, units, on_result)`` method (:class:`aanbench.extraction_job.Backend`).
The table maps a name to the module and class that build it, so importing
this package imports neither Ray nor any backend it does not use;
:func:`register_backend` adds one from code.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from aanbench.contracts import AanbenchError

# name -> "module:Class", imported on first use
BACKENDS: dict[str, str] = {
    "local": "aanbench.backends.local:LocalBackend",
    "ray": "aanbench.backends.ray:RayBackend",
}
_FACTORIES: dict[str, Callable[..., Any]] = {}


def register_backend(name: str, factory: Callable[..., Any]) -> None:
    """Make a backend available to ``aanbench extract --backend NAME``."""
    _FACTORIES[name] = factory


def backend_names() -> list[str]:
    return sorted(set(BACKENDS) | set(_FACTORIES))


def get_backend(name: str, **options: Any):
    """Build the backend ``name`` with ``options`` (e.g. ``workers``)."""
    factory = _FACTORIES.get(name)
    if factory is None:
        target = BACKENDS.get(name)
        if target is None:
            raise AanbenchError(f"unknown backend {name!r} (known: {', '.join(backend_names())})")
        module, cls = target.split(":")
        try:
            factory = getattr(importlib.import_module(module), cls)
        except ImportError as exc:
            raise AanbenchError(f"the {name} backend is not available: {exc}") from None
    return factory(**options)
