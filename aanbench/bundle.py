"""The model bundle as a typed document: what ``aanbench train`` writes and
``predict``, ``curve`` and ``models info`` read.

:class:`ModelBundle` holds every target of one experiment on one dataset
(:class:`TargetModel`: the model's state, its standardiser, parameters,
settings, fit summary), the features and store keys it was trained on, the
windows, and where it came from. :meth:`ModelBundle.to_payload` gives the
``aanbench.bundle/1`` layout (see :mod:`aanbench.modelfile`, which writes
and reads the files); :meth:`ModelBundle.from_payload` reads it back, and
also every single-target model file aanbench has written
(``aanbench.model/1``: by ``run --save-models`` and ``models import-aan``,
with or without the ``input``/``samples``/``dims`` keys the first version
lacked), as a bundle of one target. :meth:`ModelBundle.to_model_payload`
writes a one-target bundle in that single-target layout.

A newer format (``aanbench.bundle/2``, ...) is refused with an error naming
the file. Keys this version does not know are kept (``extra``) and written
back unchanged.

Both classes are also read-only mappings of their payload keys
(``bundle["targets"]["valence"]["fit"]``), for code written against the
payload dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from aanbench.contracts import AanbenchError, SequenceSpec
from aanbench.documents import PayloadView, same_payload
from aanbench.features import Standardizer

BUNDLE_FORMAT = "aanbench.bundle/1"
MODEL_FORMAT = "aanbench.model/1"
BUNDLE_REQUIRED = ("format", "model", "targets", "features", "samples")
MODEL_REQUIRED = ("format", "model", "target", "features", "state")
# The windows of a single-target file written before files recorded them: single rows.
ROWS_SAMPLES = {"length": 1, "stride": 1, "scope": "group", "label": "last", "start": "drop"}

# What a model file may declare (checked before anything is allocated from it).
INVALID = "not a valid aanbench model"
MAX_FEATURES = 64  # feature arrays a model reads
MAX_DIM = 1 << 20  # columns of one feature array
MAX_TARGETS = 64
MAX_NAME = 200  # characters of a model, target or feature name
MAX_STATE_DEPTH = 16  # nesting of a model's state


def invalid(where: str, why: str) -> AanbenchError:
    """The error for a model file that fails its checks: ``WHERE: not a valid
    aanbench model: WHY`` (exit 2)."""
    return AanbenchError(f"{where}: {INVALID}: {why}")


def _is_int(v: Any) -> bool:
    import numbers

    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _name(v: Any, what: str, where: str) -> str:
    if not isinstance(v, str) or not v or len(v) > MAX_NAME:
        raise invalid(where, f"{what} must be a non-empty name of at most {MAX_NAME} characters, not "
                             f"{_show(v)}")
    return v


def _show(v: Any) -> str:
    """A value for a message: short, its type when it is not plain."""
    if isinstance(v, (str, int, float, bool)) or v is None:
        text = repr(v)
        return text if len(text) <= 60 else text[:57] + "..."
    return f"a {type(v).__name__}"


def _mapping_or_none(v: Any, what: str, where: str) -> dict[str, Any] | None:
    if v is None:
        return None
    if not isinstance(v, Mapping):
        raise invalid(where, f"{what} must be a table, not {_show(v)}")
    return dict(v)


def _names(v: Any, what: str, where: str, *, empty_ok: bool = False, none_ok: bool = False) -> list[str]:
    """A list of names; ``empty_ok``: names may be empty strings (and the list
    empty); ``none_ok``: the list may be empty (a model that reads no features)."""
    if not isinstance(v, (list, tuple)):
        raise invalid(where, f"{what} must be a list of names, not {_show(v)}")
    if not v and not (empty_ok or none_ok):
        raise invalid(where, f"{what} is empty")
    if len(v) > MAX_FEATURES:
        raise invalid(where, f"{what} lists {len(v)} entries (at most {MAX_FEATURES})")
    for x in v:
        if not isinstance(x, str) or len(x) > MAX_NAME or (not x and not empty_ok):
            raise invalid(where, f"{what} holds {_show(x)}, not a name")
    return list(v)


def _dims(v: Any, n_features: int, where: str) -> list[int]:
    if v is None:
        return []
    if not isinstance(v, (list, tuple)):
        raise invalid(where, f"dims must be a list of integers, not {_show(v)}")
    if v and len(v) != n_features:
        raise invalid(where, f"dims lists {len(v)} sizes for {n_features} feature(s)")
    for d in v:
        if not _is_int(d) or not 1 <= int(d) <= MAX_DIM:
            raise invalid(where, f"dims holds {_show(d)}; each must be an integer from 1 to {MAX_DIM}")
    return [int(d) for d in v]


def _vector(v: Any, what: str, dim: int | None, where: str) -> Any:
    import numpy as np
    import torch

    if isinstance(v, torch.Tensor):
        if v.is_complex() or not (v.is_floating_point() or v.dtype in (torch.int32, torch.int64)):
            raise invalid(where, f"{what} is a {v.dtype} tensor, not real numbers")
        shape = tuple(v.shape)
    elif isinstance(v, np.ndarray):
        if v.dtype.kind not in "fiu":
            raise invalid(where, f"{what} is a {v.dtype} array, not real numbers")
        shape = v.shape
    elif isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        shape = (len(v),)
    else:
        raise invalid(where, f"{what} must be a vector of numbers, not {_show(v)}")
    if len(shape) != 1 or (dim is not None and shape[0] != dim) or not (1 if dim != 0 else 0) <= shape[0] <= MAX_DIM:
        raise invalid(where, f"{what} has shape {list(shape)}" + (f", expected [{dim}]" if dim is not None else ""))
    arr = np.asarray(v, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise invalid(where, f"{what} holds values that are not finite")
    return arr


def _check_standardize(sd: Any, dims: list[int], n_features: int, where: str, target: str) -> None:
    if sd is None:
        return
    if not isinstance(sd, Mapping) or not {"mean", "std"} <= set(sd):
        raise invalid(where, f"targets.{target}.standardize must be a table with mean and std, not {_show(sd)}")
    for part in ("mean", "std"):
        vs = sd[part]
        if not isinstance(vs, (list, tuple)) or len(vs) != n_features:
            raise invalid(where, f"targets.{target}.standardize.{part} must list one vector per feature "
                                 f"({n_features}), not {_show(vs) if not isinstance(vs, (list, tuple)) else len(vs)}")
        for k, v in enumerate(vs):
            arr = _vector(v, f"targets.{target}.standardize.{part}[{k}]", dims[k] if dims else None, where)
            if part == "std" and not (arr > 0).all():
                raise invalid(where, f"targets.{target}.standardize.std[{k}] holds values that are not positive")


def _check_state(state: Any, where: str, target: str, dims: list[int]) -> None:
    """The state is plain containers, numbers, strings and real tensors; a
    ``config.dims`` it declares (torch models) matches the file's ``dims``."""
    import numpy as np
    import torch

    if not isinstance(state, Mapping):
        raise invalid(where, f"targets.{target}.state must be a table, not {_show(state)}")
    todo = [(f"targets.{target}.state", state, 0)]
    while todo:
        path, v, depth = todo.pop()
        if depth > MAX_STATE_DEPTH:
            raise invalid(where, f"{path} is nested deeper than {MAX_STATE_DEPTH} levels")
        if isinstance(v, Mapping):
            for k, x in v.items():
                if not isinstance(k, (str, int)):
                    raise invalid(where, f"{path} has a key of type {type(k).__name__}")
                todo.append((f"{path}.{k}", x, depth + 1))
        elif isinstance(v, (list, tuple)):
            todo.extend((f"{path}[{i}]", x, depth + 1) for i, x in enumerate(v))
        elif isinstance(v, torch.Tensor):
            if v.is_complex() or v.dtype in (torch.quint8, torch.qint8, torch.qint32):
                raise invalid(where, f"{path} is a {v.dtype} tensor")
        elif not (v is None or isinstance(v, (str, bool, int, float, np.ndarray, np.generic))):
            raise invalid(where, f"{path} holds {_show(v)}")
    cfg = state.get("config")
    if dims and isinstance(cfg, Mapping) and "dims" in cfg:
        got = cfg["dims"]
        if not isinstance(got, (list, tuple)) or [int(d) if _is_int(d) else d for d in got] != list(dims):
            raise invalid(where, f"targets.{target}.state.config.dims {_show(got) if not isinstance(got, (list, tuple)) else list(got)} "
                                 f"differ from the file's dims {list(dims)}")


def _check_common(p: Mapping[str, Any], where: str) -> tuple[list[str], list[int]]:
    """The fields both layouts share: model, features, dims, input, samples, seed."""
    _name(p["model"], "model", where)
    features = _names(p["features"], "features", where, none_ok=True)  # [] : a model that reads none (mean)
    if not features and list(p.get("dims") or []) in ([], [0]):
        dims = list(p.get("dims") or [])  # its one (n, 0) input, as aanbench.features.no_features makes it
    else:
        dims = _dims(p.get("dims"), len(features), where)
    inp = p.get("input")
    if inp is not None and inp not in ("rows", "sequences"):
        raise invalid(where, f"input must be rows or sequences, not {_show(inp)}")
    samples = p.get("samples")
    if samples is not None:
        if not isinstance(samples, Mapping):
            raise invalid(where, f"samples must be a table, not {_show(samples)}")
        from aanbench.paramspec import MAX_SEQUENCE_ROWS

        for k in ("length", "stride"):
            if k in samples and (not _is_int(samples[k]) or not 1 <= int(samples[k]) <= MAX_SEQUENCE_ROWS):
                raise invalid(where, f"samples.{k} = {_show(samples[k])}; must be an integer from 1 to "
                                     f"{MAX_SEQUENCE_ROWS}")
        for k in ("scope", "label", "start"):
            if k in samples and not isinstance(samples[k], str):
                raise invalid(where, f"samples.{k} must be a name, not {_show(samples[k])}")
    for k in ("model_version", "command"):
        v = p.get(k)
        if v is not None and (not isinstance(v, (str, int)) or isinstance(v, bool)):
            raise invalid(where, f"{k} must be text, not {_show(v)}")
    return features, dims


@dataclass(eq=False)
class TargetModel(PayloadView):
    """One target's trained model in a bundle: ``state`` (what
    :meth:`aanbench.contracts.Model.state` returned, restored by the model
    plugin's ``restore``), the standardiser fit on its fitting rows (``None``:
    the model takes the stored features as they are, e.g. a converted
    published checkpoint), and what ``train`` recorded about the fit."""

    state: dict[str, Any]
    standardize: Standardizer | None = None
    params: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None
    fit: dict[str, Any] | None = None

    _KEYS = ("state", "standardize", "params", "settings", "fit")
    _ALWAYS = ("state", "standardize")

    def __eq__(self, other: object) -> bool:  # by value; tensors and arrays too
        if not isinstance(other, TargetModel):
            return NotImplemented
        return same_payload(self.to_payload(), other.to_payload())

    def _payload_value(self, key: str) -> Any:
        if key == "standardize":
            return None if self.standardize is None else self.standardize.to_payload()
        return getattr(self, key)

    def scaler(self, dims: list[int]) -> Standardizer:
        """The standardiser to apply (identity when the model takes raw features)."""
        return self.standardize if self.standardize is not None else Standardizer.identity(dims)

    def to_payload(self) -> dict[str, Any]:
        return {k: self._payload_value(k) for k in self._KEYS if k in self._ALWAYS or getattr(self, k) is not None}

    @classmethod
    def from_payload(cls, d: Mapping[str, Any], where: str = "") -> "TargetModel":
        if not isinstance(d, Mapping) or "state" not in d:
            raise invalid(where, "a damaged model bundle (a target lacks its state)")
        sd = d.get("standardize")
        return cls(dict(d["state"]), Standardizer.from_payload(sd) if sd else None,
                   _dict_or_none(d.get("params")), _dict_or_none(d.get("settings")), _dict_or_none(d.get("fit")))


def _dict_or_none(v: Any) -> dict[str, Any] | None:
    return None if v is None else dict(v)


@dataclass(eq=False)
class ModelBundle(PayloadView):
    """Every target of one experiment on one dataset (see the module docstring)."""

    model: str
    targets: dict[str, TargetModel]
    features: list[str]
    samples: SequenceSpec = field(default_factory=SequenceSpec)
    model_version: str = ""
    input: str = "rows"  # "rows" | "sequences" (ModelSpec.input)
    feature_keys: list[str] = field(default_factory=list)  # the store arrays trained on, input order
    dims: list[int] = field(default_factory=list)
    experiment: dict[str, Any] = field(default_factory=dict)  # name, description, feature_set, protocol, registry
    dataset: dict[str, Any] = field(default_factory=dict)  # name, version, config, group, items_sha256, n_*
    provenance: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    command: str | None = None  # the command line that wrote it
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as read
    source_format: str = BUNDLE_FORMAT  # the format it was read from (not written)
    path: str = ""  # the file it was read from (not written)

    _KEYS = ("format", "source_format", "model", "model_version", "input", "targets", "features", "feature_keys",
             "dims", "samples", "experiment", "dataset", "provenance", "seed", "command")
    _ALWAYS = ("format", "source_format", "seed")

    def _payload_value(self, key: str) -> Any:
        if key == "format":
            return BUNDLE_FORMAT
        if key == "samples":
            return self.samples.to_dict()
        return getattr(self, key)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ModelBundle):
            return NotImplemented
        return same_payload({k: v for k, v in self.to_payload().items() if k != "targets"},
                     {k: v for k, v in other.to_payload().items() if k != "targets"}) \
            and self.targets == other.targets

    @property
    def sequences(self) -> bool:
        return self.input == "sequences"

    @property
    def input_names(self) -> list[str]:
        """The trained-on store key of each feature where known, else its extractor name."""
        keys = list(self.feature_keys or [])
        return [k or n for k, n in zip(keys, self.features)] if keys else list(self.features)

    def with_samples(self, samples: SequenceSpec) -> "ModelBundle":
        """This bundle with other windows (e.g. ``curve``'s one window per film window)."""
        return replace(self, samples=samples)

    # -- the aanbench.bundle/1 payload -------------------------------------

    def to_payload(self) -> dict[str, Any]:
        """The ``aanbench.bundle/1`` payload (``torch.save``-able plain containers and tensors)."""
        out: dict[str, Any] = {
            "format": BUNDLE_FORMAT,
            "model": self.model,
            "model_version": self.model_version,
            "input": self.input,
            "targets": {t: m.to_payload() for t, m in self.targets.items()},
            "features": list(self.features),
            "feature_keys": list(self.feature_keys),
            "dims": [int(d) for d in self.dims],
            "samples": self.samples.to_dict(),
            "experiment": dict(self.experiment),
            "dataset": dict(self.dataset),
            "provenance": dict(self.provenance),
            "seed": self.seed,
        }
        if self.command is not None:
            out["command"] = self.command
        return {**self.extra, **out}

    # -- the aanbench.model/1 payload (one target) --------------------------

    def to_model_payload(self) -> dict[str, Any]:
        """A one-target bundle in the single-target layout (``aanbench.model/1``):
        experiment, dataset, seed and feature keys go into ``provenance``."""
        if len(self.targets) != 1:
            raise ValueError(f"a single-target model file holds one target, not {len(self.targets)}")
        [(target, m)] = self.targets.items()
        prov = dict(self.provenance)
        for key, value in (("experiment", self.experiment.get("name")), ("dataset", self.dataset.get("name")),
                           ("seed", self.seed), ("feature_keys", list(self.feature_keys) or None)):
            if value not in (None, "") and key not in prov:
                prov[key] = value
        out: dict[str, Any] = {
            "format": MODEL_FORMAT,
            "model": self.model,
            "target": target,
            "features": list(self.features),
            "standardize": m.to_payload()["standardize"],
            "state": m.state,
            "provenance": prov,
            "input": self.input,
            "samples": self.samples.to_dict(),
            "dims": [int(d) for d in self.dims],
        }
        if self.model_version:
            out["model_version"] = self.model_version
        return {**self.extra, **out}

    # -- reading -------------------------------------------------------------

    @classmethod
    def from_payload(cls, payload: Any, where: str = "") -> "ModelBundle":
        """Read an ``aanbench.bundle/1`` or ``aanbench.model/1`` payload;
        ``where`` (the file) names it in errors."""
        where = where or "model payload"
        if not isinstance(payload, Mapping):
            raise invalid(where, f"not an aanbench model file (holds a {type(payload).__name__})")
        fmt = payload.get("format")
        if fmt in (BUNDLE_FORMAT, MODEL_FORMAT):
            try:
                return cls._from_bundle(payload, where) if fmt == BUNDLE_FORMAT else cls._from_model(payload, where)
            except AanbenchError:
                raise
            except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as exc:
                # a field the checks above let through but that does not read: still named, never a raw error
                raise invalid(where, f"a damaged field ({type(exc).__name__}: {str(exc)[:200]})") from None
        if isinstance(fmt, str) and fmt.split("/")[0] in ("aanbench.bundle", "aanbench.model"):
            raise AanbenchError(f"{where}: model file format {fmt} is not one this aanbench reads "
                                f"({BUNDLE_FORMAT}, {MODEL_FORMAT}); written by a newer aanbench? Upgrade to read it")
        raise invalid(where, f"not an aanbench model file (format {BUNDLE_FORMAT} or {MODEL_FORMAT} "
                             f"expected, found {_show(fmt)})")

    @classmethod
    def _from_bundle(cls, p: Mapping[str, Any], where: str) -> "ModelBundle":
        missing = [k for k in BUNDLE_REQUIRED if k not in p]
        if missing or not isinstance(p["targets"], Mapping) or not p["targets"]:
            raise invalid(where, f"a damaged model bundle (lacks {missing or ['targets']})")
        features, dims = _check_common(p, where)
        if len(p["targets"]) > MAX_TARGETS:
            raise invalid(where, f"{len(p['targets'])} targets (at most {MAX_TARGETS})")
        for t, v in p["targets"].items():
            _name(t, "a target's name", where)
            if not isinstance(v, Mapping) or "state" not in v:
                raise invalid(where, f"a damaged model bundle (target {t} lacks its state)")
            _check_state(v["state"], where, t, dims)
            _check_standardize(v.get("standardize"), dims, max(len(features), len(dims)), where, t)
            for k in ("params", "settings", "fit"):
                _mapping_or_none(v.get(k), f"targets.{t}.{k}", where)
        keys = p.get("feature_keys")
        if keys:
            keys = _names(keys, "feature_keys", where, empty_ok=True)
            if len(keys) != len(features):
                raise invalid(where, f"feature_keys lists {len(keys)} keys for {len(features)} feature(s)")
        for k in ("experiment", "dataset", "provenance"):
            _mapping_or_none(p.get(k), k, where)
        seed = p.get("seed")
        if seed is not None and (not _is_int(seed) or int(seed) < 0):
            raise invalid(where, f"seed must be an integer >= 0, not {_show(seed)}")
        known = set(cls._KEYS) - {"source_format"}
        return cls(
            model=str(p["model"]),
            targets={str(t): TargetModel.from_payload(v, where) for t, v in p["targets"].items()},
            features=list(p["features"]),
            samples=_spec(p["samples"], where),
            model_version=str(p.get("model_version") or ""),
            input=str(p.get("input") or "rows"),
            feature_keys=list(p.get("feature_keys") or []),
            dims=[int(d) for d in p.get("dims") or []],
            experiment=dict(p.get("experiment") or {}),
            dataset=dict(p.get("dataset") or {}),
            provenance=dict(p.get("provenance") or {}),
            seed=p.get("seed"),
            command=p.get("command"),
            extra={k: v for k, v in p.items() if k not in known},
            source_format=BUNDLE_FORMAT,
            path=where,
        )

    @classmethod
    def _from_model(cls, p: Mapping[str, Any], where: str) -> "ModelBundle":
        missing = [k for k in MODEL_REQUIRED if k not in p]
        if missing:
            raise invalid(where, f"a damaged model file (lacks {missing})")
        features, dims = _check_common(p, where)
        target_name = _name(p["target"], "target", where)
        _check_state(p["state"], where, target_name, dims)
        _check_standardize(p.get("standardize"), dims, max(len(features), len(dims)), where, target_name)
        prov = _mapping_or_none(p.get("provenance"), "provenance", where) or {}
        if prov.get("feature_keys"):
            _names(prov["feature_keys"], "provenance.feature_keys", where, empty_ok=True)
        known = {"format", "model", "model_version", "target", "features", "standardize", "state", "provenance",
                 "input", "samples", "dims"}
        target = TargetModel.from_payload({"state": p["state"], "standardize": p.get("standardize")}, where)
        return cls(
            model=str(p["model"]),
            targets={str(p["target"]): target},
            features=list(p["features"]),
            samples=_spec(p.get("samples") or ROWS_SAMPLES, where),
            model_version=str(p.get("model_version") or ""),
            input=str(p.get("input") or "rows"),
            feature_keys=list(prov.get("feature_keys") or []),
            dims=[int(d) for d in p.get("dims") or []],
            experiment={"name": prov.get("experiment", "")},
            dataset={"name": prov.get("dataset", "")},
            provenance=prov,
            seed=prov.get("seed"),
            extra={k: v for k, v in p.items() if k not in known},
            source_format=MODEL_FORMAT,
            path=where,
        )


def _spec(d: Any, where: str) -> SequenceSpec:
    try:
        return SequenceSpec.from_dict(d)
    except (AanbenchError, TypeError, ValueError) as exc:
        raise invalid(where, f"a damaged model file (windows: {exc})") from None
