"""The ``predict`` workflow: a model applied to a dataset's stored features."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aanbench.workflows._shared import plugins as get_plugins


@dataclass
class PredictionsWritten:
    """The predictions (:class:`aanbench.predict.Predictions`) and the CSV written."""

    predictions: Any
    path: Path
    model: Path

    @property
    def n_left_out(self) -> int:
        return int(self.predictions.n_left_out)

    def summary(self) -> dict[str, Any]:
        """What ``aanbench predict --json`` prints."""
        return {"predictions": str(self.path), "model": str(self.model), **self.predictions.summary()}


def predict(model: str | Path, store: str | Path, dataset: str, out: str | Path, *,
            segmentation: str | None = None) -> PredictionsWritten:
    """Apply ``model`` (a bundle from :func:`train`, or a single-target model
    file) to the features stored for ``dataset`` (store group ``dataset``/
    ``segmentation``, default the dataset's), rebuilding the windows it was
    trained with; write ``out`` (CSV ``item_id,start,end,<targets>,reason``).
    Samples without valid features get an empty prediction and a reason."""
    from aanbench.modelfile import load_any
    from aanbench.predict import predict_group
    from aanbench.store import FeatureStore

    payload = load_any(model)
    plugins = get_plugins()
    seg = segmentation or (plugins.datasets[dataset].segmentation if dataset in plugins.datasets else "default")
    group = FeatureStore(Path(store), mode="r").open_group(dataset, seg)
    preds = predict_group(payload, group, plugins)
    return PredictionsWritten(preds, preds.write_csv(out), Path(model))


def model_info(file: str | Path) -> dict[str, Any]:
    """What a model bundle or model file predicts, from which features and
    windows, trained on what (``aanbench models info --json``)."""
    from aanbench.modelfile import load_any

    p = load_any(file)
    return {
        "file": str(file), "format": p.source_format, "model": p.model,
        "model_version": p.model_version, "input": p.input,
        "targets": list(p.targets), "features": list(p.features),
        "feature_keys": list(p.feature_keys), "dims": list(p.dims),
        "windows": p.samples.to_dict(), "experiment": p.experiment, "dataset": p.dataset,
        "seed": p.seed, "standardised": {t: v.standardize is not None for t, v in p.targets.items()},
        "fits": {t: v.fit for t, v in p.targets.items() if v.fit},
        "provenance": p.provenance,
    }
