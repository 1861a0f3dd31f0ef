"""A small Python API for notebooks: stored features as numpy arrays or a
pandas DataFrame, export to Parquet, CSV or HDF5, and what every command
does (:mod:`aanbench.workflows`, re-exported here; no Typer, no Rich):

>>> from aanbench.api import benchmark
>>> res = benchmark("demo", ".aanbench-demo/store", "results", "leaderboard.md")
>>> {r.experiment: r.metrics["valence"]["ccc"] for r in res.runs}

Stored features:

>>> from aanbench.api import open_features
>>> f = open_features("feats", "eimt16", ["affect", "emobase2010"])
>>> f.items                      # DataFrame: id, group, split, path, start, end (s)
>>> f.arrays["affect"]           # float32 (n_items, 23); f.ok["affect"]: bool (n_items,)
>>> x, valid = f.matrix()        # float32 (n_items, 23 + 1582), rows valid for every extractor
>>> df = f.frame(valid_only=True)  # one row per item: item table, labels, affect_0 ... emobase2010_1581

Reads only; the store is opened read-only and never locked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from aanbench.contracts import AanbenchError
from aanbench.curve import CurveModel, FilmCurve, load_models
from aanbench.workflows import (
    BenchmarkEvents,
    BenchmarkResult,
    DemoEvents,
    DemoResult,
    ExperimentRun,
    ImportedArray,
    PredictionsWritten,
    RunFailure,
    TrainedBundle,
    benchmark,
    benchmark_experiments,
    curve,
    demo,
    extract,
    film_curve,
    fit_backend,
    import_h5,
    leaderboard,
    model_info,
    predict,
    run,
    store_summary,
    train,
)

__all__ = [
    # stored features
    "EXPORT_FORMATS", "StoredFeatures", "export_features", "export_format", "open_features",
    # workflows and their results
    "BenchmarkEvents", "BenchmarkResult", "CurveModel", "DemoEvents", "DemoResult", "ExperimentRun", "FilmCurve",
    "ImportedArray", "PredictionsWritten", "RunFailure", "TrainedBundle", "benchmark", "benchmark_experiments",
    "curve", "demo", "extract", "film_curve", "fit_backend", "import_h5", "leaderboard", "load_models", "model_info",
    "predict", "run",
    "store_summary", "train",
]

EXPORT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".h5": "hdf5", ".hdf5": "hdf5"}


@dataclass
class StoredFeatures:
    """Features of one store group, in store row order.

    ``items``: ``pandas.DataFrame`` with ``id``, ``group``, ``split``, ``path``,
    ``start``, ``end`` (seconds, NaN = open). ``arrays[name]``: ``float32
    (n_items, dim)``; rows whose ``ok[name]`` is False hold NaN and
    ``errors[name]`` says why. ``labels[target]``: ``float32 (n_items,)``.
    ``keys[name]`` is the stored array (``name@version``), ``provenance[name]``
    its provenance attributes."""

    store: Path
    group: str
    items: Any
    arrays: dict[str, np.ndarray]
    ok: dict[str, np.ndarray]
    errors: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    keys: dict[str, str]
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def valid(self, names: Sequence[str] | None = None) -> np.ndarray:
        """``bool (n_items,)``: rows valid for every extractor in ``names`` (default all)."""
        out = np.ones(self.n_items, dtype=bool)
        for n in names or list(self.arrays):
            out &= self.ok[n]
        return out

    def matrix(self, names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(x, valid)``: the arrays of ``names`` (default all, in load order)
        side by side, ``float32 (n_items, sum of dims)``, and the valid rows."""
        names = list(names or self.arrays)
        missing = [n for n in names if n not in self.arrays]
        if missing:
            raise AanbenchError(f"not loaded: {', '.join(missing)} (loaded: {', '.join(self.arrays)})")
        return np.concatenate([self.arrays[n] for n in names], axis=1), self.valid(names)

    def columns(self, name: str) -> list[str]:
        """Column names of extractor ``name`` in :meth:`frame`: ``name_0`` ... ``name_{dim-1}``."""
        return [f"{name}_{j}" for j in range(self.arrays[name].shape[1])]

    def frame(self, valid_only: bool = False):
        """One ``pandas.DataFrame`` row per item: the item table, the labels,
        then each extractor's columns (see :meth:`columns`)."""
        import pandas as pd

        parts = [self.items.reset_index(drop=True),
                 pd.DataFrame({t: v for t, v in self.labels.items()})]
        for name, a in self.arrays.items():
            parts.append(pd.DataFrame(a, columns=self.columns(name)))
        df = pd.concat(parts, axis=1)
        if valid_only:
            df = df[self.valid()].reset_index(drop=True)
        return df


def open_features(store: str | Path, dataset: str, extractors: Sequence[str] | str | None = None, *,
                  segmentation: str = "default") -> StoredFeatures:
    """Read the features of ``dataset`` (its ``segmentation`` group) from the
    store at ``store``. ``extractors``: names (``affect``) or exact arrays
    (``affect@2``), a list or a comma-separated string; default every array
    in the group."""
    from aanbench.store import FeatureStore

    group = FeatureStore(store, mode="r").open_group(dataset, segmentation)
    if extractors is None:
        names = list(group.feature_keys())
        if not names:
            raise AanbenchError(f"store {store}: group {group.path} holds no features yet")
    elif isinstance(extractors, str):
        names = [n.strip() for n in extractors.split(",") if n.strip()]
    else:
        names = list(extractors)
    if extractors is None:  # every stored array: by extractor name, unless it is stored in several versions
        bare = [k.split("@", 1)[0] for k in names]
        labels_of = {k: (b if bare.count(b) == 1 else k) for k, b in zip(names, bare)}
    else:
        labels_of = {n: n for n in names}
    arrays, ok, errors, keys, prov = {}, {}, {}, {}, {}
    for name in names:
        arr = group.resolve_feature(name)
        label = labels_of[name]
        values = arr.read()
        good = arr.ok()
        values[~good] = np.nan
        arrays[label], ok[label], errors[label] = values, good, arr.errors()
        keys[label], prov[label] = arr.key, arr.provenance
    labels = {t: group.labels(t) for t in group.targets()}
    return StoredFeatures(store=Path(store), group=group.path, items=group.item_table(), arrays=arrays, ok=ok,
                          errors=errors, labels=labels, keys=keys, provenance=prov)


def export_format(out: Path, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in set(EXPORT_FORMATS.values()):
            raise AanbenchError(f"unknown export format {fmt!r} (parquet, csv, hdf5)")
        return fmt
    try:
        return EXPORT_FORMATS[out.suffix.lower()]
    except KeyError:
        raise AanbenchError(f"{out}: cannot tell the format from the suffix {out.suffix or '(none)'!r}; "
                            "use .parquet, .csv, .h5 or --format") from None


def export_features(features: StoredFeatures, out: str | Path, fmt: str | None = None, *,
                    valid_only: bool = False, overwrite: bool = True) -> tuple[Path, str, int]:
    """Write ``features`` to ``out``; returns (path, format, rows written).

    Parquet and CSV: the table of :meth:`StoredFeatures.frame`. HDF5: the
    item table as string / float datasets under ``items/``, the labels under
    ``labels/``, and per extractor ``features/<name@version>`` (``float32
    (n_items, dim)``, NaN where invalid) with ``ok/<name@version>``; each
    feature dataset carries its provenance as a JSON attribute, and
    ``aanbench store import-h5 FILE --key features/<name@version>`` reads it
    back. The file is written atomically (a unique temporary file, then a
    rename); ``overwrite=False`` refuses an existing ``out``."""
    from aanbench import atomicio

    out = Path(out)
    fmt = export_format(out, fmt)
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise AanbenchError("writing Parquet needs the pyarrow package (pip install pyarrow); "
                                "or export to .csv or .h5") from None
    if not overwrite and out.exists():
        raise AanbenchError(f"{out}: exists; not overwritten (use --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt in ("parquet", "csv"):
        df = features.frame(valid_only=valid_only)
        if fmt == "parquet":
            atomicio.write_with(out, lambda t: df.to_parquet(t, index=False), overwrite=overwrite)
        else:
            atomicio.write_with(out, lambda t: df.to_csv(t, index=False, float_format="%.9g"), overwrite=overwrite)
        return out, fmt, len(df)
    import json

    import h5py

    keep = features.valid() if valid_only else np.ones(features.n_items, dtype=bool)

    def write_h5(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f.attrs["aanbench_export"] = "aanbench.features/1"
            f.attrs["store"] = str(features.store)
            f.attrs["group"] = features.group
            str_dt = h5py.string_dtype()
            for col in features.items.columns:
                values = features.items[col].to_numpy()[keep]
                if values.dtype.kind in "fiu":
                    f.create_dataset(f"items/{col}", data=values.astype(np.float64))
                else:
                    f.create_dataset(f"items/{col}", data=np.array([str(v) for v in values], dtype=object), dtype=str_dt)
            for t, v in features.labels.items():
                f.create_dataset(f"labels/{t}", data=v[keep])
            for name, a in features.arrays.items():
                key = features.keys[name]
                d = f.create_dataset(f"features/{key}", data=a[keep], compression="gzip")
                d.attrs["provenance"] = json.dumps(features.provenance.get(name, {}), sort_keys=True, default=str)
                f.create_dataset(f"ok/{key}", data=features.ok[name][keep])
    atomicio.write_with(out, write_h5, overwrite=overwrite)
    return out, fmt, int(keep.sum())
