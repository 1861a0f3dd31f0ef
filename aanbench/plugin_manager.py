"""One plugin manager for the whole program.

Every plugin, built-in or third-party, is found through the ``aanbench``
entry-point group. A plugin that fails to import is recorded with its error
and skipped; the rest keep working.

``AANBENCH_PLUGINS`` (comma-separated entry-point names) restricts which
plugins load, so tests and scripts can stay hermetic; ``AANBENCH_PLUGINS=``
(empty) loads none. ``AANBENCH_DISABLE_PLUGINS`` names plugins to skip.
"""

from __future__ import annotations

import importlib
import os
import threading
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from aanbench import hookspecs
from aanbench.contracts import AanbenchError, Dataset, Extractor, ModelSpec

BUILTIN_DIST = "aanbench"
GROUP = "aanbench"


@dataclass
class PluginRecord:
    """One entry point: where it came from and whether it loaded."""

    name: str
    module: str
    distribution: str
    version: str
    error: str | None = None
    provides: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)

    @property
    def origin(self) -> str:
        return "built-in" if self.distribution == BUILTIN_DIST else self.distribution


class Plugins:
    """The loaded plugins and what they provide, by kind and name."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("aanbench")
        self.pm.add_hookspecs(hookspecs)
        self.records: list[PluginRecord] = []
        self.extractors: dict[str, Extractor] = {}
        self.datasets: dict[str, Dataset] = {}
        self.models: dict[str, ModelSpec] = {}
        self._owner: dict[tuple[str, str], str] = {}

    # ---------------------------------------------------------------- load
    def load_entry_points(self) -> None:
        wanted = _env_list("AANBENCH_PLUGINS")
        skipped = set(_env_list("AANBENCH_DISABLE_PLUGINS") or [])
        seen: set[str] = set()
        # a distribution without a name (metadata half written by a pip running now, or left by one
        # interrupted) sorts first as "", as one without a distribution does, instead of failing every command
        eps = sorted(metadata.entry_points(group=GROUP), key=lambda e: ((e.dist.name if e.dist else "") or "", e.name))
        for ep in eps:
            if ep.name in seen or ep.name in skipped:
                continue
            if wanted is not None and ep.name not in wanted:
                continue
            seen.add(ep.name)
            dist = (ep.dist.name if ep.dist is not None else None) or "?"
            version = (ep.dist.version if ep.dist is not None else None) or "?"
            rec = PluginRecord(name=ep.name, module=ep.value, distribution=dist, version=version)
            self.records.append(rec)
            try:
                obj = ep.load()
                self.register(obj, rec)
            except Exception as exc:  # a broken plugin must not break the CLI
                rec.error = f"{type(exc).__name__}: {exc}"

    def register(self, obj: Any, record: PluginRecord | None = None) -> None:
        """Register a plugin object (module or instance) and index what it provides."""
        if record is None:
            name = getattr(obj, "__name__", type(obj).__name__)
            record = PluginRecord(name=name, module=name, distribution="(registered in code)", version="")
            self.records.append(record)
        self.pm.register(obj, name=record.name)
        try:
            self._index(obj, record)
        except Exception:
            self.pm.unregister(obj)
            raise

    def _index(self, obj: Any, rec: PluginRecord) -> None:
        for kind, hook, table, cls in (
            ("extractor", "aanbench_extractors", self.extractors, Extractor),
            ("dataset", "aanbench_datasets", self.datasets, Dataset),
            ("model", "aanbench_models", self.models, ModelSpec),
        ):
            impl = getattr(obj, hook, None)
            if impl is None:
                continue
            for thing in impl() or []:
                if not isinstance(thing, cls):
                    raise TypeError(f"{hook} returned {type(thing).__name__}, expected {cls.__name__}")
                name = thing.name
                if not name:
                    raise TypeError(f"{hook} returned a {kind} without a name")
                if name in table:
                    other = self._owner[(kind, name)]
                    raise AanbenchError(f"{kind} {name!r} is provided by both {other!r} and {rec.name!r}")
                table[name] = thing
                self._owner[(kind, name)] = rec.name
                rec.provides.append((kind, name))
        if getattr(obj, "aanbench_commands", None) is not None:
            rec.provides.append(("commands", rec.name))

    # ----------------------------------------------------------- look up
    def extractor(self, name: str) -> Extractor:
        return _lookup(self.extractors, name, "extractor", "aanbench plugins")

    def dataset(self, name: str) -> Dataset:
        return _lookup(self.datasets, name, "dataset", "aanbench datasets")

    def model(self, name: str) -> ModelSpec:
        return _lookup(self.models, name, "model", "aanbench plugins")

    def version_of(self, kind: str, name: str) -> str:
        owner = self._owner.get((kind, name))
        for rec in self.records:
            if rec.name == owner:
                return rec.version
        return ""

    def rows(self) -> list[dict[str, str]]:
        """One row per provided thing (and per broken plugin), for listings."""
        out: list[dict[str, str]] = []
        for rec in self.records:
            if rec.error:
                out.append({"kind": "error", "name": rec.name, "version": rec.version,
                            "origin": rec.origin, "plugin": rec.name, "error": rec.error})
                continue
            for kind, name in rec.provides:
                if kind == "commands":  # CLI commands only: listed under the plugin's name
                    out.append({"kind": kind, "name": name, "version": rec.version,
                                "origin": rec.origin, "plugin": rec.name, "error": ""})
                    continue
                table = {"extractor": self.extractors, "dataset": self.datasets, "model": self.models}[kind]
                version = getattr(table[name], "version", "") or rec.version
                out.append({"kind": kind, "name": name, "version": str(version),
                            "origin": rec.origin, "plugin": rec.name, "error": ""})
        return out


def _lookup(table: dict, name: str, kind: str, hint: str):
    try:
        return table[name]
    except KeyError:
        known = ", ".join(sorted(table)) or "none"
        raise AanbenchError(f"unknown {kind} {name!r} (installed: {known}; see `{hint}`)") from None


def _env_list(var: str) -> list[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return [p.strip() for p in raw.split(",") if p.strip()]


_lock = threading.Lock()
_plugins: Plugins | None = None


def get_plugins(reload: bool = False) -> Plugins:
    """The process-wide :class:`Plugins`, loaded on first use."""
    global _plugins
    with _lock:
        if _plugins is None or reload:
            importlib.invalidate_caches()
            p = Plugins()
            p.load_entry_points()
            _plugins = p
        return _plugins
