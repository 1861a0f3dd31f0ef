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
            raise AanbenchError(f"{where}: a damaged model bundle (a target lacks its state)")
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
            raise AanbenchError(f"{where}: not an aanbench model file (holds a {type(payload).__name__})")
        fmt = payload.get("format")
        if fmt == BUNDLE_FORMAT:
            return cls._from_bundle(payload, where)
        if fmt == MODEL_FORMAT:
            return cls._from_model(payload, where)
        if isinstance(fmt, str) and fmt.split("/")[0] in ("aanbench.bundle", "aanbench.model"):
            raise AanbenchError(f"{where}: model file format {fmt} is not one this aanbench reads "
                                f"({BUNDLE_FORMAT}, {MODEL_FORMAT}); written by a newer aanbench? Upgrade to read it")
        raise AanbenchError(f"{where}: not an aanbench model file (format {BUNDLE_FORMAT} or {MODEL_FORMAT} "
                            f"expected, found {fmt!r})")

    @classmethod
    def _from_bundle(cls, p: Mapping[str, Any], where: str) -> "ModelBundle":
        missing = [k for k in BUNDLE_REQUIRED if k not in p]
        if missing or not isinstance(p["targets"], Mapping) or not p["targets"]:
            raise AanbenchError(f"{where}: a damaged model bundle (lacks {missing or ['targets']})")
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
            raise AanbenchError(f"{where}: a damaged model file (lacks {missing})")
        prov = dict(p.get("provenance") or {})
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
        raise AanbenchError(f"{where}: a damaged model file (windows: {exc})") from None
