"""The feature store: Zarr v3 on disk, readable without aanbench.

Layout::

    STORE/                               group, attrs {"aanbench_store": 1}
      <dataset>/<segmentation>/          group, attrs: dataset, segmentation,
                                         n_items, chunk_rows, items_sha256
        items/id, group, split, path     str    (n_items,)
        items/start, items/end           float64 (n_items,)  seconds, NaN = open
        labels/<target>                  float32 (n_items,)  NaN = unlabelled
        features/<extractor>@<version>/  group, attrs: provenance, layout, chunk_rows
          data    float32 (n_items, dim)  NaN until written; work chunks of
                                          chunk_rows rows inside shard files
                                          (Zarr v3 sharding, uncompressed)
          ok      bool    (n_items,)      row holds a valid feature vector
          error   str     (n_items,)      why a row failed ('' when ok)
          done    bool    (n_chunks,)     work chunk c is computed: what resume trusts
          staging/                        only during (or after a killed) run:
            data, ok, error, done         the same, one file per work chunk (c.<i>)

A chunk of ``chunk_rows`` rows is the unit of work and of resume: it is
computed and written whole by one worker into ``staging`` (one file per array
per chunk, so concurrent writers never share a file), then marked done there.
When the run ends, the driver, which holds the group's writer lock, packs the
staged chunks into the shard files and removes ``staging``: a finished group
has a handful of files per feature array (``data`` about one shard per
64 MiB), and a whole array reads at file-read speed (:meth:`FeatureArray.read`
reads the shards straight into one buffer). A killed run loses at most the
chunks in flight; its staged chunks are read (and resumed) as done and
packed by the next run.

``data`` is not compressed: float features barely compress (Zarr's
default zstd: 1.08-1.29x on the demo's affect, emobase2010 and logmel
features, 1.08x on normal noise; blosc-lz4 with byte shuffle: 1.00-1.05x)
and zstd decodes at 0.3-1 GB/s, several times slower than reading the file
from the page cache.

Feature arrays written before the layout was recorded (``layout`` attribute
absent: one zstd file per chunk, :data:`LAYOUT_CHUNK_FILES`) are read and
resumed as they are; an unknown ``layout`` is refused with its name.

Zarr has no locking: :meth:`DatasetGroup.writer_lock` holds an exclusive
``flock`` on ``<group>/.writer.lock`` for the length of a run, and a second
run on the same group is refused with a clear message. The file is removed
when the run ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import shutil
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
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


@contextlib.contextmanager
def _partials_unremarked() -> Iterator[None]:
    """A zarr group listing without zarr's warning about ``*.partial`` files: the
    temporary file of a write that was interrupted (zarr writes one, then
    renames it), harmless beside the members, which are complete. (Said at
    the listing: the module-wide filters above do not outlive a test runner's
    per-test warning filters.)"""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Object at .*\.partial is not recognized")
        yield


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


# Feature-array layouts. LAYOUT_PACKED arrays keep their rows in a few shard
# files (work chunks inside); runs write into a per-chunk staging group that
# the run's driver packs at the end (see the module docstring).
LAYOUT_CHUNK_FILES = "chunk-files"  # before layout attrs existed: one zstd file per work chunk
LAYOUT_PACKED = "packed-shards/1"
KNOWN_LAYOUTS = (LAYOUT_CHUNK_FILES, LAYOUT_PACKED)
SHARD_BYTES = 64 * 2**20  # target size of one shard file of ``data``
STAGING = "staging"
_MAX_U64 = 2**64 - 1
_EXPECTED_SHARDING = {
    "name": "sharding_indexed",
    "configuration": {
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
        "index_location": "end",
    },
}


def shard_rows_for(chunk_rows: int, dim: int, n_items: int) -> int:
    """Rows per shard file: whole work chunks, about :data:`SHARD_BYTES` of
    float32, never more than the (chunk-padded) array."""
    per_chunk = max(1, chunk_rows * dim * 4)
    k = max(1, SHARD_BYTES // per_chunk)
    n_chunks = max(1, math.ceil(n_items / chunk_rows))
    return chunk_rows * min(k, n_chunks)


def _read_shard_into(path: Path, out: np.ndarray, row0: int, shard_rows: int, chunk_rows: int) -> bool:
    """Read one uncompressed shard file of ``data`` straight into ``out[row0:...]``.

    The file is the Zarr v3 ``sharding_indexed`` format with raw little-endian
    inner chunks and the index (offset, length per inner chunk, then CRC32C)
    at the end. Missing inner chunks (or a missing file) read as NaN, as Zarr
    reads them. False when the file does not look as expected (the caller
    then reads through Zarr)."""
    n, dim = out.shape
    rows_here = min(n, row0 + shard_rows) - row0
    if rows_here <= 0:
        return True
    n_inner = shard_rows // chunk_rows
    chunk_bytes = chunk_rows * dim * 4
    try:
        f = open(path, "rb", buffering=0)
    except FileNotFoundError:
        out[row0 : row0 + rows_here] = np.nan
        return True
    with f:
        size = os.fstat(f.fileno()).st_size
        idx_len = n_inner * 16 + 4
        if size < idx_len:
            return False
        f.seek(size - idx_len)
        raw = f.read(idx_len)
        if _crc32c is not None and _crc32c(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
            return False
        index = np.frombuffer(raw, dtype="<u8", count=n_inner * 2).reshape(n_inner, 2)
        j = 0
        n_used = math.ceil(rows_here / chunk_rows)
        while j < n_used:
            off, length = int(index[j, 0]), int(index[j, 1])
            r0 = row0 + j * chunk_rows
            if off == _MAX_U64:
                out[r0 : min(n, r0 + chunk_rows)] = np.nan
                j += 1
                continue
            if length != chunk_bytes or off + length > size - idx_len:
                return False
            # extend over the following inner chunks stored right after this one
            k = j + 1
            while k < n_used and int(index[k, 0]) == off + (k - j) * chunk_bytes and int(index[k, 1]) == chunk_bytes:
                k += 1
            r1 = min(n, row0 + k * chunk_rows)
            view = memoryview(out[r0:r1]).cast("B")
            f.seek(off)
            got = 0
            while got < len(view):
                m = f.readinto(view[got:])
                if not m:
                    return False
                got += m
            j = k
    return True


try:  # the checksum Zarr itself uses for the shard index
    import google_crc32c as _gcrc

    def _crc32c(b: bytes) -> int:
        return int(_gcrc.value(b))
except ImportError:  # pragma: no cover - zarr depends on it
    _crc32c = None  # type: ignore[assignment]


@dataclass
class FeatureArray:
    """One extractor's rows in one (dataset, segmentation) group.

    Read through the methods (:meth:`read`, :meth:`ok`, :meth:`errors`,
    :meth:`done`): they combine the packed arrays with chunks a run has
    written but not packed yet (``staging``)."""

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
    def layout(self) -> str:
        """:data:`LAYOUT_PACKED`, or :data:`LAYOUT_CHUNK_FILES` for arrays
        written before layouts were recorded (read and resumed as they are)."""
        layout = str(self.group.attrs.get("layout", LAYOUT_CHUNK_FILES))
        if layout not in KNOWN_LAYOUTS:
            raise AanbenchError(
                f"store array {self.dir}: layout {layout!r} is not one this aanbench reads "
                f"(it knows {', '.join(KNOWN_LAYOUTS)}); upgrade aanbench or extract into a new store"
            )
        return layout

    @property
    def packed(self) -> bool:
        return self.layout == LAYOUT_PACKED

    @property
    def dir(self) -> Path:
        """The array group's folder on disk."""
        return Path(str(self.group.store.root)) / self.group.path

    @property
    def data(self):
        """The packed (or legacy) ``data`` Zarr array; without staged chunks."""
        return self.group["data"]

    @property
    def dim(self) -> int:
        return int(self.data.shape[1])

    @property
    def n_items(self) -> int:
        return int(self.data.shape[0])

    @property
    def chunk_rows(self) -> int:
        return int(self.data.metadata.chunk_grid.chunk_shape[0]) if not self.packed else int(self.group.attrs["chunk_rows"])

    def _chunk_of_rows(self) -> np.ndarray:
        return np.arange(self.n_items) // self.chunk_rows

    # ------------------------------------------------------------ staging
    def _staging(self) -> Any | None:
        # "done" is created last: the group is complete once its metadata is there
        if not self.packed or not (self.dir / STAGING / "done" / "zarr.json").is_file():
            return None
        try:
            return self.group[STAGING]
        except KeyError:  # packed away meanwhile
            return None

    def _ensure_staging(self, clean: bool = False) -> Any:
        """The staging group, created if missing. ``clean``: the caller is the
        run's driver, before any worker writes: a folder left without its
        metadata (a removal cut short) is cleared first. Workers never clear
        anything, and creating it twice at once writes the same metadata."""
        st = self._staging()
        if st is not None:
            return st
        if clean:
            shutil.rmtree(self.dir / STAGING, ignore_errors=True)
        try:
            return self._create_staging()
        except (zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError):
            for _ in range(100):  # another writer is creating it right now
                st = self._staging()
                if st is not None:
                    return st
                time.sleep(0.05)
            raise

    def _create_staging(self) -> Any:
        n, dim, rows = self.n_items, self.dim, self.chunk_rows
        n_chunks = max(1, math.ceil(n / rows))
        sg = self.group.create_group(STAGING, overwrite=False)
        sg.attrs["description"] = ("work chunks written by a run and not yet packed into ../data, ../ok, "
                                   "../error, ../done (aanbench packs them when the run ends); "
                                   "done[c] marks chunk c as written whole")
        # chunk files side by side (c.<i>.0), not one folder per chunk: cheaper to write and to remove
        flat = {"name": "default", "separator": "."}
        sg.create_array("data", shape=(n, dim), chunks=(rows, dim), dtype="float32", fill_value=float("nan"),
                        compressors=None, dimension_names=["item", "feature"], chunk_key_encoding=flat)
        sg.create_array("ok", shape=(n,), chunks=(rows,), dtype="bool", fill_value=False, dimension_names=["item"],
                        chunk_key_encoding=flat)
        sg.create_array("error", shape=(n,), chunks=(rows,), dtype=str, fill_value="", dimension_names=["item"],
                        chunk_key_encoding=flat)
        sg.create_array("done", shape=(n_chunks,), chunks=(1,), dtype="bool", fill_value=False,
                        dimension_names=["chunk"], chunk_key_encoding=flat)
        return sg

    def _staged(self, st: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Staged chunks: (done per chunk, failed-not-done per chunk, errors per row)."""
        sdone = np.asarray(st["done"][:], dtype=bool)
        serr = np.asarray(st["error"][:]).astype(object)
        has_err = np.zeros(len(sdone), dtype=bool)
        np.logical_or.at(has_err, self._chunk_of_rows(), np.array([bool(e) for e in serr], dtype=bool))
        return sdone, has_err & ~sdone, serr

    # ------------------------------------------------------------ reading
    def ok(self) -> np.ndarray:
        ok = np.asarray(self.group["ok"][:], dtype=bool)
        st = self._staging()
        if st is not None:
            sdone, sfailed, _ = self._staged(st)
            rowchunk = self._chunk_of_rows()
            take = sdone[rowchunk]
            sok = np.asarray(st["ok"][:], dtype=bool)
            ok[take] = sok[take]
            failed = sfailed[rowchunk]
            ok[failed] = sok[failed]  # False for every row of a chunk that failed whole
        return ok

    def errors(self) -> np.ndarray:
        err = np.asarray(self.group["error"][:]).astype(object)
        st = self._staging()
        if st is not None:
            sdone, sfailed, serr = self._staged(st)
            take = (sdone | sfailed)[self._chunk_of_rows()]
            err[take] = serr[take]
        return err

    def done(self) -> np.ndarray:
        done = np.asarray(self.group["done"][:], dtype=bool)
        st = self._staging()
        if st is not None:
            done |= np.asarray(st["done"][:], dtype=bool)
        return done

    def read(self, threads: int | None = None) -> np.ndarray:
        """The whole ``(n_items, dim)`` float32 matrix (NaN in rows not written).

        A packed array is read straight from its shard files into one buffer
        (one thread per shard, at most ``threads``, default the CPU count)."""
        out = None
        if self.packed:
            out = self._read_packed(threads)
        if out is None:
            out = np.asarray(self.data[:], dtype=np.float32)
        st = self._staging()
        if st is not None:
            sdone = np.asarray(st["done"][:], dtype=bool)
            for c0, c1 in _runs(np.flatnonzero(sdone)):
                rows = slice(c0 * self.chunk_rows, min(self.n_items, c1 * self.chunk_rows))
                out[rows] = st["data"][rows]
        return out

    def _packed_geometry(self) -> tuple[int, int, int, int] | None:
        """(rows per shard, rows per inner chunk, rows, dim) of ``data`` when its metadata
        is exactly the packed layout the fast reader knows; else None (then
        Zarr reads it)."""
        if sys.byteorder != "little":
            return None
        try:
            meta = json.loads((self.dir / "data" / "zarr.json").read_text())
            (codec,) = meta["codecs"]
            inner = codec["configuration"]["chunk_shape"]
            shard = meta["chunk_grid"]["configuration"]["chunk_shape"]
            _, dim = meta["shape"]
            ok = (meta["data_type"] == "float32" and meta.get("fill_value") == "NaN"
                  and codec["name"] == _EXPECTED_SHARDING["name"]
                  and all(codec["configuration"].get(k) == v for k, v in _EXPECTED_SHARDING["configuration"].items())
                  and inner[1] == dim and shard[1] == dim and shard[0] % inner[0] == 0
                  and meta["chunk_key_encoding"] == {"name": "default", "configuration": {"separator": "/"}}
                  and not meta.get("storage_transformers"))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return (int(shard[0]), int(inner[0]), int(meta["shape"][0]), int(dim)) if ok else None

    def _read_packed(self, threads: int | None) -> np.ndarray | None:
        """``data`` read straight from its shard files into one buffer, one
        thread per shard (at most ``threads``); None if that is not possible."""
        geometry = self._packed_geometry()
        if geometry is None:
            return None
        shard_rows, chunk_rows, n, dim = geometry
        out = np.empty((n, dim), dtype=np.float32)
        ddir = self.dir / "data"

        def one(i_r0: tuple[int, int]) -> bool:
            i, r0 = i_r0
            return _read_shard_into(ddir / "c" / str(i) / "0", out, r0, shard_rows, chunk_rows)

        jobs = list(enumerate(range(0, n, shard_rows)))
        workers = min(len(jobs), threads or os.cpu_count() or 1)
        if workers <= 1:
            results = [one(j) for j in jobs]
        else:
            with ThreadPoolExecutor(workers) as pool:
                results = list(pool.map(one, jobs))
        return out if all(results) else None

    # ------------------------------------------------------------ writing
    def write_chunk(self, chunk: int, rows: slice, values: np.ndarray, ok: np.ndarray, errors: Sequence[str]) -> None:
        """Write one whole chunk's rows, then its done marker (in that order).

        Packed arrays take the chunk into ``staging`` (one file per array per
        chunk, never shared with another writer); the run's driver packs it
        (:meth:`pack`)."""
        target = self._ensure_staging() if self.packed else self.group
        target["data"][rows] = values.astype(np.float32, copy=False)
        target["ok"][rows] = ok.astype(bool, copy=False)
        target["error"][rows] = np.array(list(errors), dtype=object).astype(str)
        target["done"][chunk] = True

    def mark_chunk_failed(self, rows: slice, reason: str) -> None:
        """Record a chunk that could not be computed (done stays False, so a rerun retries it)."""
        n = rows.stop - rows.start
        if not self.packed:
            self.group["ok"][rows] = np.zeros(n, dtype=bool)
            self.group["error"][rows] = np.array([reason or "chunk failed"] * n, dtype=object).astype(str)
            return
        # staged failures are per chunk: stage the whole chunk(s) the rows fall
        # in, the other rows keeping their current flags and errors
        cr = self.chunk_rows
        lo, hi = (rows.start // cr) * cr, min(self.n_items, -(-rows.stop // cr) * cr)
        ok, err = self.ok()[lo:hi].copy(), self.errors()[lo:hi].copy()
        ok[rows.start - lo : rows.stop - lo] = False
        err[rows.start - lo : rows.stop - lo] = reason or "chunk failed"
        st = self._ensure_staging()
        st["ok"][lo:hi] = ok
        st["error"][lo:hi] = np.array([str(e) if e else "" for e in err], dtype=object).astype(str)

    def pack(self) -> int:
        """Move staged chunks into the packed arrays and remove ``staging``;
        returns the number of chunks moved. Only the run holding the group's
        writer lock may call it (it rewrites whole shards)."""
        st = self._staging()
        if st is None:
            return 0
        sdone, sfailed, serr = self._staged(st)
        moved = int(sdone.sum())
        if moved or sfailed.any():
            rows_per_chunk = self.chunk_rows
            shard_rows = int(self.data.metadata.chunk_grid.chunk_shape[0])
            rowchunk = self._chunk_of_rows()
            take = sdone[rowchunk]
            if moved:  # shard by shard: memory stays about one shard
                geometry = self._packed_geometry()
                for i, s0 in enumerate(range(0, self.n_items, shard_rows)):
                    s1 = min(self.n_items, s0 + shard_rows)
                    if not take[s0:s1].any():
                        continue  # shards without new chunks are not rewritten
                    block = np.empty((s1 - s0, self.dim), dtype=np.float32)
                    if take[s0:s1].all():
                        pass  # every row of the shard is new: nothing to keep from the old shard
                    elif geometry is None or not _read_shard_into(self.dir / "data" / "c" / str(i) / "0", block, 0,
                                                                geometry[0], geometry[1]):
                        block = np.asarray(self.data[s0:s1], dtype=np.float32)
                    for c0, c1 in _runs(np.flatnonzero(sdone[s0 // rows_per_chunk : -(-s1 // rows_per_chunk)])):
                        r0 = s0 + c0 * rows_per_chunk
                        r1 = min(s1, s0 + c1 * rows_per_chunk)
                        block[r0 - s0 : r1 - s0] = st["data"][r0:r1]
                    self.data[s0:s1] = block
            ok = np.asarray(self.group["ok"][:], dtype=bool)
            err = np.asarray(self.group["error"][:]).astype(object)
            sok = np.asarray(st["ok"][:], dtype=bool)
            ok[take] = sok[take]
            failed_rows = sfailed[rowchunk]
            ok[failed_rows] = sok[failed_rows]  # False for every row of a chunk that failed whole
            err[take | failed_rows] = serr[take | failed_rows]
            self.group["ok"][:] = ok
            self.group["error"][:] = np.array([str(e) for e in err], dtype=object).astype(str)
            self.group["done"][:] = np.asarray(self.group["done"][:], dtype=bool) | sdone
        shutil.rmtree(self.dir / STAGING, ignore_errors=True)
        return moved

    def write_all(self, values: np.ndarray, ok: np.ndarray, errors: Sequence[str]) -> None:
        """Write every row at once and mark every chunk done (imports; one writer)."""
        if not self.packed:
            rows = self.chunk_rows
            for c in range(max(1, math.ceil(self.n_items / rows))):
                sl = slice(c * rows, min(self.n_items, (c + 1) * rows))
                self.write_chunk(c, sl, values[sl], ok[sl], list(errors[sl.start:sl.stop]))
            return
        shutil.rmtree(self.dir / STAGING, ignore_errors=True)
        self.data[:] = values.astype(np.float32, copy=False)
        self.group["ok"][:] = ok.astype(bool, copy=False)
        self.group["error"][:] = np.array(list(errors), dtype=object).astype(str)
        self.group["done"][:] = True


def _runs(idx: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive runs of sorted integers as half-open ``(first, stop)`` pairs."""
    out: list[tuple[int, int]] = []
    for i in idx.tolist():
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


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
        with _partials_unremarked():
            return sorted(k for k, _ in self.group["labels"].arrays())

    def labels(self, target: str) -> np.ndarray:
        if target not in self.targets():
            raise AanbenchError(f"store group {self.path}: no labels for target {target!r} (has {self.targets()})")
        return np.asarray(self.group[f"labels/{target}"][:], dtype=np.float32)

    # ---------------------------------------------------------- features
    def feature_keys(self) -> list[str]:
        if "features" not in self.group:
            return []
        with _partials_unremarked():
            return sorted(k for k, _ in self.group["features"].groups())

    def feature(self, key: str) -> FeatureArray:
        return FeatureArray(key, self.group[f"features/{key}"])

    def resolve_feature(self, name: str, prefer_version: str | None = None) -> FeatureArray:
        """The array for extractor ``name``: ``name@version`` exactly, else the
        installed version (``prefer_version``) if stored, else the only one stored."""
        exact = name if "@" in name else (f"{name}@{prefer_version}" if prefer_version is not None else None)
        if exact is not None:  # one metadata read instead of listing every array
            try:
                node = self.group[f"features/{exact}"]
            except KeyError:
                node = None
            if isinstance(node, zarr.Group):
                return FeatureArray(exact, node)
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
            if arr.packed:
                arr._ensure_staging(clean=True)  # workers write into it; the run packs it at the end
            return arr
        fg = self.group.create_group(path)
        n, rows = self.n_items, self.chunk_rows
        shard_rows = shard_rows_for(rows, dim, n)
        # data: work chunks of ``rows`` rows inside shard files of ``shard_rows``
        # rows, uncompressed (float features barely compress; reads go at disk speed)
        fg.create_array("data", shape=(n, dim), chunks=(rows, dim), shards=(shard_rows, dim), dtype="float32",
                        fill_value=float("nan"), compressors=None, dimension_names=["item", "feature"])
        fg.create_array("ok", shape=(n,), chunks=(max(n, 1),), dtype="bool", fill_value=False,
                        dimension_names=["item"])
        fg.create_array("error", shape=(n,), chunks=(max(n, 1),), dtype=str, fill_value="",
                        dimension_names=["item"])
        fg.create_array("done", shape=(self.n_chunks,), chunks=(self.n_chunks,), dtype="bool", fill_value=False,
                        dimension_names=["chunk"])
        prov = {k: _jsonable(v) for k, v in provenance.items()}
        fg.attrs.update({
            "provenance": prov,
            "layout": LAYOUT_PACKED,
            "chunk_rows": int(rows),
            "description": (
                f"Features from extractor {key}: data[i] is the {dim}-d float32 vector of item i "
                "(items/id); ok[i] says whether it is valid, error[i] why not; done[c] marks work chunk c "
                f"(rows {rows}*c ...) as computed. data is sharded: {rows}-row chunks in {shard_rows}-row "
                "shard files, uncompressed."
            ),
        })
        arr = FeatureArray(key, fg)
        arr._ensure_staging(clean=True)
        return arr

    def import_rows(self, key: str, values: np.ndarray, provenance: dict[str, Any]) -> FeatureArray:
        """Write a whole (n_items, dim) matrix from elsewhere as a feature array."""
        values = np.asarray(values, dtype=np.float32)
        if values.ndim != 2 or values.shape[0] != self.n_items:
            raise AanbenchError(f"matrix of shape {values.shape} does not fit {self.n_items} items of {self.path}")
        arr = self.create_feature(key, values.shape[1], provenance)
        ok = np.isfinite(values).all(axis=1)
        arr.write_all(values, ok, ["" if o else "non-finite values in imported row" for o in ok])
        return arr

    def read_features(self, names: Sequence[str], threads: int | None = None) -> list[np.ndarray]:
        """The ``(n_items, dim)`` float32 matrices of ``names`` (extractor names
        or ``NAME@VERSION`` keys, resolved as :meth:`resolve_feature` does), in
        order, read concurrently (at most ``threads`` threads, default the CPU count)."""
        arrays = [self.resolve_feature(n) for n in names]
        if len(arrays) <= 1:
            return [a.read(threads) for a in arrays]
        workers = min(len(arrays), threads or os.cpu_count() or 1)
        with ThreadPoolExecutor(max(1, workers)) as pool:
            return list(pool.map(lambda a: a.read(1), arrays))

    def pack(self) -> dict[str, int]:
        """Pack every feature array's staged chunks (see :meth:`FeatureArray.pack`);
        returns chunks moved per array key. Call only while holding :meth:`writer_lock`."""
        return {k: self.feature(k).pack() for k in self.feature_keys()}

    @contextlib.contextmanager
    def writer_lock(self, pack: bool = True) -> Iterator[None]:
        """Exclusive right to write this group for one run (``flock`` on
        ``<group>/.writer.lock``).

        When the run ends (normally or not) the chunks it staged are packed
        (``pack=True``), then the lock file is removed, so a finished store
        holds only Zarr objects (plain ``zarr.open_group`` does not warn about
        it). A run killed outright leaves the file and its staged chunks; both
        are read correctly and cleaned up by the next run."""
        lock_path = Path(self.store.root) / self.path / ".writer.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = ""
                with contextlib.suppress(Exception):
                    holder = os.pread(fd, 200, 0).decode().strip()
                os.close(fd)
                raise AanbenchError(
                    f"store {self.store.root}: another run is writing {self.path} ({holder or 'unknown process'}); "
                    "wait for it to finish, or extract into another store"
                ) from None
            # The holder before us may have removed the file after we opened
            # it: then our lock is on a dead inode, and we try again.
            try:
                same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}".encode(), 0)
            try:
                yield
            finally:
                if pack:
                    self.pack()
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_path)  # while still holding it: see the inode check above
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
        with _partials_unremarked():
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
