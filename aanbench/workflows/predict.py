"""The ``predict`` workflow: a model applied to a dataset's stored features."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aanbench.workflows._shared import plugins as get_plugins


@dataclass
class PredictionsWritten:
    """The predictions (:class:`aanbench.predict.Predictions`) and the CSV written."""

    predictions: Any
    path: Path
    model: str  # the --model argument (a file, or a named model: `NAME (<bundle path>)`)
    warnings: list[str] = field(default_factory=list)  # e.g. DEMO_WARNING for a model trained on the demo

    @property
    def n_left_out(self) -> int:
        return int(self.predictions.n_left_out)

    def summary(self) -> dict[str, Any]:
        """What ``aanbench predict --json`` prints."""
        return {"predictions": str(self.path), "model": str(self.model), "warnings": list(self.warnings),
                **self.predictions.summary()}


def model_warnings(payload: Any, source: str) -> list[str]:
    """What a user must know before trusting ``payload``'s predictions: a
    model trained on the generated demo (:data:`aanbench.curve.DEMO_WARNING`,
    as ``curve`` warns)."""
    from aanbench.curve import DEMO_WARNING

    name = str((getattr(payload, "dataset", None) or {}).get("name") or "")
    return [f"{source}: {DEMO_WARNING}"] if name == "demo" else []


def predict(model: str | Path, store: str | Path, dataset: str, out: str | Path, *,
            segmentation: str | None = None, with_labels: bool = False) -> PredictionsWritten:
    """Apply ``model`` (a bundle from :func:`train`, a single-target model
    file, or a named model: ``aanbench models list``) to the features stored
    for ``dataset`` (store group ``dataset``/``segmentation``, default the
    dataset's), rebuilding the windows it was trained with; write ``out``
    (CSV ``item_id,start,end,<targets>,reason``; ``with_labels``: also
    ``<target>_label``, ``split`` and ``group`` where the store holds them,
    so the CSV can be scored). Samples without valid features get an empty
    prediction and a reason. A model trained on the demo dataset gets a
    warning (``warnings``), and so does each target with predictions outside
    the range of its training labels (:func:`range_warnings`)."""
    from aanbench.named_models import resolve_model
    from aanbench.predict import predict_group
    from aanbench.store import FeatureStore

    resolved = resolve_model(model)
    plugins = get_plugins()
    seg = segmentation or (plugins.datasets[dataset].segmentation if dataset in plugins.datasets else "default")
    group = FeatureStore(Path(store), mode="r").open_group(dataset, seg)
    preds = predict_group(resolved.payload, group, plugins, with_labels=with_labels)
    warnings = model_warnings(resolved.payload, resolved.source) + range_warnings(resolved.payload, preds, plugins)
    return PredictionsWritten(preds, preds.write_csv(out), resolved.source, warnings)


def range_warnings(payload: Any, preds: Any, plugins: Any) -> list[str]:
    """One warning per target with predictions outside the range of the
    labels the model was trained on (as ``curve`` marks them:
    :func:`aanbench.curve.label_scale`): the model is extrapolating."""
    import numpy as np

    from aanbench.curve import CurveModel, label_scale

    scale = label_scale([CurveModel(payload)], plugins)
    out = []
    for t in preds.targets:
        values = np.asarray(preds.values[t], dtype=np.float64)
        n_out, n = int(scale.outside(t, values).sum()), int(np.isfinite(values).sum())
        if n_out:
            out.append(scale.extrapolating(t, n_out, n, "predictions"))
    return out


def model_info(file: str | Path) -> dict[str, Any]:
    """What a model bundle, model file or named model (``aanbench models
    list``) predicts, from which features and windows, trained on what
    (``aanbench models info --json``); a named model adds ``named``: its
    summary, training data, label range, licence and attribution."""
    from aanbench.named_models import resolve_model

    resolved = resolve_model(file)
    p = resolved.payload
    return {
        "file": str(resolved.named.path if resolved.named else file),
        "named": resolved.named.to_dict() if resolved.named else None,
        "format": p.source_format, "model": p.model,
        "model_version": p.model_version, "input": p.input,
        "targets": list(p.targets), "features": list(p.features),
        "feature_keys": list(p.feature_keys), "dims": list(p.dims),
        "windows": p.samples.to_dict(), "experiment": p.experiment, "dataset": p.dataset,
        "seed": p.seed, "standardised": {t: v.standardize is not None for t, v in p.targets.items()},
        "fits": {t: v.fit for t, v in p.targets.items() if v.fit},
        "provenance": p.provenance,
    }


def named_models() -> list[dict[str, Any]]:
    """The named models shipped with aanbench (``aanbench models list``): per
    model its name, summary, predicts, features, dataset, protocol, training
    data, label range and units, licence and attribution
    (:meth:`aanbench.named_models.NamedModel.to_dict`)."""
    from aanbench.named_models import list_models

    return [m.to_dict() for m in list_models()]
