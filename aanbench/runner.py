"""Run an experiment on stored features: protocol folds, validation carved
from training rows, standardisation fit on training rows only, one model
per target and fold, predictions and metrics.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from aanbench import __version__
from aanbench.contracts import AanbenchError, Dataset
from aanbench.metrics import evaluate
from aanbench.modelfile import FORMAT as MODEL_FORMAT
from aanbench.modelfile import save_model
from aanbench.plugin_manager import Plugins
from aanbench.protocols import carve_validation, get_protocol
from aanbench.registry import ExperimentConfig, check_params
from aanbench.store import DatasetGroup

RESULTS_FORMAT = "aanbench.results/1"


@dataclass
class Standardizer:
    """Per-feature mean/std, fit on training rows only."""

    mean: list[np.ndarray]
    std: list[np.ndarray]

    @classmethod
    def fit(cls, xs: list[np.ndarray]) -> "Standardizer":
        means = [x.mean(0) for x in xs]
        stds = [x.std(0) for x in xs]
        stds = [np.where(s > 1e-8, s, 1.0) for s in stds]
        return cls([m.astype(np.float32) for m in means], [s.astype(np.float32) for s in stds])

    def apply(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        return [((x - m) / s).astype(np.float32) for x, m, s in zip(xs, self.mean, self.std)]


@dataclass
class FeatureMatrix:
    names: list[str]
    keys: list[str]
    values: list[np.ndarray]
    valid: np.ndarray
    provenance: list[dict[str, Any]] = field(default_factory=list)


def load_features(group: DatasetGroup, names: tuple[str, ...] | list[str], plugins: Plugins) -> FeatureMatrix:
    keys, values, provs = [], [], []
    valid = np.ones(group.n_items, dtype=bool)
    for name in names:
        installed = plugins.extractors.get(name)
        arr = group.resolve_feature(name, installed.version if installed else None)
        keys.append(arr.key)
        values.append(arr.read())
        valid &= arr.ok()
        provs.append(arr.provenance)
    return FeatureMatrix(list(names), keys, values, valid, provs)


def run_experiment(
    exp: ExperimentConfig,
    dataset: Dataset,
    group: DatasetGroup,
    plugins: Plugins,
    *,
    seed: int | None = None,
    save_models: Path | None = None,
    on_fit: Callable[[str, str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Train and evaluate ``exp`` on ``group``; returns the results document."""
    t0 = time.perf_counter()
    spec = plugins.model(exp.model)
    check_params(exp, spec.params)
    seed = exp.seed if seed is None else seed
    feats = load_features(group, exp.features, plugins)
    protocol = get_protocol(exp.protocol or dataset.protocol)
    splits, groups, ids = group.splits(), group.groups(), group.item_ids()
    stored_targets = group.targets()
    targets = [t for t in dataset.targets if t in stored_targets]
    if not targets:
        raise AanbenchError(f"dataset {dataset.name}: the store holds no labels for {list(dataset.targets)}")
    folds = list(protocol.folds(splits, groups))
    doc: dict[str, Any] = {
        "format": RESULTS_FORMAT,
        "aanbench_version": __version__,
        "experiment": exp.name,
        "description": exp.description,
        "model": exp.model,
        "model_version": spec.version,
        "dataset": dataset.name,
        "dataset_config": dataset.config(),
        "group": group.path,
        "feature_set": exp.feature_set,
        "features": [{"name": n, "key": k, "provenance": p} for n, k, p in zip(feats.names, feats.keys, feats.provenance)],
        "protocol": protocol.name,
        "seed": seed,
        "params": {t: {**spec.params, **exp.params_for(t)} for t in targets},
        "targets": {},
        "predictions": [],
    }
    total = len(targets) * len(folds)
    done = 0
    for target in targets:
        params = {**spec.params, **exp.params_for(target)}
        y = group.labels(target)
        usable = feats.valid & np.isfinite(y)
        fold_docs = {}
        fits = []
        pred_all = np.full(group.n_items, np.nan, dtype=np.float32)
        fold_of = np.array([""] * group.n_items, dtype=object)
        for fi, fold in enumerate(folds):
            train = fold.train[usable[fold.train]]
            test = fold.test[usable[fold.test]]
            if len(train) < 2 or len(test) == 0:
                continue
            fit_idx, val_idx = carve_validation(train, groups, float(params.get("val_fraction", 0.1)), seed + fi)
            assert not np.intersect1d(val_idx, fold.test).size and not np.intersect1d(fit_idx, fold.test).size
            scaler = Standardizer.fit([x[fit_idx] for x in feats.values])
            xs = lambda idx: scaler.apply([x[idx] for x in feats.values])  # noqa: E731
            model = spec.build(params, [x.shape[1] for x in feats.values])
            report = model.fit(xs(fit_idx), y[fit_idx], xs(val_idx) if len(val_idx) else None,
                               y[val_idx] if len(val_idx) else None, seed=seed)
            p = np.asarray(model.predict(xs(test)), dtype=np.float32).reshape(-1)
            pred_all[test] = p
            fold_of[test] = fold.name
            fold_docs[fold.name] = evaluate(y[test], p, n_boot=0)
            fits.append({"fold": fold.name, "n_fit": int(len(fit_idx)), "n_val": int(len(val_idx)),
                         "n_test": int(len(test)), "epochs": report.epochs, "best_epoch": report.best_epoch,
                         "best_val_loss": report.best_val_loss, "seconds": round(report.seconds, 3)})
            if save_models is not None:
                save_model(Path(save_models) / f"{exp.name}__{dataset.name}__{target}__{fold.name}.pt", {
                    "format": MODEL_FORMAT, "model": exp.model, "target": target,
                    "features": list(feats.names),
                    "standardize": {"mean": [torch.from_numpy(m) for m in scaler.mean],
                                    "std": [torch.from_numpy(s) for s in scaler.std]},
                    "state": model.state(),
                    "provenance": {"experiment": exp.name, "dataset": dataset.name, "fold": fold.name,
                                   "seed": seed, "feature_keys": feats.keys},
                })
            done += 1
            if on_fit:
                on_fit(target, fold.name, done, total)
        scored = np.isfinite(pred_all) & usable
        pooled = evaluate(y[scored], pred_all[scored], seed=seed)
        doc["targets"][target] = {"metrics": pooled, "folds": fold_docs, "fits": fits,
                                  "n_items": int(group.n_items), "n_unusable": int((~usable).sum())}
        for i in np.flatnonzero(scored):
            doc["predictions"].append({"item_id": ids[i], "group": str(groups[i]), "fold": str(fold_of[i]),
                                       "target": target, "y_true": float(y[i]), "y_pred": float(pred_all[i])})
    doc["seconds"] = round(time.perf_counter() - t0, 3)
    return doc


def results_path(out: Path, experiment: str, dataset: str) -> Path:
    """``--out`` may be a ``.json`` file or a directory of results files."""
    out = Path(out)
    if out.suffix == ".json":
        return out
    return out / f"{dataset}__{experiment}.json"


def write_results(doc: dict[str, Any], out: Path) -> Path:
    path = results_path(out, doc["experiment"], doc["dataset"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=False, default=float))
    tmp.replace(path)
    return path


def read_results(paths: list[Path], dataset: str | None = None) -> list[dict[str, Any]]:
    """Results documents from files and/or directories (``*.json`` inside)."""
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.extend(sorted(p.glob("*.json")))
        elif p.is_file():
            files.append(p)
        else:
            raise AanbenchError(f"{p}: no such results file or directory")
    docs = []
    for f in files:
        try:
            d = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise AanbenchError(f"{f}: not a readable results file ({exc})") from None
        if not isinstance(d, dict) or d.get("format") != RESULTS_FORMAT:
            continue
        if dataset is None or d.get("dataset") == dataset:
            d["_file"] = str(f)
            docs.append(d)
    return docs
