"""The feature store: Zarr v3 on disk, readable without aanbench.

Layout::

    STORE/                               group, attrs {"aanbench_store": 1}
      <dataset>/<segmentation>/          group, attrs: dataset, segmentation,
                                         n_items, chunk_rows, items_sha256
        items/id, group, split, path     str    (n_items,)
        items/start, items/end           float64 (n_items,)  seconds, NaN = open
        labels/<target>                  float32 (n_items,)  NaN = unlabelled
        features/<extractor>@<version>/  group, attrs: provenance
          data    float32 (n_items, dim)  chunked (chunk_rows, dim), NaN until written
          ok      bool    (n_items,)      row holds a valid feature vector
          error   str     (n_items,)      why a row failed ('' when ok)
          done    bool    (n_chunks,)     one file per chunk, written after the
                                          chunk's rows: what resume trusts

A chunk of ``chunk_rows`` rows is the unit of work: it is computed and
written whole by one worker, so writers never share a Zarr chunk. A killed
run loses at most the chunks in flight.

Zarr has no locking: :meth:`FeatureStore.writer_lock` holds an exclusive
``flock`` on ``<group>/.writer.lock`` for the length of a run, and a second
run on the same group is refused with a clear message.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from aanbench.contracts import AanbenchError, Item

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import zarr

# Variable-length strings are not yet in the Zarr v3 core spec; zarr-python
# warns about it on every string array. The data round-trips fine.
warnings.filterwarnings("ignore", message=".*not part in the Zarr format 3 specification.*")
warnings.filterwarnings("ignore", category=UserWarning, module="zarr")
with contextlib.suppress(Exception):
    from zarr.errors import UnstableSpecificationWarning  # type: ignore[attr-defined]

    warnings.filterwarnings("ignore", category=UnstableSpecificationWarning)

STORE_FORMAT = 1
DEFAULT_CHUNK_ROWS = 32
PROVENANCE_KEYS = ("extractor", "version", "dim", "config", "weights", "libraries", "source")


def items_fingerprint(items: Sequence[Item]) -> str:
    """SHA-256 over the item ids and windows: identifies the row order."""
    h = hashlib.sha256()
    for it in items:
        h.update(f"{it.id}\t{it.start}\t{it.end}\n".encode())
    return h.hexdigest()


def _nan_if_none(x: float | None) -> float:
    return float("nan") if x is None else float(x)


@dataclass
class FeatureArray:
    """One extractor's rows in one (dataset, segmentation) group."""

    key: str  # "<extractor>@<version>"
    group: Any  # zarr.Group of the feature array

    @property
    def name(self) -> str:
        return self.key.split("@", 1)[0]

    @property
    def version(self) -> str:
        return self.key.split("@", 1)[1] if "@" in self.key else ""

    @property
    def provenance(self) -> dict[str, Any]:
        return dict(self.group.attrs.get("provenance", {}))

    @property
    def data(self):
        return self.group["data"]

    @property
    def dim(self) -> int:
        return int(self.data.shape[1])

    def ok(self) -> np.ndarray:
        return np.asarray(self.group["ok"][:], dtype=bool)

    def errors(self) -> np.ndarray:
        return np.asarray(self.group["error"][:]).astype(object)

    def done(self) -> np.ndarray:
        return np.asarray(self.group["done"][:], dtype=bool)

    def read(self) -> np.ndarray:
        return np.asarray(self.data[:], dtype=np.float32)

    def write_chunk(self, chunk: int, rows: slice, values: np.ndarray, ok: np.ndarray, errors: Sequence[str]) -> None:
        """Write one whole chunk's rows, then its done marker (in that order)."""
        self.data[rows] = values.astype(np.float32, copy=False)
        self.group["ok"][rows] = ok.astype(bool, copy=False)
        self.group["error"][rows] = np.array(list(errors), dtype=object).astype(str)
        self.group["done"][chunk] = True

    def mark_chunk_failed(self, rows: slice, reason: str) -> None:
        """Record a chunk that could not be computed (done stays False, so a rerun retries it)."""
        n = rows.stop - rows.start
        self.group["ok"][rows] = np.zeros(n, dtype=bool)
        self.group["error"][rows] = np.array([reason] * n, dtype=object).astype(str)


class DatasetGroup:
    """The rows of one (dataset, segmentation) inside a store."""

    def __init__(self, store: "FeatureStore", group: Any) -> None:
        self.store = store
        self.group = group

    # ------------------------------------------------------------- attrs
    @property
    def path(self) -> str:
        return self.group.path

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs)

    @property
    def n_items(self) -> int:
        return int(self.group.attrs["n_items"])

    @property
    def chunk_rows(self) -> int:
        return int(self.group.attrs["chunk_rows"])

    @property
    def n_chunks(self) -> int:
        return max(1, math.ceil(self.n_items / self.chunk_rows))

    def chunk_slice(self, chunk: int) -> slice:
        return slice(chunk * self.chunk_rows, min(self.n_items, (chunk + 1) * self.chunk_rows))

    def check_dataset_config(self, config: dict[str, Any]) -> None:
        """Refuse to mix a dataset configured otherwise (e.g. other labels) with this group."""
        stored = self.attrs.get("dataset_config", {})
        if _jsonable(config) != stored:
            raise AanbenchError(
                f"store {self.store.root}: group {self.path} was made with dataset options "
                f"{json.dumps(stored, sort_keys=True)}, not {json.dumps(_jsonable(config), sort_keys=True)}; "
                "use another store for these options"
            )

    # ------------------------------------------------------------- items
    def item_ids(self) -> list[str]:
        return [str(x) for x in self.group["items/id"][:]]

    def groups(self) -> np.ndarray:
        return np.array([str(x) for x in self.group["items/group"][:]], dtype=str)

    def splits(self) -> np.ndarray:
        return np.array([str(x) for x in self.group["items/split"][:]], dtype=str)

    def starts(self) -> np.ndarray:
        """``float64 (n_items,)`` window starts in seconds (NaN: the file's beginning)."""
        return np.asarray(self.group["items/start"][:], dtype=np.float64)

    def ends(self) -> np.ndarray:
        """``float64 (n_items,)`` window ends in seconds (NaN: the file's end)."""
        return np.asarray(self.group["items/end"][:], dtype=np.float64)

    def paths(self) -> list[str]:
        return [str(x) for x in self.group["items/path"][:]]

    def item_table(self):
        """The items as a ``pandas.DataFrame``, one row per stored row, in store
        order: ``id``, ``group``, ``split``, ``path`` (str) and ``start``, ``end``
        (float seconds, NaN = open)."""
        import pandas as pd

        return pd.DataFrame({"id": self.item_ids(), "group": self.groups(), "split": self.splits(),
                             "path": self.paths(), "start": self.starts(), "end": self.ends()})

    def targets(self) -> list[str]:
        return sorted(k for k, _ in self.group["labels"].arrays())

    def labels(self, target: str) -> np.ndarray:
        if target not in self.targets():
            raise AanbenchError(f"store group {self.path}: no labels for target {target!r} (has {self.targets()})")
        return np.asarray(self.group[f"labels/{target}"][:], dtype=np.float32)

    # ---------------------------------------------------------- features
    def feature_keys(self) -> list[str]:
        if "features" not in self.group:
            return []
        return sorted(k for k, _ in self.group["features"].groups())

    def feature(self, key: str) -> FeatureArray:
        return FeatureArray(key, self.group[f"features/{key}"])

    def resolve_feature(self, name: str, prefer_version: str | None = None) -> FeatureArray:
        """The array for extractor ``name``: ``name@version`` exactly, else the
        installed version (``prefer_version``) if stored, else the only one stored."""
        keys = self.feature_keys()
        if "@" in name:
            if name in keys:
                return self.feature(name)
            raise AanbenchError(f"store group {self.path}: no feature array {name!r} (has {keys or 'none'})")
        versions = [k for k in keys if k.split("@", 1)[0] == name]
        if prefer_version is not None and f"{name}@{prefer_version}" in versions:
            return self.feature(f"{name}@{prefer_version}")
        if len(versions) == 1:
            return self.feature(versions[0])
        if not versions:
            raise AanbenchError(
                f"store group {self.path}: no features from extractor {name!r} (has {keys or 'none'}); "
                f"run `aanbench extract ... --extractors {name}` first"
            )
        raise AanbenchError(
            f"store group {self.path}: several versions of {name!r} ({', '.join(versions)}); name one as NAME@VERSION"
        )

    def create_feature(self, key: str, dim: int, provenance: dict[str, Any]) -> FeatureArray:
        """Open ``key``'s array for writing, creating it if needed.

        An existing array made with different provenance is never written:
        :class:`AanbenchError` explains the difference.
        """
        path = f"features/{key}"
        if path in self.group:
            arr = self.feature(key)
            old = {k: arr.provenance.get(k) for k in PROVENANCE_KEYS}
            new = {k: _jsonable(provenance.get(k)) for k in PROVENANCE_KEYS}
            if old != new:
                diff = [k for k in PROVENANCE_KEYS if old.get(k) != new.get(k)]
                raise AanbenchError(
                    f"store {self.store.root}: array {self.path}/{path} was made with a different "
                    f"{', '.join(diff)} ({_diff_text(old, new, diff)}); it is left untouched. "
                    "Extract into a new store, or bump the extractor's version."
                )
            if arr.dim != dim:
                raise AanbenchError(f"store array {self.path}/{path} has dim {arr.dim}, extractor gives {dim}")
            return arr
        fg = self.group.create_group(path)
        n, rows = self.n_items, self.chunk_rows
        fg.create_array("data", shape=(n, dim), chunks=(rows, dim), dtype="float32", fill_value=float("nan"),
                        dimension_names=["item", "feature"])
        fg.create_array("ok", shape=(n,), chunks=(rows,), dtype="bool", fill_value=False, dimension_names=["item"])
        fg.create_array("error", shape=(n,), chunks=(rows,), dtype=str, fill_value="", dimension_names=["item"])
        fg.create_array("done", shape=(self.n_chunks,), chunks=(1,), dtype="bool", fill_value=False,
                        dimension_names=["chunk"])
        prov = {k: _jsonable(v) for k, v in provenance.items()}
        fg.attrs["provenance"] = prov
        fg.attrs["description"] = (
            f"Features from extractor {key}: data[i] is the {dim}-d float32 vector of item i "
            "(items/id); ok[i] says whether it is valid, error[i] why not."
        )
        return FeatureArray(key, fg)

    def import_rows(self, key: str, values: np.ndarray, provenance: dict[str, Any]) -> FeatureArray:
        """Write a whole (n_items, dim) matrix from elsewhere as a feature array."""
        values = np.asarray(values, dtype=np.float32)
        if values.ndim != 2 or values.shape[0] != self.n_items:
            raise AanbenchError(f"matrix of shape {values.shape} does not fit {self.n_items} items of {self.path}")
        arr = self.create_feature(key, values.shape[1], provenance)
        for c in range(self.n_chunks):
            rows = self.chunk_slice(c)
            block = values[rows]
            ok = np.isfinite(block).all(axis=1)
            errs = ["" if o else "non-finite values in imported row" for o in ok]
            arr.write_chunk(c, rows, block, ok, errs)
        return arr

    @contextlib.contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Exclusive right to write this group for one run (``flock``)."""
        lock_path = Path(self.store.root) / self.path / ".writer.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = ""
                with contextlib.suppress(Exception):
                    holder = os.pread(fd, 200, 0).decode().strip()
                raise AanbenchError(
                    f"store {self.store.root}: another run is writing {self.path} ({holder or 'unknown process'}); "
                    "wait for it to finish, or extract into another store"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}".encode(), 0)
            yield
        finally:
            with contextlib.suppress(Exception):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class FeatureStore:
    """A Zarr v3 store of feature arrays, one group per (dataset, segmentation)."""

    def __init__(self, root: str | Path, mode: str = "a") -> None:
        self.root = Path(root)
        if mode == "r":
            if not (self.root / "zarr.json").is_file():
                raise AanbenchError(f"{self.root}: not an aanbench feature store (no zarr.json)")
            self.zroot = zarr.open_group(str(self.root), mode="r")
            if "aanbench_store" not in self.zroot.attrs:
                raise AanbenchError(f"{self.root}: a Zarr group, but not an aanbench feature store")
        else:
            if self.root.exists() and not self.root.is_dir():
                raise AanbenchError(f"{self.root}: exists and is not a directory")
            if self.root.exists() and any(self.root.iterdir()) and not (self.root / "zarr.json").exists():
                raise AanbenchError(f"{self.root}: a non-empty directory that is not a feature store")
            self.zroot = zarr.open_group(str(self.root), mode="a")
            if "aanbench_store" not in self.zroot.attrs:
                self.zroot.attrs["aanbench_store"] = STORE_FORMAT
                self.zroot.attrs["description"] = "aanbench feature store: <dataset>/<segmentation>/features/<extractor>@<version>"

    def group_paths(self) -> list[str]:
        out = []
        for dname, dgroup in sorted(self.zroot.groups()):
            for sname, _ in sorted(dgroup.groups()):
                out.append(f"{dname}/{sname}")
        return out

    def open_group(self, dataset: str, segmentation: str = "default") -> DatasetGroup:
        path = f"{dataset}/{segmentation}"
        if path not in self.zroot:
            have = ", ".join(self.group_paths()) or "none"
            raise AanbenchError(f"store {self.root}: no group {path} (has {have}); run `aanbench extract {dataset}` first")
        return DatasetGroup(self, self.zroot[path])

    def ensure_group(
        self,
        dataset: str,
        items: Sequence[Item],
        segmentation: str = "default",
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        targets: Sequence[str] = (),
        dataset_version: str = "",
        dataset_config: dict[str, Any] | None = None,
    ) -> DatasetGroup:
        """The group for ``dataset``'s items, created on first use.

        An existing group made from a different list of items, other labels
        or another dataset configuration is refused.
        """
        path = f"{dataset}/{segmentation}"
        fp = items_fingerprint(items)
        if path in self.zroot:
            g = DatasetGroup(self, self.zroot[path])
            if g.attrs.get("items_sha256") != fp:
                raise AanbenchError(
                    f"store {self.root}: group {path} holds a different list of items "
                    f"({g.n_items} stored, {len(items)} now); use another store for this copy of the dataset"
                )
            g.check_dataset_config(dataset_config or {})
            for t in g.targets():
                now = np.array([it.labels.get(t, np.nan) for it in items], dtype=np.float32)
                if not np.array_equal(now, g.labels(t), equal_nan=True):
                    raise AanbenchError(
                        f"store {self.root}: group {path} holds other {t} labels than this copy of the dataset; "
                        "use another store"
                    )
            return g
        if not items:
            raise AanbenchError(f"dataset {dataset}: no items to store")
        if chunk_rows < 1:
            raise AanbenchError(f"chunk rows must be >= 1, not {chunk_rows}")
        zg = self.zroot.create_group(path)
        n = len(items)
        ig = zg.create_group("items")
        for name, values in (
            ("id", [it.id for it in items]),
            ("group", [it.group for it in items]),
            ("split", [it.split for it in items]),
            ("path", [str(it.path) if it.path is not None else "" for it in items]),
        ):
            a = ig.create_array(name, shape=(n,), chunks=(max(n, 1),), dtype=str, fill_value="", dimension_names=["item"])
            a[:] = np.array(values, dtype=object).astype(str)
        for name, values in (("start", [it.start for it in items]), ("end", [it.end for it in items])):
            a = ig.create_array(name, shape=(n,), chunks=(max(n, 1),), dtype="float64", fill_value=float("nan"),
                                dimension_names=["item"])
            a[:] = np.array([_nan_if_none(v) for v in values])
        lg = zg.create_group("labels")
        all_targets = list(dict.fromkeys([*targets, *(t for it in items for t in it.labels)]))
        for t in all_targets:
            a = lg.create_array(t, shape=(n,), chunks=(max(n, 1),), dtype="float32", fill_value=float("nan"),
                                dimension_names=["item"])
            a[:] = np.array([it.labels.get(t, float("nan")) for it in items], dtype=np.float32)
        zg.attrs.update({
            "dataset": dataset,
            "dataset_version": dataset_version,
            "segmentation": segmentation,
            "n_items": n,
            "chunk_rows": int(chunk_rows),
            "items_sha256": fp,
            "dataset_config": _jsonable(dataset_config or {}),
        })
        self.zroot[dataset].attrs["description"] = f"dataset {dataset}: one subgroup per segmentation"
        return DatasetGroup(self, zg)


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, sort_keys=True, default=str))


def _diff_text(old: dict, new: dict, keys: list[str]) -> str:
    parts = []
    for k in keys:
        parts.append(f"{k}: stored {json.dumps(old.get(k), sort_keys=True)[:120]} vs now {json.dumps(new.get(k), sort_keys=True)[:120]}")
    return "; ".join(parts)
