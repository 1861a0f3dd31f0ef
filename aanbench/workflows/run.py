"""The ``run`` and ``train`` workflows: one experiment on a dataset's stored features."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from aanbench.contracts import Dataset
from aanbench.workflows._shared import plugins, registry as load_registry, resolve_dataset
from aanbench.workflows.fits import fit_backend

#: ``on_progress(done, total, what)``: fits done of ``total`` (``what``: the
#: fit just done, e.g. ``valence / movie3``).
FitProgress = Callable[[int, int, str], None]


@dataclass
class ExperimentRun:
    """One run's results document (as :func:`aanbench.runner.run_experiment`
    gives it) and the results file it was written to."""

    doc: dict[str, Any]
    path: Path

    @property
    def experiment(self) -> str:
        return str(self.doc["experiment"])

    @property
    def seed(self) -> int:
        return int(self.doc["seed"])

    @property
    def metrics(self) -> dict[str, dict[str, Any]]:
        """Per target: ``mse``, ``pearson_r``, ``ccc``, ``n`` (and intervals)."""
        return {t: v["metrics"] for t, v in self.doc["targets"].items()}

    def summary(self) -> dict[str, Any]:
        """What ``aanbench run --json`` prints."""
        d = self.doc
        return {"results": str(self.path), "experiment": d["experiment"], "dataset": d["dataset"], "seed": d["seed"],
                "protocol": d["protocol"], "feature_set": d["feature_set"], "samples": d.get("samples"),
                "metrics": self.metrics}


def _group(store: str | Path, ds: Dataset):
    from aanbench.store import FeatureStore

    group = FeatureStore(Path(store), mode="r").open_group(ds.name, ds.segmentation)
    group.check_dataset_config(ds.config())
    return group


def run(
    experiment: str,
    dataset: str | Dataset,
    store: str | Path,
    out: str | Path,
    *,
    seed: int | None = None,
    registry: str | Path | None = None,
    options: Sequence[str] | Mapping[str, Any] | None = None,
    save_models: str | Path | None = None,
    sequential: bool = False,
    device: str = "cpu",
    threads: int | None = None,
    backend: str | Any = "local",
    address: str | None = None,
    workers: int | None = None,
    command: str = "",
    on_progress: FitProgress | None = None,
    skip_damaged: bool = False,
) -> ExperimentRun:
    """Train and evaluate ``experiment`` on the stored features of
    ``dataset`` with its protocol; write the results file
    (``out/<dataset>/<experiment>/seed<N>.json``, or ``out`` when it ends in
    .json). ``backend``: where the fits run, ``local`` or ``ray`` (with
    ``address``, ``workers``), or a fit backend object
    (:func:`aanbench.workflows.fit_backend`). ``command``: recorded in the
    results file. Rows whose stored bytes are damaged are refused unless
    ``skip_damaged`` (then left out and recorded as ``skipped_damaged``).
    An error that stops the run is raised."""
    from aanbench.runner import write_results
    from aanbench.workflows.store import refuse_damaged

    fits = backend if not isinstance(backend, str) else fit_backend(
        backend, address=address, workers=workers, device=device, threads=threads)
    ds = resolve_dataset(dataset, options, labelled=True)
    exp = load_registry(registry).experiment(experiment, ds.name)
    group = _group(store, ds)
    damage = refuse_damaged(group, [exp], skip_damaged)
    [doc] = fits.run([(exp, seed)], ds, group, plugins(), sequential=sequential,
                     save_models=Path(save_models) if save_models is not None else None, on_progress=on_progress)
    if isinstance(doc, BaseException):
        raise doc
    doc.command = command
    if damage:
        doc.extra["skipped_damaged"] = damage
    return ExperimentRun(doc, write_results(doc, Path(out)))


@dataclass
class TrainedBundle:
    """A model bundle written by :func:`train`, and its payload."""

    path: Path
    payload: Any  # aanbench.bundle.ModelBundle

    def summary(self) -> dict[str, Any]:
        """What ``aanbench train --json`` prints."""
        p = self.payload
        return {"bundle": str(self.path), "experiment": p.experiment["name"], "dataset": p.dataset["name"],
                "model": p.model, "targets": list(p.targets), "features": p.feature_keys,
                "windows": p.samples.to_dict(), "seed": p.seed, "fits": {t: v.fit for t, v in p.targets.items()}}


def train(
    experiment: str,
    dataset: str | Dataset,
    store: str | Path,
    out: str | Path,
    *,
    seed: int | None = None,
    registry: str | Path | None = None,
    options: Sequence[str] | Mapping[str, Any] | None = None,
    sequential: bool = False,
    device: str = "cpu",
    threads: int | None = None,
    command: str = "",
    on_progress: FitProgress | None = None,
) -> TrainedBundle:
    """Fit ``experiment`` on all of ``dataset``'s training samples (validation
    carved from them as in :func:`run`), for every target, and write one
    model bundle to ``out`` (apply it with :func:`predict`).
    ``on_progress(done, total, target)`` as each target's fit ends."""
    from aanbench.modelfile import save_bundle
    from aanbench.runner import train_bundle

    ds = resolve_dataset(dataset, options, labelled=True)
    exp = load_registry(registry).experiment(experiment, ds.name)
    group = _group(store, ds)
    payload = train_bundle(exp, ds, group, plugins(), seed=seed, sequential=sequential, device=device,
                           threads=threads,
                           on_fit=(lambda t, done, total: on_progress(done, total, t)) if on_progress else None)
    payload.command = command
    return TrainedBundle(save_bundle(out, payload), payload)


def leaderboard(dataset: str, results: Sequence[str | Path], out: str | Path, *, group: str | None = None,
                command: str = "") -> tuple[Path, Path]:
    """Write the leaderboard of ``dataset`` (markdown ``out``, the figure
    beside it) from the results files in ``results`` (folders or files);
    returns (markdown, figure)."""
    from aanbench.contracts import AanbenchError
    from aanbench.leaderboard import write_leaderboard
    from aanbench.runner import read_results

    docs = read_results([Path(r) for r in results], dataset)
    if not docs:
        raise AanbenchError(f"no results for dataset {dataset!r} in {', '.join(map(str, results))}")
    return write_leaderboard(dataset, docs, Path(out), group=group, command=command)
