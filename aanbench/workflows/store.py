"""Store workflows: what a feature store holds; an external matrix imported."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aanbench.contracts import AanbenchError


def store_summary(store: str | Path) -> list[dict[str, Any]]:
    """Per group of the store at ``store``: dataset, segmentation, items,
    chunk size, targets and per array its extractor, shape, items and chunks
    done, and the failures (item id, reason)."""
    from aanbench.store import FeatureStore

    st = FeatureStore(Path(store), mode="r")
    out = []
    for gp in st.group_paths():
        g = st.open_group(*gp.split("/", 1))
        ids = g.item_ids()
        arrays = []
        for key in g.feature_keys():
            a = g.feature(key)
            done, ok, errs = a.done(), a.ok(), a.errors()
            rows_done = sum(g.chunk_slice(c).stop - g.chunk_slice(c).start for c in range(len(done)) if done[c])
            prov = a.provenance
            arrays.append({
                "key": key, "extractor": a.name, "version": a.version, "shape": list(a.data.shape),
                "items_done": int(rows_done), "items_ok": int(ok.sum()),
                "chunks_done": int(done.sum()), "chunks": int(len(done)),
                "source": prov.get("source", ""),
                "failures": [{"item_id": ids[i], "reason": str(errs[i])} for i in range(len(ok)) if not ok[i] and errs[i]],
            })
        out.append({"group": gp, "dataset": g.attrs.get("dataset"), "segmentation": g.attrs.get("segmentation"),
                    "n_items": g.n_items, "chunk_rows": g.chunk_rows, "targets": g.targets(), "arrays": arrays})
    return out


@dataclass
class ImportedArray:
    """An imported matrix: rows x dim, its file's SHA-256, where it went."""

    rows: int
    dim: int
    sha256: str
    group: str
    key: str
    file: Path


def import_h5(file: str | Path, store: str | Path, dataset: str, extractor: str, *, key: str = "default",
              segmentation: str = "default") -> ImportedArray:
    """Import an ``(n_items, dim)`` matrix from an HDF5 file as the array
    ``<extractor>@imported`` of the store group ``dataset``/``segmentation``
    (item ids = row numbers unless the group exists, whose row count must
    then match)."""
    import h5py
    import numpy as np

    from aanbench.contracts import Item
    from aanbench.store import FeatureStore
    from aanbench.weights import sha256_of

    file = Path(file)
    if not file.is_file():
        raise AanbenchError(f"{file}: no such file")
    try:
        with h5py.File(file, "r") as f:
            if key not in f:
                raise AanbenchError(f"{file}: no dataset {key!r} (has {', '.join(f.keys()) or 'none'})")
            values = np.asarray(f[key][...], dtype=np.float32)
    except OSError as exc:
        raise AanbenchError(f"{file}: not a readable HDF5 file ({exc})") from None
    if values.ndim != 2:
        raise AanbenchError(f"{file}:{key}: expected an (n_items, dim) matrix, got shape {values.shape}")
    st = FeatureStore(Path(store))
    try:
        group = st.open_group(dataset, segmentation)
    except AanbenchError:
        items = [Item(id=str(i), path=None) for i in range(values.shape[0])]
        group = st.ensure_group(dataset, items, segmentation=segmentation, chunk_rows=max(1, min(32, len(items))))
    digest = sha256_of(file)
    prov = {"extractor": extractor, "version": "imported", "dim": int(values.shape[1]), "config": {"hdf5_key": key},
            "weights": {}, "libraries": {}, "source": {"file": file.name, "sha256": digest}}
    arr = group.import_rows(f"{extractor}@imported", values, prov)
    return ImportedArray(int(values.shape[0]), int(values.shape[1]), digest, group.path, arr.key, file)


def verify(store: str | Path):
    """Check every array of the store at ``store`` (metadata against data,
    every chunk against its CRC32C, shard files against size and index);
    returns a :class:`aanbench.store.StoreVerification` (``.ok``,
    ``.problems``, ``.lines()``). Nothing is written."""
    from aanbench.store import verify_store

    store = Path(store)
    if not store.exists():
        raise AanbenchError(f"{store}: no such feature store")
    return verify_store(store)


def experiment_settings(name: str, dataset: str, registry_file: str | Path | None = None) -> dict[str, Any]:
    """The settings experiment ``name`` runs with on ``dataset`` (the
    built-in registry plus ``registry_file``), each with where it came from:
    ``{"experiment", "dataset", "files", "settings": {key: {"value", "source"}}}``."""
    from aanbench.workflows._shared import registry

    reg = registry(registry_file)
    settings = reg.resolve_settings(name, dataset)
    return {"experiment": name, "dataset": dataset, "files": [str(p) for p in reg.files],
            "extends": reg.chain(name)[1:],
            "settings": {k: {"value": s.value, "source": s.source} for k, s in settings.items()}}


def damaged_rows(group: Any, feature_names: Any, plugins: Any = None) -> list[dict[str, Any]]:
    """Per array of ``feature_names`` in the store group ``group`` that holds
    rows whose stored bytes failed their check ("checksum mismatch in FILE"):
    :func:`aanbench.store.damage_record`'s ``{"array", "rows", "ids_sha256",
    "items", "files"}`` (item ids, at most 20 named). Features the group does
    not hold are passed over (the run says so)."""
    import functools

    from aanbench.store import damage_record

    if plugins is None:
        from aanbench.workflows._shared import plugins as get_plugins

        plugins = get_plugins()
    ids = functools.cache(group.item_ids)  # read once, and only where there is damage
    out = []
    for name in dict.fromkeys(feature_names):
        installed = plugins.extractors.get(name)
        try:
            arr = group.resolve_feature(name, installed.version if installed else None)
        except AanbenchError:
            continue
        record = damage_record(arr.key, arr.errors(), ids, ok=arr.ok())
        if record is not None:
            out.append(record)
    return out


def refuse_damaged(group: Any, experiments: Any, skip_damaged: bool = False, *, use: str = "scored",
                   record: str = "the results") -> list[dict[str, Any]]:
    """Check the arrays ``experiments`` (experiment configs) read from the
    store group ``group`` for damaged rows (see :func:`damaged_rows`). Raise
    :class:`AanbenchError` naming the store, group, arrays, rows and files
    unless ``skip_damaged``; with it, return the damage (to record in the
    results: those rows are left out of the scores as not valid). ``use``
    and ``record``: what the message says is refused ("Not scored") and
    where skipped rows are recorded (``train``: "trained on", "the model bundle")."""
    from aanbench.workflows._shared import plugins as get_plugins

    plugins = get_plugins()

    def reads_features(e: Any) -> bool:  # `mean` reads none: damaged feature rows do not concern it
        try:
            return bool(plugins.model(e.model).needs_features)
        except AanbenchError:  # an unknown model is reported by the run itself
            return True

    names = [f for e in experiments if reads_features(e) for f in e.features]
    damage = damaged_rows(group, names, plugins)
    if damage and not skip_damaged:
        what = "; ".join(f"{d['array']}: {d['rows']} row(s) ({', '.join(d['items'][:5])}"
                         f"{', ...' if d['rows'] > 5 else ''}) in {', '.join(d['files'])}" for d in damage)
        root = getattr(getattr(group, "store", None), "root", None)
        where = f"store {root}, group {group.path}" if root is not None else f"store group {group.path}"
        raise AanbenchError(f"{where}: damaged rows (checksum mismatch): {what}. Not {use}: "
                            "rerun `aanbench extract` on the store to recompute them (see `aanbench store verify`), "
                            f"or pass --skip-damaged to leave those rows out (recorded in {record})")
    return damage
