"""Apply a trained model to the features stored for a dataset.

:func:`predict_group` is what ``aanbench predict`` runs; ``curve``, ``demo``
and notebooks call it the same way::

    from aanbench.modelfile import load_any
    from aanbench.plugin_manager import get_plugins
    from aanbench.predict import predict_group
    from aanbench.store import FeatureStore

    group = FeatureStore("feats", mode="r").open_group("demo")
    preds = predict_group(load_any("model.pt"), group, get_plugins())   # a ModelBundle
    preds.to_frame()        # item_id, start, end, valence, arousal, reason
    predict_group(bundle, group, plugins, with_labels=True).write_csv("p.csv")  # + labels, split, group

The same windows the model was trained with are rebuilt from the group's
item table (the bundle's sample spec); a sample whose rows are not all
valid gets no prediction and a reason.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aanbench.bundle import ModelBundle
from aanbench.contracts import AanbenchError, SequenceSpec
from aanbench.csvformat import number_cell
from aanbench.features import load_features, no_features, predict_samples
from aanbench.plugin_manager import Plugins
from aanbench.samples import samples_of
from aanbench.store import DatasetGroup


@dataclass
class Predictions:
    """One row per sample: ``ids``, ``start``/``end`` (float64 seconds, NaN =
    open), one ``float32`` array per target (NaN = left out), and ``reasons``
    ('' when predicted)."""

    ids: list[str]
    start: np.ndarray
    end: np.ndarray
    values: dict[str, np.ndarray]
    reasons: list[str]
    spec: SequenceSpec
    feature_keys: list[str]
    notes: list[str] = field(default_factory=list)
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # with_labels: per target, NaN = unlabelled
    split: list[str] | None = None  # with_labels: each sample's split ('' where the dataset has none)
    group: list[str] | None = None  # with_labels: each sample's group (movie)

    @property
    def targets(self) -> list[str]:
        return list(self.values)

    @property
    def n_left_out(self) -> int:
        return sum(1 for r in self.reasons if r)

    def _extra_columns(self) -> dict[str, list[Any]]:
        """The label columns (``<target>_label``, empty = unlabelled), then
        ``split`` and ``group``, where they were asked for and exist."""
        cols: dict[str, list[Any]] = {f"{t}_label": list(v) for t, v in self.labels.items()}
        if self.split is not None and any(self.split):
            cols["split"] = list(self.split)
        if self.group is not None and any(self.group):
            cols["group"] = list(self.group)
        return cols

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame({"item_id": self.ids, "start": self.start, "end": self.end,
                             **{t: v for t, v in self.values.items()}, **self._extra_columns(),
                             "reason": self.reasons})

    def write_csv(self, out: str | Path) -> Path:
        """``item_id,start,end,<targets...>[,<target>_label...,split,group],reason``;
        empty cells for open window bounds, for left-out samples (whose
        reason says why) and for unlabelled samples; numbers round-trip
        exact (:func:`aanbench.csvformat.number_cell`)."""
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        extra = self._extra_columns()
        tmp = out.with_name(out.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["item_id", "start", "end", *self.targets, *extra, "reason"])
            for i, sid in enumerate(self.ids):
                w.writerow([sid, number_cell(self.start[i]), number_cell(self.end[i]),
                            *(number_cell(self.values[t][i]) for t in self.targets),
                            *(c[i] if isinstance(c[i], str) else number_cell(c[i]) for c in extra.values()),
                            self.reasons[i]])
        tmp.replace(out)
        return out

    def summary(self) -> dict[str, Any]:
        return {"samples": len(self.ids), "predicted": len(self.ids) - self.n_left_out,
                "left_out": self.n_left_out, "targets": self.targets, "feature_keys": self.feature_keys,
                "windows": self.spec.to_dict(), "notes": self.notes,
                "columns": ["item_id", "start", "end", *self.targets, *self._extra_columns(), "reason"]}


#: What restoring a model from a saved state, or running it, raises when the
#: state does not fit its model or the features (the file is then named).
STATE_ERRORS = (KeyError, TypeError, ValueError, IndexError, RuntimeError, AttributeError)


def _state_misfit(bundle: ModelBundle, target: str, dims: list[int], exc: BaseException) -> AanbenchError:
    from aanbench.bundle import invalid

    return invalid(bundle.path or "model", f"target {target}: its state does not fit model {bundle.model!r} "
                   f"on features of dims {list(dims)} ({type(exc).__name__}: "
                   f"{(str(exc).splitlines() or [''])[0][:200]})")


def _restorer(bundle: ModelBundle, plugins: Plugins) -> Any:
    """The model plugin that restores ``bundle``'s targets (an unknown name is refused)."""
    spec_model = plugins.model(bundle.model)
    if spec_model.restore is None:
        raise AanbenchError(f"model plugin {spec_model.name!r} cannot restore saved models")
    return spec_model


def check_bundle(bundle: ModelBundle, plugins: Plugins) -> None:
    """Refuse, before any work, a model file that reads well but cannot
    predict: its model plugin is not installed, or a target's state (or
    standardiser) does not fit the model on the features the file records
    (``dims``). Each target's model is restored and predicts one sample of
    zeros of those dims, as :func:`predict_group` feeds it; a file that
    records no dims, or a model that reads no features, is checked by its
    restore only."""
    spec_model = _restorer(bundle, plugins)
    dims = [int(d) for d in (bundle.dims or [])]
    probe = bool(bundle.features) and len(dims) == len(bundle.features)
    length = bundle.samples.length if bundle.sequences else None
    for target, t in bundle.targets.items():
        try:
            model = spec_model.restore(t.state)
            if probe:
                x = t.scaler(dims).apply([np.zeros((1, d), np.float32) for d in dims])
                if length is not None:  # one window of `length` rows
                    x = [np.repeat(v[:, None, :], length, axis=1) for v in x]
                out = np.asarray(model.predict(x), dtype=np.float32).reshape(-1)
                if out.size != 1:
                    raise ValueError(f"{out.size} predictions for one sample")
        except STATE_ERRORS as exc:
            raise _state_misfit(bundle, target, dims, exc) from None


def predict_group(bundle: ModelBundle, group: DatasetGroup, plugins: Plugins, *,
                  with_labels: bool = False) -> Predictions:
    """Predict every sample of ``group`` with ``bundle`` (as :func:`aanbench.modelfile.load_any`
    returns; a bundle's payload dict is read as :meth:`ModelBundle.from_payload` reads it).
    ``with_labels``: also each sample's label for every target the group
    holds labels for (as a run scores it), its split and group (movie), so
    that the predictions can be scored directly."""
    if not isinstance(bundle, ModelBundle):
        bundle = ModelBundle.from_payload(bundle)
    spec_model = _restorer(bundle, plugins)
    sample_spec = bundle.samples
    trained_keys = list(bundle.feature_keys)
    if bundle.features:
        feats = load_features(group, list(bundle.features), plugins, keys=trained_keys)
    else:  # a model that reads no features (e.g. the training mean)
        feats = no_features(group.n_items)
    notes = []
    for i, key in enumerate(feats.keys):
        if i < len(trained_keys) and trained_keys[i] and trained_keys[i] != key:
            notes.append(f"trained on {trained_keys[i]}, predicting from {key}")
    if bundle.dims and list(bundle.dims) != list(feats.dims):
        raise AanbenchError(f"store group {group.path}: feature dims {feats.dims} ({', '.join(feats.keys)}) "
                            f"differ from the model's {list(bundle.dims)}")
    samples = samples_of(group, sample_spec)
    usable = samples.usable(feats.valid)
    idx = np.flatnonzero(usable)
    values: dict[str, np.ndarray] = {}
    for target, t in bundle.targets.items():
        out = np.full(len(samples), np.nan, dtype=np.float32)
        try:  # a state that does not fit its model or the dims: the file is named, never a raw error
            model = spec_model.restore(t.state)
            # converted published checkpoints have no standardiser: they take raw features
            out[idx] = predict_samples(model, t.scaler(list(feats.dims)), samples, feats.values, idx, bundle.sequences)
        except STATE_ERRORS as exc:
            raise _state_misfit(bundle, target, list(feats.dims), exc) from None
        values[target] = out
    ids = group.item_ids()
    reasons = [""] * len(samples)
    for i in np.flatnonzero(~usable):
        reasons[i] = _reason(samples.members[i], feats, ids)
    preds = Predictions(samples.ids, samples.start, samples.end, values, reasons, sample_spec, feats.keys, notes)
    if with_labels:
        stored = group.targets()
        preds.labels = {t: samples.labels(group.labels(t)) for t in bundle.targets if t in stored}
        if not preds.labels:
            preds.notes.append(f"store group {group.path} holds no labels for {', '.join(bundle.targets)}: "
                               "no label columns")
        preds.split = [str(x) for x in samples.split]
        preds.group = [str(x) for x in samples.group]
    return preds


def _reason(members: np.ndarray, feats, ids: list[str]) -> str:
    for j in dict.fromkeys(members.tolist()):
        for key, ok, err in zip(feats.keys, feats.oks, feats.errors):
            if not ok[j]:
                return f"{ids[j]}: no valid {key} features ({str(err[j]) or 'not extracted'})"
    return "no valid features"
