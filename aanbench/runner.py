"""Run an experiment on stored features: samples (rows or windows,
:mod:`aanbench.samples`), protocol folds, validation carved from training
samples, standardisation fit on the rows of the fitting samples only, one
model per target and fold, predictions and metrics (:func:`run_experiment`);
or one final model per target on all training samples, saved as a model
bundle (:func:`train_bundle`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from aanbench import __version__, atomicio
from aanbench.bundle import ModelBundle, TargetModel
from aanbench.contracts import AanbenchError, Dataset, ModelSpec, OnDevice, SequenceSpec
from aanbench.features import FeatureMatrix, Standardizer, load_features, no_features, predict_samples
from aanbench.metrics import group_spread
from aanbench.names import check_name, inside
from aanbench.paramspec import RUNNER_PARAM_SPECS
from aanbench.provenance import environment
from aanbench.stats import evaluate
from aanbench.plugin_manager import Plugins
from aanbench.protocols import carve_validation, get_protocol
from aanbench.registry import ExperimentConfig, check_params
from aanbench.results import RESULTS_FORMAT as RESULTS_FORMAT  # noqa: F401 (where callers imported it from)
from aanbench.results import RunResult, TargetResult, is_results_payload
from aanbench.samples import SEQUENCE_SETTINGS, Samples, resolve_spec, samples_of
from aanbench.store import DatasetGroup, damage_record, failed_record


# Settings that belong to the runner, accepted in every experiment whatever
# its model, and never handed to the model: the share of training samples
# carved off for validation, and the windows of sequence models (overriding
# the dataset's declared windows; see aanbench.contracts.SequenceSpec).
RUNNER_SETTINGS: dict[str, Any] = {
    "val_fraction": 0.1,
    # False: the model sees the stored (raw) features, as the AttendAffectNet
    # authors fed theirs; True: standardised with training statistics.
    "standardize": True,
    "sequence_length": None,
    "sequence_stride": None,
    "sequence_scope": None,
    "sequence_label": None,
    "sequence_start": None,
}


# --------------------------------------------------------------------------
# What a run needs, resolved once


@dataclass
class RunPlan:
    """An experiment resolved against a store group: model, targets, per-target
    model parameters and runner settings, the samples and the features."""

    exp: ExperimentConfig
    spec: ModelSpec
    dataset: Dataset
    group: DatasetGroup
    targets: list[str]
    model_params: dict[str, dict[str, Any]]
    settings: dict[str, dict[str, Any]]
    sample_spec: SequenceSpec
    samples: Samples
    feats: FeatureMatrix
    protocol: Any
    seed: int
    device: str = "cpu"  # where torch models (contracts.OnDevice) train and predict; see check_device
    threads: int = 1  # CPU threads of a batched stack's first layer (aanbench.batched.train_batched); same numbers
    # with any number; plan_run's default: aanbench.batched.default_threads()

    @property
    def sequences(self) -> bool:
        return self.spec.input == "sequences"

    def labels(self, target: str) -> np.ndarray:
        return self.samples.labels(self.group.labels(target))

    def usable(self, target: str) -> np.ndarray:
        return self.samples.usable(self.feats.valid) & np.isfinite(self.labels(target))


def check_device(device: Any) -> str:
    """The torch device of a run as a string (``"cpu"``, ``"cuda:0"``, ...),
    or a clear :class:`AanbenchError` (e.g. ``cuda`` without CUDA) before any work."""
    if device is None or str(device) == "cpu":
        return "cpu"
    from aanbench.training import resolve_device

    return str(resolve_device(device))


def resolve_settings(exp: ExperimentConfig, spec: ModelSpec, dataset: Dataset, targets: list[str] | None = None
                     ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], SequenceSpec]:
    """Per target (default: the dataset's), the model parameters and the
    runner settings of ``exp``, and the windows (one set per run), without
    reading a store: an error here (e.g. a sequence model on a dataset that
    declares no windows) stops the run before any work."""
    model_params, settings, specs = {}, {}, {}
    for t in targets if targets is not None else list(dataset.targets):
        given = exp.params_for(t)
        model_params[t] = {**spec.params, **{k: v for k, v in given.items() if k not in RUNNER_SETTINGS}}
        settings[t] = {**RUNNER_SETTINGS, **{k: v for k, v in given.items() if k in RUNNER_SETTINGS}}
        specs[t] = resolve_spec(spec.input, dataset, settings[t], model=spec.name)
    if len(set(specs.values())) > 1:
        raise AanbenchError(f"experiment {exp.name}: {', '.join(SEQUENCE_SETTINGS)} must be the same for every "
                            "target (one set of windows per run)")
    return model_params, settings, next(iter(specs.values()))


def plan_run(exp: ExperimentConfig, dataset: Dataset, group: DatasetGroup, plugins: Plugins,
             seed: int | None = None, device: Any = "cpu", threads: int | None = None) -> RunPlan:
    if threads is None:
        from aanbench.batched import default_threads

        threads = default_threads()
    if int(threads) < 1:
        raise AanbenchError(f"threads must be at least 1, not {threads}")
    spec = plugins.model(exp.model)
    check_params(exp, {**spec.params, **RUNNER_SETTINGS},
                 specs={**RUNNER_PARAM_SPECS, **dict(getattr(spec, "param_specs", {}) or {})})
    protocol = get_protocol(exp.protocol or dataset.protocol)
    stored_targets = group.targets()
    targets = [t for t in dataset.targets if t in stored_targets]
    if not targets:
        raise AanbenchError(f"dataset {dataset.name}: the store holds no labels for {list(dataset.targets)}")
    model_params, settings, sample_spec = resolve_settings(exp, spec, dataset, targets)
    feats = load_features(group, exp.features, plugins) if spec.needs_features else no_features(group.n_items)
    samples = samples_of(group, sample_spec)
    if not len(samples):
        raise AanbenchError(f"store group {group.path}: no samples of {sample_spec.length} rows "
                            f"({sample_spec.scope} scope) in {group.n_items} items")
    return RunPlan(exp, spec, dataset, group, targets, model_params, settings, sample_spec, samples, feats,
                   protocol, exp.seed if seed is None else int(seed), check_device(device), int(threads))


NO_FEATURES = "none"  # the feature set a run of a model that reads no features records


def feature_set_of(plan: "RunPlan") -> str:
    """The feature set a run records: the experiment's, or ``none`` for a
    model that reads no features."""
    return plan.exp.feature_set if plan.spec.needs_features else NO_FEATURES


@dataclass
class Fitted:
    model: Any
    scaler: Standardizer
    report: Any
    fit_idx: np.ndarray
    val_idx: np.ndarray


@dataclass
class _Prepared:
    model: Any
    scaler: Standardizer
    fit_idx: np.ndarray
    val_idx: np.ndarray
    y: np.ndarray
    extra: dict[str, Any]


def _prepare_fit(plan: RunPlan, target: str, train: np.ndarray, seed: int, scale: bool = True) -> _Prepared:
    """``scale=False``: an identity standardiser in place of the fitted one
    (for :func:`batch_stacks`, which needs no statistics)."""
    y = plan.labels(target)
    train = train[plan.usable(target)[train]]
    frac = float(plan.settings[target]["val_fraction"])
    fit_idx, val_idx = carve_validation(train, plan.samples.group, frac, seed)
    if scale and plan.settings[target].get("standardize", True):
        scaler = Standardizer.fit([x[plan.samples.rows(fit_idx)] for x in plan.feats.values])
    else:
        scaler = Standardizer.identity(list(plan.feats.dims))
    model = plan.spec.build(plan.model_params[target], list(plan.feats.dims))
    if isinstance(model, OnDevice):  # torch models: train and predict on the run's device
        model.device = plan.device
    extra: dict[str, Any] = {}
    if getattr(plan.spec, "wants_row_labels", False):  # member rows' labels: fitting and validation samples only
        rows_y = np.asarray(plan.group.labels(target), dtype=np.float32)
        extra = {"train_y_rows": rows_y[plan.samples.members[fit_idx]],
                 "val_y_rows": rows_y[plan.samples.members[val_idx]] if len(val_idx) else None}
    return _Prepared(model, scaler, fit_idx, val_idx, y, extra)


def fit_target(plan: RunPlan, target: str, train: np.ndarray, seed: int) -> Fitted:
    """Fit one model for ``target`` on the usable samples among ``train``:
    validation carved from them, the standardiser fit on the unique rows of
    the fitting samples only."""
    p = _prepare_fit(plan, target, train, seed)
    values = p.scaler.apply(plan.feats.values)

    def xs(idx: np.ndarray) -> list[np.ndarray]:
        return plan.samples.take(values, idx, sequences=plan.sequences)

    fit_idx, val_idx, y = p.fit_idx, p.val_idx, p.y
    report = p.model.fit(xs(fit_idx), y[fit_idx], xs(val_idx) if len(val_idx) else None,
                         y[val_idx] if len(val_idx) else None, seed=plan.seed, **p.extra)
    return Fitted(p.model, p.scaler, report, fit_idx, val_idx)


def fit_targets(plan: RunPlan, requests: list[tuple[str, np.ndarray, int]], *,
                sequential: bool = False) -> list[Fitted]:
    """:func:`fit_target` for each ``(target, train, seed)``. Models that opt in
    to batched training (:class:`aanbench.batched.BatchableModel`) are trained
    together, stacked by identical training settings (:func:`aanbench.batched.train_batched`);
    ``sequential`` (or any other model) fits one at a time."""
    if sequential or not batchable(plan):
        return [fit_target(plan, t, train, seed) for t, train, seed in requests]
    from aanbench.batched import group_jobs, train_batched

    preps = [_prepare_fit(plan, t, train, seed) for t, train, seed in requests]
    jobs = _batch_jobs(plan, preps)
    for group in group_jobs(jobs):
        train_batched([jobs[i] for i in group], device=plan.device, threads=plan.threads)
    return [Fitted(p.model, p.scaler, j.report, p.fit_idx, p.val_idx) for p, j in zip(preps, jobs)]


def _batch_jobs(plan: RunPlan, preps: list[_Prepared]) -> list[Any]:
    from aanbench.batched import BatchJob

    members = plan.samples.members if plan.sequences else plan.samples.members[:, 0]
    jobs = []
    for p in preps:
        tf = p.model.torch_fit(p.y[p.fit_idx], seed=plan.seed, **p.extra)
        has_val = len(p.val_idx) > 0
        jobs.append(BatchJob(tf, plan.seed, plan.feats.values, p.scaler.mean, p.scaler.std,
                             members[p.fit_idx], p.y[p.fit_idx], members[p.val_idx] if has_val else None,
                             p.y[p.val_idx] if has_val else None))
    return jobs


def batch_stacks(plan: RunPlan, requests: list[tuple[str, np.ndarray, int]]) -> list[list[int]]:
    """Indices of ``requests`` that :func:`fit_targets` (batched) trains as one
    stack, each stack in request order: :func:`fit_targets` of one stack's
    requests alone gives the same fits as within all of them. Builds each
    request's network (no standardisation, no training)."""
    from aanbench.batched import group_jobs

    return group_jobs(_batch_jobs(plan, [_prepare_fit(plan, t, train, seed, scale=False)
                                         for t, train, seed in requests]))


def batchable(plan: RunPlan) -> bool:
    """Whether the plan's model opts in to batched training (its spec's
    :attr:`~aanbench.contracts.ModelSpec.stackable`: its models have ``torch_fit``)."""
    return bool(plan.spec.stackable)


def _none_if_nan(v: float) -> float | None:
    return None if not math.isfinite(float(v)) else float(v)


def resampling_units(groups: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The resampling unit (cluster) of each test prediction: its group (movie); an
    item without a group is a unit of its own."""
    g = np.asarray(groups).astype(str)
    return np.where(g == "", np.char.add("item:", np.asarray(ids).astype(str)), g)


def _jsonable(v: Any) -> Any:
    """NaN -> None, recursively (results files stay strict JSON there)."""
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, float):
        return _none_if_nan(v)
    return v


def run_experiment(
    exp: ExperimentConfig,
    dataset: Dataset,
    group: DatasetGroup,
    plugins: Plugins,
    *,
    seed: int | None = None,
    save_models: Path | None = None,
    on_fit: Callable[[str, str, int, int], None] | None = None,
    sequential: bool = False,
    device: str = "cpu",
    threads: int | None = None,
) -> RunResult:
    """Train and evaluate ``exp`` on ``group``; returns the results document
    (:class:`aanbench.results.RunResult`).
    A model that opts in to batched training has all its fits (fold x
    target) trained together (:func:`fit_targets`) unless ``sequential``;
    ``threads``: CPU threads of that stack's first layer (the same numbers
    with any number; default every CPU this process may use).

    In phases, which another fitter (:mod:`aanbench.backends.fits_ray`) reuses:
    :func:`plan_run`, :func:`fit_requests`, the fits, :func:`results_doc`."""
    t0 = time.perf_counter()
    plan = plan_run(exp, dataset, group, plugins, seed, device=device, threads=threads)
    folds = run_folds(plan)
    fitted: dict[tuple[str, int], Fitted] | None = None
    if not sequential and batchable(plan):  # every fit of the run at once
        requests = fit_requests(plan, folds)
        fitted = dict(zip([r.key for r in requests], fit_targets(plan, [r.args for r in requests])))
    return results_doc(plan, folds, fitted, t0=t0, save_models=save_models, on_fit=on_fit)


def run_folds(plan: RunPlan) -> list[Any]:
    """The protocol's folds of the plan's samples."""
    return list(plan.protocol.folds(plan.samples.split, plan.samples.group))


@dataclass
class FitRequest:
    """One fit of a run: ``target`` on the usable samples ``train`` of fold
    number ``fold``, seeded with ``seed`` (the run's seed + the fold number)."""

    target: str
    fold: int
    train: np.ndarray
    seed: int

    @property
    def key(self) -> tuple[str, int]:
        return (self.target, self.fold)

    @property
    def args(self) -> tuple[str, np.ndarray, int]:
        """``(target, train, seed)``, as :func:`fit_target` / :func:`fit_targets` take them."""
        return (self.target, self.train, self.seed)


def _fold_samples(plan: RunPlan, fold: Any, usable: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """A fold's usable training and test samples, or None when it has no fit
    (fewer than 2 training samples, or no test sample)."""
    train = fold.train[usable[fold.train]]
    test = fold.test[usable[fold.test]]
    if len(train) < 2 or len(test) == 0:
        return None
    return train, test


def fit_requests(plan: RunPlan, folds: list[Any]) -> list[FitRequest]:
    """Every fit of a run (target by target, fold by fold)."""
    out = []
    for target in plan.targets:
        usable = plan.usable(target)
        for fi, fold in enumerate(folds):
            got = _fold_samples(plan, fold, usable)
            if got is not None:
                out.append(FitRequest(target, fi, got[0], plan.seed + fi))
    return out


def damaged_rows_of(group: DatasetGroup, feats: FeatureMatrix) -> list[dict[str, Any]]:
    """The rows of ``feats`` left out because their stored bytes are damaged,
    one record per store array that has any (:func:`aanbench.store.damage_record`).
    Empty for a store without damage. The array, count and ids hash go into
    the configuration fingerprint (:func:`config_fingerprint`): a run without
    those rows is never taken for a run with them."""
    ids = functools.cache(group.item_ids)  # read once, and only where there is damage
    found = (damage_record(key, errors, ids) for key, errors in zip(feats.keys, feats.errors))
    return [r for r in found if r is not None]


def failed_rows_of(group: DatasetGroup, feats: FeatureMatrix) -> list[dict[str, Any]]:
    """The rows of ``feats`` left out because they are not valid for another
    reason than damage (their extraction failed, or has not run), one record
    per store array that has any (:func:`aanbench.store.failed_record`).
    Empty when every row is valid. They go into the configuration
    fingerprint as the damaged ones do: after `extract --retry-failed`
    makes such rows valid, a benchmark trains again rather than resuming a
    run that was scored without them."""
    ids = functools.cache(group.item_ids)
    found = (failed_record(key, ok, errors, ids) for key, ok, errors in zip(feats.keys, feats.oks, feats.errors))
    return [r for r in found if r is not None]


def run_header(plan: RunPlan) -> RunResult:
    """The results document of a planned run before any fit: what it is
    (experiment, model, dataset, features, protocol, windows, parameters),
    no targets or predictions yet. Its :func:`config_fingerprint` is the
    finished document's, so a benchmark can tell whether a results file on
    disk is this run's before training (:func:`planned_fingerprint`)."""
    exp, dataset, group, spec, feats, samples = plan.exp, plan.dataset, plan.group, plan.spec, plan.feats, plan.samples
    return RunResult(
        aanbench_version=__version__,
        experiment=exp.name,
        description=exp.description,
        model=exp.model,
        model_version=spec.version,
        model_input=spec.input,
        dataset=dataset.name,
        dataset_config=dataset.config(),
        group=group.path,
        items_sha256=group.attrs.get("items_sha256", ""),
        feature_set=feature_set_of(plan),
        features=[{"name": n, "key": k, "dim": d, "provenance": p}
                  for n, k, d, p in zip(feats.names, feats.keys, feats.dims, feats.provenance)],
        protocol=plan.protocol.name,
        seed=plan.seed,
        device=plan.device,  # where torch models trained: changes rounding, not the experiment (not in CONFIG_KEYS)
        environment=environment(plan.device),  # versions, threads, CPU kind (not in CONFIG_KEYS either)
        samples={**plan.sample_spec.to_dict(), "n": len(samples)},
        params={t: plan.model_params[t] for t in plan.targets},
        settings={t: plan.settings[t] for t in plan.targets},
        skipped_damaged=damaged_rows_of(group, feats) or None,  # in the fingerprint when there are any
        failed_rows=failed_rows_of(group, feats) or None,  # likewise
        targets={},
        predictions=[],
    )


def planned_fingerprint(plan: RunPlan) -> str:
    """:func:`config_fingerprint` of the run ``plan`` will make."""
    return config_fingerprint(run_header(plan))


def results_doc(
    plan: RunPlan,
    folds: list[Any],
    fitted: dict[tuple[str, int], Fitted] | None,
    *,
    t0: float | None = None,
    save_models: Path | None = None,
    on_fit: Callable[[str, str, int, int], None] | None = None,
) -> RunResult:
    """Predict each fold's test samples with its fitted model (``fitted[(target,
    fold number)]``; a fit missing there is made now by :func:`fit_target`),
    evaluate, and return the results document. ``t0``: when the run began
    (``time.perf_counter()``), for the document's ``seconds``."""
    from aanbench.modelfile import save_model

    t0 = time.perf_counter() if t0 is None else t0
    exp, dataset, group = plan.exp, plan.dataset, plan.group
    spec, feats, samples, seed = plan.spec, plan.feats, plan.samples, plan.seed
    doc = run_header(plan)
    total = len(plan.targets) * len(folds)
    done = 0
    for target in plan.targets:
        y = plan.labels(target)
        usable = plan.usable(target)
        fold_docs, fits = {}, []
        pred_all = np.full(len(samples), np.nan, dtype=np.float32)
        fold_of = np.array([""] * len(samples), dtype=object)
        for fi, fold in enumerate(folds):
            got = _fold_samples(plan, fold, usable)
            if got is None:
                continue
            train, test = got
            f = fitted.get((target, fi)) if fitted is not None else None
            if f is None:
                f = fit_target(plan, target, train, seed + fi)
            assert not np.intersect1d(f.val_idx, fold.test).size and not np.intersect1d(f.fit_idx, fold.test).size
            p = predict_samples(f.model, f.scaler, samples, feats.values, test, plan.sequences)
            pred_all[test] = p
            fold_of[test] = fold.name
            fold_docs[fold.name] = evaluate(y[test], p, n_boot=0)
            r = f.report
            fits.append({"fold": fold.name, "n_fit": int(len(f.fit_idx)), "n_val": int(len(f.val_idx)),
                         "n_test": int(len(test)), "epochs": r.epochs, "best_epoch": r.best_epoch,
                         "best_val_loss": r.best_val_loss, "seconds": round(r.seconds, 3)})
            if save_models is not None:
                save_model(Path(save_models) / f"{exp.name}__{dataset.name}__{target}__{fold.name}.pt", ModelBundle(
                    model=exp.model, targets={target: TargetModel(f.model.state(), f.scaler)},
                    features=list(feats.names), samples=plan.sample_spec, input=spec.input,
                    dims=list(feats.dims), feature_keys=list(feats.keys),
                    provenance={"experiment": exp.name, "dataset": dataset.name, "fold": fold.name,
                                "seed": seed, "feature_keys": feats.keys}))
            done += 1
            if on_fit:
                on_fit(target, fold.name, done, total)
        scored = np.isfinite(pred_all) & usable
        units = resampling_units(samples.group[scored], np.asarray(samples.ids)[scored])
        # whole groups (movies) are resampled when the test predictions come from >= 3 (else items)
        pooled = evaluate(y[scored], pred_all[scored], groups=units, seed=seed)
        doc.targets[target] = TargetResult(
            metrics=pooled, folds=fold_docs, fits=fits, n_items=int(group.n_items), n_samples=int(len(samples)),
            n_unusable=int((~usable).sum()),
            # per-movie spread: mean and sd over the test groups
            per_group=(_jsonable(group_spread(y[scored], pred_all[scored], units))
                       if pooled["resampled"] == "groups" else None))
        for i in np.flatnonzero(scored):
            doc.predictions.append({"item_id": samples.ids[i], "start": _none_if_nan(samples.start[i]),
                                       "end": _none_if_nan(samples.end[i]), "group": str(samples.group[i]),
                                       "fold": str(fold_of[i]), "target": target, "y_true": float(y[i]),
                                       "y_pred": float(pred_all[i])})
    doc.seconds = round(time.perf_counter() - t0, 3)
    return doc


# --------------------------------------------------------------------------
# `aanbench train`: one bundle, every target, all training samples


def train_bundle(
    exp: ExperimentConfig,
    dataset: Dataset,
    group: DatasetGroup,
    plugins: Plugins,
    *,
    seed: int | None = None,
    on_fit: Callable[[str, int, int], None] | None = None,
    sequential: bool = False,
    device: str = "cpu",
    threads: int | None = None,
) -> ModelBundle:
    """Fit ``exp`` on all of the dataset's training samples (the protocol's
    training pool; validation carved from it as in a run), one model per
    target; returns the model bundle (:class:`aanbench.bundle.ModelBundle`).
    Rows left out because their stored bytes are damaged are recorded in
    the bundle's ``dataset["skipped_damaged"]`` (:func:`damaged_rows_of`)."""
    plan = plan_run(exp, dataset, group, plugins, seed, device=check_device(device), threads=threads)
    skipped = damaged_rows_of(group, plan.feats)
    pool = plan.protocol.training_pool(plan.samples.split, plan.samples.group)
    targets: dict[str, TargetModel] = {}
    fits = fit_targets(plan, [(t, pool, plan.seed) for t in plan.targets], sequential=sequential)
    for i, (target, f) in enumerate(zip(plan.targets, fits)):
        if len(f.fit_idx) < 2:
            raise AanbenchError(f"{group.path}: fewer than 2 usable training samples for {target}")
        r = f.report
        targets[target] = TargetModel(
            state=f.model.state(), standardize=f.scaler, params=_plain(plan.model_params[target]),
            settings=_plain(plan.settings[target]),
            fit={"n_fit": int(len(f.fit_idx)), "n_val": int(len(f.val_idx)), "epochs": int(r.epochs),
                 "best_epoch": int(r.best_epoch),
                 "best_val_loss": None if r.best_val_loss is None else float(r.best_val_loss)})
        if on_fit:
            on_fit(target, i + 1, len(plan.targets))
    return ModelBundle(
        model=exp.model,
        model_version=plan.spec.version,
        input=plan.spec.input,
        targets=targets,
        features=list(plan.feats.names),
        feature_keys=list(plan.feats.keys),
        dims=[int(d) for d in plan.feats.dims],
        samples=plan.sample_spec,
        experiment=_plain({"name": exp.name, "description": exp.description, "feature_set": feature_set_of(plan),
                           "protocol": plan.protocol.name, "registry": str(exp.source or "")}),
        dataset=_plain({"name": dataset.name, "version": getattr(dataset, "version", ""),
                        "config": dataset.config(), "group": group.path,
                        "items_sha256": group.attrs.get("items_sha256", ""),
                        "n_items": group.n_items, "n_samples": len(plan.samples),
                        **({"skipped_damaged": skipped} if skipped else {})}),
        provenance=_plain({"features": [{"name": n, "key": k, "provenance": p} for n, k, p in
                                        zip(plan.feats.names, plan.feats.keys, plan.feats.provenance)],
                           "aanbench_version": __version__, "device": plan.device,
                           "environment": environment(plan.device)}),
        seed=int(plan.seed),
    )


def _plain(v: Any) -> Any:
    """JSON-able plain containers (what ``torch.load(weights_only=True)`` reads)."""
    return json.loads(json.dumps(v, default=str))


# --------------------------------------------------------------------------
# Results files: results/<dataset>/<experiment>/seed<N>.json

CONFIG_KEYS = ("model", "model_version", "dataset_config", "items_sha256", "feature_set", "protocol", "samples",
               "params", "settings")


def skipped_key(doc: RunResult | dict[str, Any], field: str = "skipped_damaged") -> list[list[Any]]:
    """What the fingerprint takes of a document's ``skipped_damaged`` (or
    ``failed_rows``): per array, ``[array, rows, ids_sha256]`` (sorted;
    ids_sha256 None in files written before it was recorded). Empty for a
    run that left no row out."""
    got = doc.get(field) or []
    return sorted([str(d.get("array")), d.get("rows"), d.get("ids_sha256")] for d in got if isinstance(d, dict))


def config_fingerprint(doc: RunResult | dict[str, Any]) -> str:
    """SHA-256 (hex, first 12) of what makes two runs of one experiment and
    seed comparable: model, dataset options and items, features, protocol,
    windows, parameters, and the stored rows left out as damaged
    (``skipped_damaged``) or as failed (``failed_rows``): arrays, counts and
    item-id hashes; a run that left none out has the fingerprint it had
    before they were recorded."""
    cfg = {k: doc.get(k) for k in CONFIG_KEYS}
    cfg["features"] = [f.get("key") for f in doc.get("features", [])]
    skipped = skipped_key(doc)
    if skipped:
        cfg["skipped_damaged"] = skipped
    failed = skipped_key(doc, "failed_rows")
    if failed:
        cfg["failed_rows"] = failed
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]


def recorded_fingerprint(doc: RunResult | dict[str, Any]) -> str:
    """The configuration fingerprint a results document stands for: the one
    it records, computed again where it has none or where it records
    skipped damaged rows (files written with ``--skip-damaged`` before the
    fingerprint covered them carry a clean run's fingerprint)."""
    stored = doc.get("config_fingerprint")
    if stored and not skipped_key(doc):
        return str(stored)
    return config_fingerprint(doc)


def results_path(out: Path, experiment: str, dataset: str, seed: int | None = None,
                 fingerprint: str | None = None) -> Path:
    """``--out`` may be a ``.json`` file, or a results directory, where each run
    goes to ``<dataset>/<experiment>/seed<N>.json``. A run whose configuration
    differs from the one already there goes beside it, to
    ``seed<N>-<fingerprint>.json``: nothing is overwritten but a rerun of the
    same configuration."""
    out = Path(out)
    if out.suffix == ".json":
        return out
    folder = out / check_name("dataset", dataset) / check_name("experiment", experiment)
    path = inside(out, folder / f"seed{int(seed) if seed is not None else 0}.json")
    if fingerprint is None or not path.is_file():
        return path
    try:
        old = json.loads(path.read_text())
        same = recorded_fingerprint(old) == fingerprint
    except (OSError, json.JSONDecodeError, AttributeError):
        same = False
    return path if same else path.with_name(f"{path.stem}-{fingerprint}.json")


def write_results(doc: RunResult | dict[str, Any], out: Path) -> Path:
    """Write a results document (a :class:`RunResult`, or its JSON payload,
    checked as a reader would) under ``out`` (see :func:`results_path`),
    atomically under a unique temporary name; sets its ``config_fingerprint``."""
    if not isinstance(doc, RunResult):
        doc = RunResult.from_payload(doc)
    doc.config_fingerprint = config_fingerprint(doc)
    path = results_path(out, doc.experiment, doc.dataset, doc.seed, doc.config_fingerprint)
    return atomicio.write_text(path, doc.to_json())


def read_results(paths: list[Path], dataset: str | None = None) -> list[RunResult]:
    """Results documents from files and/or directories (every ``*.json``
    below; JSON files that are not results documents are passed over). A
    results file of a newer format, or a damaged one, is a clear error naming it;
    a file that is not JSON at all is skipped with a warning naming it."""
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.extend(sorted(p.rglob("*.json")))
        elif p.is_file():
            files.append(p)
        else:
            raise AanbenchError(f"{p}: no such results file or directory")
    docs = []
    for f in files:
        try:
            d = json.loads(f.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            warnings.warn(f"{f}: not a readable results file, skipped ({exc})", stacklevel=2)
            continue
        if not is_results_payload(d):
            continue
        doc = RunResult.from_payload(d, str(f))
        doc.file = str(f)
        if dataset is None or doc.dataset == dataset:
            docs.append(doc)
    return docs
