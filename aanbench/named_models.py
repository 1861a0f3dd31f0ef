"""Named models: trained model bundles shipped with aanbench, offered by name.

``aanbench models list`` shows them; ``--model NAME`` works wherever a model
file does (``curve``, ``predict``, ``models info``)::

    from aanbench.named_models import list_models, resolve_model

    [m.name for m in list_models()]          # ['aan-cognimuse', 'aan-cognimuse-audio', ...]
    r = resolve_model("aan-cognimuse")       # or a path: resolve_model("my.model")
    r.payload                                # as aanbench.modelfile.load_any returns it
    resolve_model("aan-cognimuse", require_weights=True, weights_dir="~/w")  # + the extractors' weights

The engine names no particular model: what exists is data, the index
``aanbench/data/models/models.toml`` (one table per name: bundle file,
summary, features in input order, the published checkpoint behind each
target; a ``[defaults]`` table for what they share: training data,
protocol, label range and units, licence, attribution), with the bundles,
their ``LICENSE`` and ``ATTRIBUTION.md`` beside it.

A named model's bundle holds one model per target (both read with
``torch.load(weights_only=True)``). The shipped ones were converted from the
AttendAffectNet authors' published checkpoints by the safe converter and are
checked against a fresh conversion by ``tests/test_named_models.py``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from aanbench.contracts import AanbenchError

MODELS_DIR = Path(__file__).resolve().parent / "data" / "models"
INDEX = MODELS_DIR / "models.toml"


@dataclass(frozen=True)
class NamedModel:
    """One named model of the index (see the module documentation)."""

    name: str
    file: str  # bundle file name in MODELS_DIR
    summary: str
    model: str  # model plugin name, e.g. feature-aan
    features: tuple[str, ...]  # extractor names, input order
    predicts: tuple[str, ...]  # targets, in the order of `sources`
    sources: Mapping[str, str]  # target -> the file it was converted from
    dataset: str  # dataset (plugin) name it was trained on
    dataset_version: str
    training_data: str
    protocol: str
    label_range: tuple[float, float]
    label_units: str
    standardised: str
    licence: str
    licence_file: str  # file name in MODELS_DIR
    attribution: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        """The bundle file."""
        return MODELS_DIR / self.file

    @property
    def licence_path(self) -> Path:
        return MODELS_DIR / self.licence_file

    def load(self) -> dict[str, Any]:
        """The bundle, as :func:`aanbench.modelfile.load_any` returns it."""
        from aanbench.modelfile import load_any

        if not self.path.is_file():
            raise AanbenchError(f"named model {self.name!r}: its file {self.path} is missing from this "
                                "installation (package data); reinstall aanbench")
        return load_any(self.path)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (``models list --json``)."""
        return {"name": self.name, "summary": self.summary, "model": self.model, "predicts": list(self.predicts),
                "features": list(self.features), "dataset": self.dataset, "dataset_version": self.dataset_version,
                "training_data": self.training_data, "protocol": self.protocol,
                "label_range": list(self.label_range), "label_units": self.label_units,
                "standardised": self.standardised, "licence": self.licence,
                "licence_file": str(self.licence_path), "attribution": self.attribution,
                "sources": dict(self.sources), "file": str(self.path)}


_FIELDS = ("file", "summary", "model", "features", "sources", "dataset", "dataset_version", "training_data",
           "protocol", "label_range", "label_units", "standardised", "licence", "licence_file", "attribution")


def read_index(path: str | Path = INDEX) -> dict[str, NamedModel]:
    """Parse a named-model index (TOML) into ``{name: NamedModel}``; a
    malformed entry is an error naming the file, the model and the field."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise AanbenchError(f"{path}: the named-model index is missing from this installation") from None
    except tomllib.TOMLDecodeError as exc:
        raise AanbenchError(f"{path}: not valid TOML ({exc})") from None
    defaults = doc.get("defaults", {})
    out: dict[str, NamedModel] = {}
    for name, entry in (doc.get("models") or {}).items():
        merged = {**defaults, **entry}
        missing = [k for k in _FIELDS if k not in merged]
        if missing:
            raise AanbenchError(f"{path}: model {name!r} lacks {', '.join(missing)}")
        sources = merged["sources"]
        if not isinstance(sources, dict) or not sources:
            raise AanbenchError(f"{path}: model {name!r}: sources must map each target to its source file")
        lo, hi = (float(v) for v in merged["label_range"])
        out[name] = NamedModel(
            name=name, file=str(merged["file"]), summary=str(merged["summary"]), model=str(merged["model"]),
            features=tuple(str(f) for f in merged["features"]), predicts=tuple(sources),
            sources=dict(sources), dataset=str(merged["dataset"]), dataset_version=str(merged["dataset_version"]),
            training_data=str(merged["training_data"]), protocol=str(merged["protocol"]), label_range=(lo, hi),
            label_units=str(merged["label_units"]), standardised=str(merged["standardised"]),
            licence=str(merged["licence"]), licence_file=str(merged["licence_file"]),
            attribution=str(merged["attribution"]),
            extra={k: v for k, v in merged.items() if k not in _FIELDS})
    return out


@lru_cache(maxsize=1)
def _index() -> dict[str, NamedModel]:
    return read_index(INDEX)


def list_models() -> list[NamedModel]:
    """Every named model, sorted by name (what ``aanbench models list`` shows)."""
    return [m for _, m in sorted(_index().items())]


def get_model(name: str) -> NamedModel:
    """The named model ``name``; an unknown name is an error listing the known ones."""
    models = _index()
    if name not in models:
        raise AanbenchError(f"no named model {name!r}; named models: {', '.join(sorted(models))} "
                            "(see `aanbench models list`)")
    return models[name]


def is_model_name(arg: str | Path) -> bool:
    return str(arg) in _index()


# --------------------------------------------------------------------------
# Resolving a --model argument


@dataclass
class ResolvedModel:
    """A ``--model`` argument, loaded: ``payload`` in the layout of
    :func:`aanbench.modelfile.load_any`; ``source`` what to show the user
    (the path, or ``NAME (<bundle path>)``); ``named`` the named model, if it
    was one."""

    payload: dict[str, Any]
    source: str
    named: NamedModel | None = None

    @property
    def targets(self) -> list[str]:
        return list(self.payload["targets"])


def resolve_model(
    arg: str | Path,
    *,
    require_weights: bool = False,
    weights_dir: str | Path | None = None,
    features: Sequence[str] | None = None,
    plugins: Any = None,
) -> ResolvedModel:
    """Load the model a ``--model`` argument names: an existing file (a model
    bundle or a single-target model file) wins; else a named model; else an
    error that says it is neither (listing the named models).

    ``require_weights``: also check that the pretrained weight file of every
    extractor the model needs is in the weights folder (``weights_dir``, else
    ``$AANBENCH_WEIGHTS``, else the default), raising one error naming each
    missing file (see :func:`check_weights`). ``features`` narrows the check
    to these extractors (e.g. only those whose arrays a store still lacks).
    """
    path = Path(str(arg)).expanduser()
    if path.is_file():
        from aanbench.modelfile import load_any

        resolved = ResolvedModel(load_any(path), str(arg))
    elif is_model_name(arg):
        nm = get_model(str(arg))
        resolved = ResolvedModel(nm.load(), f"{nm.name} ({nm.path})", nm)
    elif path.exists():
        raise AanbenchError(f"{arg}: not a model file (a folder?)")
    else:
        raise AanbenchError(f"{arg}: no such model file, and not a named model "
                            f"({', '.join(m.name for m in list_models())}; see `aanbench models list`)")
    if require_weights:
        check_weights(resolved.payload["features"] if features is None else features, weights_dir=weights_dir,
                      plugins=plugins, needed_by=f"model {resolved.named.name if resolved.named else arg}")
    return resolved


def resolve_models(args: Iterable[str | Path], **kwargs: Any) -> list[ResolvedModel]:
    """:func:`resolve_model` for each argument (same options); two models
    predicting the same target are refused (one model per target)."""
    out = [resolve_model(a, **kwargs) for a in args]
    if not out:
        raise AanbenchError("a model is needed (--model FILE or NAME; see `aanbench models list`)")
    seen: dict[str, str] = {}
    for r in out:
        for t in r.targets:
            if t in seen:
                raise AanbenchError(f"{r.source} and {seen[t]} both predict {t}; give one model per target")
            seen[t] = r.source
    return out


def weight_requirements(features: Iterable[str], plugins: Any = None) -> list:
    """The weight files (:class:`aanbench.weights.Requirement`) the
    extractors ``features`` need; an extractor that is not installed is an
    error naming it."""
    from aanbench.weights import requirements

    if plugins is None:
        from aanbench.plugin_manager import get_plugins

        plugins = get_plugins()
    names = list(dict.fromkeys(features))
    absent = [n for n in names if n not in plugins.extractors]
    if absent:
        raise AanbenchError(f"extractor{'s' if len(absent) > 1 else ''} {', '.join(absent)} "
                            f"{'are' if len(absent) > 1 else 'is'} not installed (see `aanbench plugins`)")
    return requirements([plugins.extractors[n] for n in names])


def check_weights(features: Iterable[str], *, weights_dir: str | Path | None = None, plugins: Any = None,
                  needed_by: str = "this model") -> dict[str, Path]:
    """Verified paths of the weight files the extractors ``features`` need;
    otherwise one :class:`AanbenchError` naming each missing or differing
    file with its SHA-256, where to put it and where to get it
    (:func:`aanbench.weights.require`)."""
    from aanbench.weights import require, weights_dir as resolve_dir

    return require(weight_requirements(features, plugins), resolve_dir(weights_dir), needed_by=needed_by)


# --------------------------------------------------------------------------
# Building a named bundle from single-target model files


def bundle_from_model_files(payloads: Sequence[Mapping[str, Any]], nm: NamedModel) -> dict[str, Any]:
    """One model bundle (``aanbench.bundle/1``) from single-target model
    payloads (``aanbench.model/1``, e.g. what ``models import-aan`` writes),
    one per target of ``nm``, in ``nm.predicts`` order. They must share the
    model, features and state layout; their provenance is kept per target.
    """
    from aanbench.modelfile import BUNDLE_FORMAT, FORMAT

    if [p.get("target") for p in payloads] != list(nm.predicts):
        raise AanbenchError(f"{nm.name}: expected one model file per target {list(nm.predicts)}, got "
                            f"{[p.get('target') for p in payloads]}")
    for p in payloads:
        if p.get("format") != FORMAT:
            raise AanbenchError(f"{nm.name}: {p.get('target')}: not a single-target model payload ({FORMAT})")
        if p["model"] != nm.model or list(p["features"]) != list(nm.features):
            raise AanbenchError(f"{nm.name}: {p['target']}: model {p['model']} on {list(p['features'])}, "
                                f"the index says {nm.model} on {list(nm.features)}")
    dims = [list(p["state"]["config"].get("dims") or []) for p in payloads]
    if any(d != dims[0] for d in dims):
        raise AanbenchError(f"{nm.name}: the targets' models take different input sizes {dims}")
    return {
        "format": BUNDLE_FORMAT,
        "model": nm.model,
        "model_version": "",
        "input": "rows",
        "targets": {p["target"]: {"state": p["state"], "standardize": p.get("standardize")} for p in payloads},
        "features": list(nm.features),
        "feature_keys": [],
        "dims": [int(d) for d in dims[0]],
        "samples": {"length": 1, "stride": 1, "scope": "group", "label": "last", "start": "drop"},
        "experiment": {"name": nm.name, "description": nm.summary, "feature_set": "", "protocol": nm.protocol,
                       "registry": ""},
        "dataset": {"name": nm.dataset, "version": nm.dataset_version, "config": {}, "group": "",
                    "items_sha256": "", "label_range": [float(v) for v in nm.label_range],
                    "label_units": nm.label_units},
        "provenance": {"named_model": nm.name, "training_data": nm.training_data, "licence": nm.licence,
                       "attribution": nm.attribution,
                       "targets": {p["target"]: dict(p.get("provenance") or {}) for p in payloads}},
        "seed": None,
    }
