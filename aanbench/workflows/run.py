"""The ``run`` and ``train`` workflows: one experiment on a dataset's stored features."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from aanbench.contracts import Dataset
from aanbench.workflows._shared import configure_experiment, plugins, registry as load_registry, resolve_dataset
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


def resolve_experiment(name: str, dataset: Dataset, *, registry: str | Path | None = None, features: str | None = None,
                       protocol: str | None = None) -> Any:
    """The registry experiment ``name`` resolved for ``dataset``, on the
    feature set ``features`` and with ``protocol`` when given (else its own,
    else the dataset's protocol); every name checked before any work."""
    reg = load_registry(registry)
    return configure_experiment(reg.experiment(name, dataset.name), reg, features=features, protocol=protocol)


def needed_features(exp: Any) -> list[str]:
    """The extractors a run of ``exp`` reads: its feature set, or none for
    a model that reads no features (``ModelSpec.needs_features``)."""
    spec = plugins().models.get(exp.model)
    return [] if spec is not None and not spec.needs_features else list(exp.features)


def missing_features(exp: Any, group: Any) -> list[str]:
    """The extractors ``exp`` reads (:func:`needed_features`) that ``group``
    holds no array of (as a run resolves them: the installed version if
    stored, else the only one stored)."""
    from aanbench.contracts import AanbenchError

    pl = plugins()
    missing = []
    for f in needed_features(exp):
        ex = pl.extractors.get(f)
        try:
            group.resolve_feature(f, ex.version if ex is not None else None)
        except AanbenchError:
            missing.append(f)
    return missing


def check_features_stored(exp: Any, group: Any, ds: Dataset, store: str | Path,
                          registry: str | Path | None = None) -> None:
    """Every feature ``exp`` reads is in ``group``; else one error naming
    each missing extractor, what the store has, and the ways on: extract
    them, or run on a feature set of the registry that the store holds."""
    from aanbench.contracts import AanbenchError

    missing = missing_features(exp, group)
    if not missing:
        return
    have = sorted({k.split("@", 1)[0] for k in group.feature_keys()})
    sets = load_registry(registry).feature_sets
    held = sorted((k for k, v in sets.items() if v and set(v) <= set(have)), key=lambda k: (-len(sets[k]), k))
    ways = [f"Extract them (`aanbench extract {ds.name} ... --store {store} --extractors {','.join(missing)}`; "
            "their weight files: `aanbench weights`)"]
    if held:
        ways.append(f"run on a feature set the store holds: --features {held[0]}")
    raise AanbenchError(f"{exp.name} reads {', '.join(exp.features)} (feature set {exp.feature_set}); store {store} "
                        f"has no {', '.join(missing)} for {ds.name} (it has {', '.join(have) or 'no features'}). "
                        + "; or ".join(ways) + ".")


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
    features: str | None = None,
    protocol: str | None = None,
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
    ``dataset`` with its protocol (``protocol``: another; default the
    experiment's, else the dataset's), on its feature set (``features``:
    another feature set of the registry); write the results file
    (``out/<dataset>/<experiment>/seed<N>.json``, or ``out`` when it ends in
    .json). ``backend``: where the fits run, ``local`` or ``ray`` (with
    ``address``, ``workers``), or a fit backend object
    (:func:`aanbench.workflows.fit_backend`). ``command``: recorded in the
    results file. Rows whose stored bytes are damaged are refused unless
    ``skip_damaged`` (then left out and recorded as ``skipped_damaged``).
    An error that stops the run is raised."""
    from aanbench.runner import write_results
    from aanbench.workflows.store import refuse_damaged

    ds = resolve_dataset(dataset, options, labelled=True)
    exp = resolve_experiment(experiment, ds, registry=registry, features=features, protocol=protocol)
    fits = backend if not isinstance(backend, str) else fit_backend(
        backend, address=address, workers=workers, device=device, threads=threads)
    group = _group(store, ds)
    check_features_stored(exp, group, ds, store, registry)
    refuse_damaged(group, [exp], skip_damaged)
    [doc] = fits.run([(exp, seed)], ds, group, plugins(), sequential=sequential,
                     save_models=Path(save_models) if save_models is not None else None, on_progress=on_progress)
    if isinstance(doc, BaseException):
        raise doc
    doc.command = command  # damaged rows left out: in doc.skipped_damaged (and its fingerprint), from the runner
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
                "windows": p.samples.to_dict(), "seed": p.seed, "fits": {t: v.fit for t, v in p.targets.items()},
                "skipped_damaged": self.skipped_damaged}

    @property
    def skipped_damaged(self) -> list[dict[str, Any]]:
        """The stored rows left out of training because their bytes are
        damaged (``--skip-damaged``), per array; empty when none were."""
        return list(self.payload.dataset.get("skipped_damaged") or [])


def train(
    experiment: str,
    dataset: str | Dataset,
    store: str | Path,
    out: str | Path,
    *,
    seed: int | None = None,
    registry: str | Path | None = None,
    features: str | None = None,
    protocol: str | None = None,
    options: Sequence[str] | Mapping[str, Any] | None = None,
    sequential: bool = False,
    device: str = "cpu",
    threads: int | None = None,
    command: str = "",
    on_progress: FitProgress | None = None,
    skip_damaged: bool = False,
) -> TrainedBundle:
    """Fit ``experiment`` on all of ``dataset``'s training samples (validation
    carved from them as in :func:`run`), for every target, and write one
    model bundle to ``out`` (apply it with :func:`predict`). The training
    samples are the protocol's training pool (``protocol``, default as in
    :func:`run`): the train split for ``fixed``, every movie for
    ``leave-one-group-out``. ``features``: as in :func:`run`.
    ``on_progress(done, total, target)`` as each target's fit ends. Rows
    whose stored bytes are damaged (checksum mismatch) refuse the training
    (:class:`aanbench.contracts.AanbenchError` naming the store, arrays,
    rows and files; the CLI exits 2) unless ``skip_damaged``: then they are
    left out and recorded in the bundle (``dataset["skipped_damaged"]``,
    :attr:`TrainedBundle.skipped_damaged`)."""
    from aanbench.modelfile import save_bundle
    from aanbench.runner import train_bundle
    from aanbench.workflows.store import refuse_damaged

    ds = resolve_dataset(dataset, options, labelled=True)
    exp = resolve_experiment(experiment, ds, registry=registry, features=features, protocol=protocol)
    group = _group(store, ds)
    check_features_stored(exp, group, ds, store, registry)
    refuse_damaged(group, [exp], skip_damaged, use="trained on", record="the model bundle")
    payload = train_bundle(exp, ds, group, plugins(), seed=seed, sequential=sequential, device=device,
                           threads=threads,
                           on_fit=(lambda t, done, total: on_progress(done, total, t)) if on_progress else None)
    payload.command = command
    return TrainedBundle(save_bundle(out, payload), payload)


def check_format(fmt: str) -> str:
    """A leaderboard format (``md``, ``csv``, ``json``: :data:`aanbench.leaderboard.FORMATS`)
    checked before any work."""
    from aanbench.contracts import AanbenchError
    from aanbench.leaderboard import FORMATS

    if fmt not in FORMATS:
        raise AanbenchError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


def default_leaderboard(dataset: str, fmt: str = "md") -> Path:
    """Where a leaderboard goes by default: ``leaderboards/<dataset>.<fmt>``."""
    return Path("leaderboards") / f"{dataset}.{fmt}"


def leaderboard(dataset: str, results: Sequence[str | Path], out: str | Path | None = None, *,
                group: str | None = None, command: str = "", fmt: str = "md") -> tuple[Path, Path]:
    """Write the leaderboard of ``dataset`` in ``fmt`` (``md``, ``csv`` or
    ``json``; to ``out``, default ``leaderboards/<dataset>.<fmt>``; the
    figure beside it) from the results files in ``results`` (folders or
    files); returns (leaderboard, figure)."""
    from aanbench.contracts import AanbenchError
    from aanbench.leaderboard import write_leaderboard
    from aanbench.runner import read_results

    check_format(fmt)
    docs = read_results([Path(r) for r in results], dataset)
    if not docs:
        raise AanbenchError(f"no results for dataset {dataset!r} in {', '.join(map(str, results))}")
    out = Path(out) if out is not None else default_leaderboard(dataset, fmt)
    return write_leaderboard(dataset, docs, out, group=group, command=command, fmt=fmt)
