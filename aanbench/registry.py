"""``registry.toml``: named experiments, feature sets and weight files.

Two layers. The built-in registry ships inside the package
(``aanbench/registry.toml``; the checkout's top-level ``registry.toml`` is a
link to it), so an installed aanbench finds it from any directory. A user's
own file, named by ``--registry`` or ``$AANBENCH_REGISTRY``, ADDS to it: new
feature sets, new experiments (which may ``extends`` a built-in one and use
built-in feature sets), new weight files, and ``[defaults]`` that override
the built-in ones. It never redefines a built-in name, so ``feature-aan``
means the same thing in every results file. Loading validates both files;
an error names the file, the key and the problem.

What a user writes wins: a setting of experiment E on dataset D comes from,
most specific first, E's ``datasets.D``, E's own ``params`` (and top-level
``features``, ``protocol``, ``seed``), then the same two of the experiment E
extends, and so on (:meth:`Registry.resolve_settings` says where each came
from). Names are plain (:mod:`aanbench.names`); values are checked against
the model's declared types and ranges when a run is planned
(:func:`check_params`, :mod:`aanbench.paramspec`).
"""

from __future__ import annotations

import copy
import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from aanbench.contracts import TARGETS, AanbenchError

ENV_VAR = "AANBENCH_REGISTRY"
EXPERIMENT_KEYS = {"model", "description", "features", "params", "datasets", "extends", "protocol", "seed"}
DATASET_OVERRIDE_META = {"features", "protocol", "seed"}
PROTOCOLS = ("fixed", "leave-one-group-out")
BUILTIN = "built-in"


class RegistryError(AanbenchError):
    pass


def builtin_registry_path() -> Path:
    """The registry file shipped inside the installed package."""
    return Path(str(resources.files("aanbench").joinpath("registry.toml")))


def user_registry_path(explicit: str | Path | None = None) -> tuple[Path, str] | None:
    """The user's registry file and what named it (``--registry`` or the
    environment variable), or None."""
    if explicit:
        return Path(explicit), "--registry"
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env), f"${ENV_VAR}"
    return None


@dataclass(frozen=True)
class ExperimentConfig:
    """An experiment resolved for one dataset: what to train and how."""

    name: str
    model: str
    description: str
    feature_set: str
    features: tuple[str, ...]
    params: Mapping[str, Any]  # values may be per-target dicts
    protocol: str | None
    seed: int
    source: Path | None = None  # the registry file it came from
    sources: Mapping[str, str] = field(default_factory=dict)  # setting -> where its value came from

    def params_for(self, target: str) -> dict[str, Any]:
        """Parameters with per-target tables resolved for ``target``."""
        out = {}
        for k, v in self.params.items():
            if isinstance(v, dict):
                if target not in v:
                    raise RegistryError(f"experiment {self.name}: parameter {k!r} has no value for target {target!r}")
                out[k] = v[target]
            else:
                out[k] = v
        return out


@dataclass
class Registry:
    """The merged registry. ``path`` is the file loaded last (the user's file
    when one was given, else the built-in one); ``files`` lists every file in
    load order; ``origins`` maps each experiment and feature set to its file."""

    path: Path
    raw: dict[str, Any]  # merged "defaults" and "weights"
    feature_sets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)  # merged (extends resolved)
    files: list[Path] = field(default_factory=list)
    origins: dict[str, Path] = field(default_factory=dict)  # experiment name -> file
    feature_set_origins: dict[str, Path] = field(default_factory=dict)
    parents: dict[str, str] = field(default_factory=dict)  # experiment -> the experiment it extends
    builtin_path: Path | None = None
    definitions: dict[str, dict[str, Any]] = field(default_factory=dict)  # experiment -> its own table, as written

    @property
    def default_store(self) -> str:
        return str(self.raw.get("defaults", {}).get("store", "aanbench-store"))

    @property
    def default_seed(self) -> int:
        return int(self.raw.get("defaults", {}).get("seed", 0))

    def weights(self) -> dict[str, dict[str, Any]]:
        return dict(self.raw.get("weights", {}))

    def origin(self, experiment: str) -> str:
        """``"built-in"`` or the path of the user's file defining ``experiment``."""
        p = self.origins[experiment]
        return BUILTIN if p == self.builtin_path else str(p)

    def _known(self, name: str) -> None:
        if name not in self.experiments:
            known = ", ".join(sorted(self.experiments)) or "none"
            where = " + ".join(map(str, self.files))
            raise RegistryError(f"{where}: no experiment {name!r} (known: {known})")

    def chain(self, name: str) -> list[str]:
        """``name`` and the experiments it extends, most specific first."""
        self._known(name)
        out = [name]
        while out[-1] in self.parents:
            out.append(self.parents[out[-1]])
        return out

    def resolve_settings(self, name: str, dataset: str) -> dict[str, Setting]:
        """Every setting of ``name`` on ``dataset`` with its value and where it
        came from. Precedence, most specific first: the experiment's own
        ``datasets.<dataset>`` section, its own ``params`` (and top-level
        ``features``, ``protocol``, ``seed``, ``model``), then the same two of
        the experiment it extends, and so on up the chain; then
        ``[defaults] seed``. Keys: ``model``, ``description``, ``features``,
        ``protocol``, ``seed`` and each parameter (a per-target table merged
        target by target)."""
        out: dict[str, Setting] = {}
        seed_src = "[defaults] seed"
        out["seed"] = Setting(self.default_seed, seed_src)
        for exp in reversed(self.chain(name)):  # least specific first; later layers win
            table = self.definitions.get(exp, self.experiments[exp])
            origin = self.origin(exp)
            own = {k: v for k, v in table.items() if k in ("model", "description", "features", "protocol", "seed")}
            layers = [(f"experiments.{exp}", own),
                      (f"experiments.{exp}.params", dict(table.get("params", {}))),
                      (f"experiments.{exp}.datasets.{dataset}", dict(table.get("datasets", {}).get(dataset, {})))]
            for label, values in layers:
                for k, v in values.items():
                    prev = out.get(k)
                    if isinstance(v, dict) and prev is not None and isinstance(prev.value, dict):
                        v = {**prev.value, **v}
                    out[k] = Setting(copy.deepcopy(v), f"{label} ({origin})")
        return out

    def experiment(self, name: str, dataset: str) -> ExperimentConfig:
        """``name`` resolved for ``dataset`` (see :meth:`resolve_settings` for
        which setting wins)."""
        settings = self.resolve_settings(name, dataset)
        meta = {"model", "description", "features", "protocol", "seed"}
        fs = settings["features"].value
        return ExperimentConfig(
            name=name,
            model=settings["model"].value,
            description=settings["description"].value if "description" in settings else "",
            feature_set=fs,
            features=self.feature_sets[fs],
            params={k: s.value for k, s in settings.items() if k not in meta},
            protocol=settings["protocol"].value if "protocol" in settings else None,
            seed=int(settings["seed"].value),
            source=self.origins[name],
            sources={k: s.source for k, s in settings.items()},
        )


@dataclass(frozen=True)
class Setting:
    """One resolved setting: its value and where it came from
    (``experiments.NAME.datasets.D (FILE)``, ``experiments.NAME.params (built-in)``, ...)."""

    value: Any
    source: str


def _read(p: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{p}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise RegistryError(f"{p}: cannot read: {exc.strerror or exc}") from None


def load_registry(path: str | Path | None = None, *, builtin: bool = True) -> Registry:
    """The built-in registry plus the user's file (``path``, else
    ``$AANBENCH_REGISTRY``) when one is named. ``builtin=False`` loads the
    user's file alone (it must then be complete)."""
    base = builtin_registry_path()
    user = user_registry_path(path)
    if user is not None and not user[0].is_file():
        raise RegistryError(f"registry file not found: {user[0]} (named by {user[1]})")
    reg: Registry | None = None
    if builtin:
        if not base.is_file():
            raise RegistryError(f"built-in registry missing from the installed package: {base} (reinstall aanbench)")
        reg = validate(_read(base), base)
        reg.builtin_path = base
        if user is None or user[0].resolve() == base.resolve():
            return reg
    if user is None:
        raise RegistryError(f"registry file not found: no --registry or ${ENV_VAR} given")
    return validate(_read(user[0]), user[0], base=reg)


def _safe(path: Path, kind: str, name: str, key: str) -> None:
    from aanbench.names import SAFE_NAME, NAME_RULE

    if not SAFE_NAME.match(name) or len(name) > 200:
        raise _err(path, key, f"{kind} name {name!r} is not allowed (use {NAME_RULE})")


def _err(path: Path, key: str, problem: str) -> RegistryError:
    return RegistryError(f"{path}: {key}: {problem}")


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _check_value(path: Path, key: str, v: Any) -> None:
    if isinstance(v, dict):
        bad = [t for t in v if t not in TARGETS]
        if bad:
            raise _err(path, key, f"per-target table has unknown target(s) {bad}; targets are {list(TARGETS)}")
        for t, tv in v.items():
            _check_value(path, f"{key}.{t}", tv)
    elif not isinstance(v, (int, float, str, bool, list)):
        raise _err(path, key, f"unsupported value {v!r}")


def validate(raw: dict[str, Any], path: Path, base: Registry | None = None) -> Registry:
    """Check ``raw`` (the parsed file at ``path``) and return the registry it
    makes, on top of ``base`` (the built-in registry) when given: then the
    file may only add names, and may use ``base``'s feature sets and extend
    its experiments."""
    known_top = {"defaults", "feature_sets", "experiments", "weights"}
    for k in raw:
        if k not in known_top:
            raise _err(path, k, f"unknown section (expected one of {sorted(known_top)})")
    if base is None:
        reg = Registry(path=path, raw={"defaults": {}, "weights": {}})
    else:
        reg = copy.deepcopy(base)
        reg.path = path
    reg.files.append(path)

    def taken(kind: str, name: str, origins: Mapping[str, Path]) -> None:
        where = origins.get(name)
        if where is not None:
            hint = f'; name yours differently (an experiment may say extends = "{name}")' if kind == "experiments" else \
                "; name yours differently"
            raise _err(path, f"{kind}.{name}", f"already defined in {'the built-in registry ' if where == reg.builtin_path else ''}{where}{hint}")

    defaults = raw.get("defaults", {})
    if not isinstance(defaults, dict):
        raise _err(path, "defaults", "must be a table")
    reg.raw["defaults"] = {**reg.raw.get("defaults", {}), **defaults}

    fsets = raw.get("feature_sets", {})
    if not isinstance(fsets, dict) or (base is None and not fsets):
        raise _err(path, "feature_sets", "missing or empty")
    for name, value in fsets.items():
        _safe(path, "feature set", name, f"feature_sets.{name}")
        if not isinstance(value, list) or not value or not all(isinstance(x, str) and x for x in value):
            raise _err(path, f"feature_sets.{name}", "must be a non-empty list of extractor names")
        if len(set(value)) != len(value):
            raise _err(path, f"feature_sets.{name}", "names an extractor twice")
        taken("feature_sets", name, reg.feature_set_origins)
        reg.feature_sets[name] = tuple(value)
        reg.feature_set_origins[name] = path
    exps = raw.get("experiments", {})
    if not isinstance(exps, dict) or (base is None and not exps):
        raise _err(path, "experiments", "missing or empty")
    for name in exps:
        _safe(path, "experiment", name, f"experiments.{name}")
        taken("experiments", name, reg.origins)

    def resolve(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
        if name in seen:
            raise _err(path, f"experiments.{seen[-1]}.extends", f"cycle {' -> '.join(seen + (name,))}")
        if name not in exps:
            if seen and name in reg.experiments:  # extends an experiment of the built-in registry
                return copy.deepcopy(reg.experiments[name])
            raise _err(path, f"experiments.{seen[-1]}.extends",
                       f"no experiment {name!r}" + (" (here or built in)" if base is not None else ""))
        e = exps[name]
        if not isinstance(e, dict):
            raise _err(path, f"experiments.{name}", "must be a table")
        if "extends" in e:
            parent = e["extends"]
            if not isinstance(parent, str):
                raise _err(path, f"experiments.{name}.extends", "must be an experiment name")
            base_exp = resolve(parent, seen + (name,))
            return _deep_merge(base_exp, {k: v for k, v in e.items() if k != "extends"})
        return copy.deepcopy(e)

    for name in exps:
        e = resolve(name)
        key = f"experiments.{name}"
        for k in e:
            if k not in EXPERIMENT_KEYS:
                raise _err(path, f"{key}.{k}", f"unknown key (allowed: {sorted(EXPERIMENT_KEYS - {'extends'})})")
        for req in ("model", "features"):
            if not isinstance(e.get(req), str) or not e.get(req):
                raise _err(path, f"{key}.{req}", "missing (a string is required)")
        if e["features"] not in reg.feature_sets:
            raise _err(path, f"{key}.features", f"unknown feature set {e['features']!r} (known: {sorted(reg.feature_sets)})")
        if "protocol" in e and e["protocol"] not in PROTOCOLS:
            raise _err(path, f"{key}.protocol", f"must be one of {PROTOCOLS}")
        params = e.get("params", {})
        if not isinstance(params, dict):
            raise _err(path, f"{key}.params", "must be a table")
        for pk, pv in params.items():
            _check_value(path, f"{key}.params.{pk}", pv)
        dsets = e.get("datasets", {})
        if not isinstance(dsets, dict):
            raise _err(path, f"{key}.datasets", "must be a table of dataset names")
        for dname, over in dsets.items():
            dkey = f"{key}.datasets.{dname}"
            _safe(path, "dataset", dname, dkey)
            if not isinstance(over, dict):
                raise _err(path, dkey, "must be a table")
            for pk in ("model", "description", "params", "datasets", "extends"):
                if pk in over:
                    raise _err(path, f"{dkey}.{pk}", "not allowed in a dataset section (set it for the experiment)")
            for pk, pv in over.items():
                if pk == "features" and pv not in reg.feature_sets:
                    raise _err(path, f"{dkey}.features", f"unknown feature set {pv!r} (known: {sorted(reg.feature_sets)})")
                if pk == "protocol" and pv not in PROTOCOLS:
                    raise _err(path, f"{dkey}.protocol", f"must be one of {PROTOCOLS}")
                _check_value(path, f"{dkey}.{pk}", pv)
    for name in exps:  # registered only once every experiment of this file checked out
        reg.experiments[name] = resolve(name)
        reg.definitions[name] = copy.deepcopy(exps[name])
        reg.origins[name] = path
        if isinstance(exps[name].get("extends"), str):
            reg.parents[name] = exps[name]["extends"]
    weights = raw.get("weights", {})
    if not isinstance(weights, dict):
        raise _err(path, "weights", "must be a table of file names")
    for fname, w in weights.items():
        if not isinstance(w, dict):
            raise _err(path, f"weights.{fname}", "must be a table")
        for req in ("extractor", "sha256", "source"):
            if not isinstance(w.get(req), str) or not w.get(req):
                raise _err(path, f"weights.{fname}.{req}", "missing (a string is required)")
        if fname in reg.raw["weights"]:
            raise _err(path, f"weights.{fname}", "already defined in the built-in registry")
        reg.raw["weights"][fname] = w
    return reg


def require_labelled(dataset: Any, action: str = "train") -> None:
    """Refuse to train or evaluate on a dataset without labels (``files``):
    the one thing to do with it is apply a trained model."""
    targets = tuple(getattr(dataset, "targets", ()) or ())
    if not targets or getattr(dataset, "protocol", None) in (None, "", "none"):
        name = getattr(dataset, "name", "?")
        raise RegistryError(f"dataset {name!r} is unlabelled: nothing to {action}; "
                            f"use `aanbench predict MODEL --dataset {name}` with a trained model")


def check_params(exp: ExperimentConfig, allowed: Mapping[str, Any], path: Path | None = None,
                 specs: Mapping[str, Any] | None = None) -> None:
    """Refuse parameters the model does not know (a typo must not pass
    silently), and values outside their declared type and range (``specs``:
    :class:`aanbench.paramspec.Param` per key; keys without one are not
    range-checked). One line names the file, experiment, key, value, where the
    value was set and what is allowed."""
    from aanbench.paramspec import SEED, check_value

    where = path or exp.source or "registry"
    for k in exp.params:
        if k not in allowed:
            raise RegistryError(
                f"{where}: experiments.{exp.name}: model {exp.model!r} has no parameter {k!r} "
                f"(it takes: {', '.join(sorted(allowed))})"
            )
    checks = [("seed", exp.seed, SEED)] + [(k, v, (specs or {}).get(k)) for k, v in exp.params.items()]
    for k, v, spec in checks:
        if spec is None:
            continue
        problem = check_value(spec, v)
        if problem is not None:
            set_in = exp.sources.get(k)
            raise RegistryError(
                f"{where}: experiments.{exp.name}: {k} = {problem}; allowed: {spec.describe()}"
                + (f" (set in {set_in})" if set_in else "")
            )
