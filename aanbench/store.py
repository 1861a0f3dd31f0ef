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

Every chunk written since checksums were added ends with its CRC32C (Zarr's
``crc32c`` codec; for ``data``, on each inner chunk of a shard), verified on
every read (:meth:`FeatureArray.read`'s fast reader included). Rows whose
bytes fail (or whose shard file has the wrong size, or whose chunk is marked
done but missing) read as NaN, not ok, with the error "checksum mismatch in
FILE", and their chunk as not done: the next run recomputes it. Metadata that
disagrees with the group (shape, dtype, rows) is refused naming the array.
:func:`verify_store` checks a whole store. Arrays written before (no per-chunk
CRC32C) read as before, their shard index still checked.

Groups and arrays are created under :meth:`FeatureStore.creation_lock` (an
``flock`` on the store folder), their attributes written last in one write:
one found without them (a creation cut short by a full disk or a kill) held
no data yet and is made again. ``staging`` is removed ``done`` metadata first,
so a removal cut short is never read as staged chunks.

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


#: How the error of a row whose stored bytes failed their check begins
#: ("checksum mismatch in FILE", as this module writes it).
DAMAGE_MARK = "checksum mismatch"


def _damaged(errors: np.ndarray) -> np.ndarray:
    """Which rows' errors say their stored bytes are damaged."""
    return np.array([str(e).startswith(DAMAGE_MARK) for e in errors], dtype=bool)


def rows_record(key: str, rows: np.ndarray, item_ids: Any) -> dict[str, Any]:
    """``{"array": key, "rows": count, "ids_sha256": the first 16 hex digits
    of SHA-256 over the rows' item ids (sorted, one per line), "items": the
    first 20 ids}`` of the row indices ``rows`` of one feature array;
    ``item_ids``: a callable giving the group's item ids (callers pass one
    that reads them once: :meth:`DatasetGroup.item_ids` reads and checks the
    stored array on each call)."""
    ids = item_ids()
    names = [str(ids[i]) for i in rows]
    return {"array": str(key), "rows": int(len(rows)),
            "ids_sha256": hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:16],
            "items": names[:20]}


def damage_record(key: str, errors: Sequence[Any], item_ids: Any, ok: Any = None) -> dict[str, Any] | None:
    """The damaged rows of one feature array, from its per-row ``errors``
    (and ``ok`` flags, when given: a damaged row is also not ok), or None
    when it has none: :func:`rows_record`'s record and ``"files"``, the
    damaged files. ``item_ids``: a callable giving the group's item ids,
    called only when there is damage."""
    errs = np.asarray(errors, dtype=object)
    bad = _damaged(errs)
    if ok is not None:
        bad &= ~np.asarray(ok, dtype=bool)
    rows = np.flatnonzero(bad)
    if not rows.size:
        return None
    files = sorted({str(errs[i])[len(DAMAGE_MARK):].removeprefix(" in ") for i in rows})
    return {**rows_record(key, rows, item_ids), "files": files}


def failed_record(key: str, ok: Any, errors: Sequence[Any], item_ids: Any) -> dict[str, Any] | None:
    """The rows of one feature array that are not valid for a reason other
    than damage (extraction failed: no audio, a clip that cannot be decoded,
    not extracted yet), or None when there are none: :func:`rows_record`'s record."""
    rows = np.flatnonzero(~np.asarray(ok, dtype=bool) & ~_damaged(np.asarray(errors, dtype=object)))
    return rows_record(key, rows, item_ids) if rows.size else None


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
_BYTES_LE = {"name": "bytes", "configuration": {"endian": "little"}}
_EXPECTED_SHARDING = {
    "name": "sharding_indexed",
    "configuration": {
        "index_codecs": [_BYTES_LE, {"name": "crc32c"}],
        "index_location": "end",
    },
}
# inner-chunk codecs of ``data`` the fast reader knows: with a CRC32C per
# chunk (written since checksums were added), and without (older stores:
# read as they are, only the shard index checked)
_INNER_WITH_CRC = [_BYTES_LE, {"name": "crc32c"}]
_INNER_WITHOUT_CRC = [_BYTES_LE]


def _crc_codecs(compress: bool) -> list[Any]:
    """Codecs after serialisation for new arrays: a CRC32C per chunk (after zstd when ``compress``)."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return [ZstdCodec(), Crc32cCodec()] if compress else [Crc32cCodec()]


class ProvenanceMismatch(AanbenchError):
    """An existing array was made by another extractor version, configuration,
    set of weights or library versions (the decoder's revision included) than
    the one about to write into it: the store refuses to mix the two.
    ``changes``: ``"key: old -> new"`` for each provenance value that
    differs (each library's version apart)."""

    def __init__(self, message: str, old: dict[str, Any] | None = None, new: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.changes: list[str] = provenance_changes(old or {}, new or {})


def provenance_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two provenances, one ``"what: old -> new"`` per
    value of :data:`PROVENANCE_KEYS` (a dict value, such as the libraries or
    the config, one line per entry that differs: ``"aanbench-decoder 2 -> 3"``)."""
    changes: list[str] = []
    for k in PROVENANCE_KEYS:
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            changes += [f"{'' if k == 'libraries' else k + ' '}{sub} {_short(a.get(sub, '(none)'))} -> "
                        f"{_short(b.get(sub, '(none)'))}" for sub in sorted(set(a) | set(b)) if a.get(sub) != b.get(sub)]
        else:
            changes.append(f"{k}: {_short(a)} -> {_short(b)}")
    return changes


def _short(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


class _Damage:
    """Rows whose stored bytes failed a check, with the reason per row."""

    def __init__(self, n: int) -> None:
        self.rows = np.zeros(n, dtype=bool)
        self.reasons = np.full(n, "", dtype=object)
        self.files: list[str] = []

    def add(self, rows: slice, reason: str) -> None:
        self.rows[rows] = True
        self.reasons[rows] = reason
        if reason not in self.files:
            self.files.append(reason)

    def merge(self, other: "_Damage") -> None:
        self.rows |= other.rows
        self.reasons[other.rows] = other.reasons[other.rows]
        self.files += [f for f in other.files if f not in self.files]


# Damage found by the last full read of an array's ``data``, keyed by the
# array folder and the identity (inode, size, mtime) of its files: a run's
# ``read()`` then ``ok()``/``errors()`` verify the bytes once.
_DAMAGE_CACHE: dict[str, tuple[tuple, _Damage]] = {}



def shard_rows_for(chunk_rows: int, dim: int, n_items: int) -> int:
    """Rows per shard file: whole work chunks, about :data:`SHARD_BYTES` of
    float32, never more than the (chunk-padded) array."""
    per_chunk = max(1, chunk_rows * dim * 4)
    k = max(1, SHARD_BYTES // per_chunk)
    n_chunks = max(1, math.ceil(n_items / chunk_rows))
    return chunk_rows * min(k, n_chunks)


def _read_shard_into(path: Path, out: np.ndarray, row0: int, shard_rows: int, chunk_rows: int,
                     crc: bool = False, part: tuple[int, int] | None = None) -> tuple[list[int], list[int]]:
    """Read one uncompressed shard file of ``data`` straight into ``out[row0:...]``;
    returns the inner chunks (numbered within the shard) that are damaged and
    those that are missing.

    The file is the Zarr v3 ``sharding_indexed`` format with raw little-endian
    inner chunks, each followed by its CRC32C when ``crc`` (arrays written
    since checksums were added), and the index (offset, length per inner
    chunk, then its own CRC32C) at the end. The chunks are read with one
    scatter read (``preadv``) into ``out`` and their checksums into a small
    array, then verified. Missing inner chunks (or a missing file) read as NaN,
    as Zarr reads them; damaged ones (checksum mismatch, wrong length, a file
    of the wrong size or a corrupt index) read as NaN too. ``part``: only the
    inner chunks ``[first, stop)`` of the shard (threads share a shard so)."""
    n, dim = out.shape
    rows_here = min(n, row0 + shard_rows) - row0
    if rows_here <= 0:
        return [], []
    n_inner = shard_rows // chunk_rows
    n_used = math.ceil(rows_here / chunk_rows)
    j0, j1 = part if part is not None else (0, n_used)
    j1 = min(j1, n_used)
    if j0 >= j1:
        return [], []
    part_rows = slice(row0 + j0 * chunk_rows, min(n, row0 + j1 * chunk_rows))
    chunk_bytes = chunk_rows * dim * 4
    stored = chunk_bytes + (4 if crc else 0)

    def rows_of(j: int) -> slice:
        return slice(row0 + j * chunk_rows, min(n, row0 + (j + 1) * chunk_rows))

    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        out[part_rows] = np.nan
        return [], list(range(j0, j1))
    try:
        size = os.fstat(fd).st_size
        idx_len = n_inner * 16 + 4
        raw = os.pread(fd, idx_len, size - idx_len) if size >= idx_len else b""
        if len(raw) != idx_len or _crc32c(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
            out[part_rows] = np.nan  # a truncated, grown or overwritten file
            return list(range(j0, j1)), []
        index = np.frombuffer(raw, dtype="<u8", count=n_inner * 2).reshape(n_inner, 2)
        data_end = size - idx_len
        bad: list[int] = []
        missing: list[int] = []
        sums = np.zeros(n_used, dtype="<u4")
        j = j0
        while j < j1:
            off, length = int(index[j, 0]), int(index[j, 1])
            if off == _MAX_U64:
                out[rows_of(j)] = np.nan
                missing.append(j)
                j += 1
                continue
            if length != stored or off + length > data_end:
                out[rows_of(j)] = np.nan
                bad.append(j)
                j += 1
                continue
            # a run of inner chunks stored back to back, full-height in ``out``
            # (the array's last, partial chunk goes through a scratch buffer)
            k = j
            bufs: list[Any] = []
            scratch = None
            while k < j1 and len(bufs) < 1000 and int(index[k, 0]) == off + (k - j) * stored \
                    and int(index[k, 1]) == stored:
                r = rows_of(k)
                if r.stop - r.start == chunk_rows:
                    bufs.append(memoryview(out[r]).cast("B"))
                else:
                    scratch = np.empty(chunk_bytes, dtype=np.uint8)
                    bufs.append(memoryview(scratch))
                if crc:
                    bufs.append(memoryview(sums[k : k + 1]).cast("B"))
                k += 1
                if scratch is not None:
                    break
            want = (k - j) * stored
            got = os.preadv(fd, bufs, off)
            if got != want:  # the file changed under us: treat the run as damaged
                for i in range(j, k):
                    out[rows_of(i)] = np.nan
                    bad.append(i)
                j = k
                continue
            for i in range(j, k):
                r = rows_of(i)
                raw_chunk = scratch if (scratch is not None and i == k - 1) else out[r].reshape(-1).view(np.uint8)
                if crc and _crc32c(raw_chunk) != int(sums[i]):
                    out[r] = np.nan
                    bad.append(i)
                elif raw_chunk is scratch:
                    out[r] = scratch.view("<f4").reshape(chunk_rows, dim)[: r.stop - r.start]
            j = k
        return bad, missing
    finally:
        os.close(fd)


import google_crc32c as _gcrc  # the checksum of Zarr's crc32c codec (zarr depends on it)


def _crc32c(b: Any) -> int:
    return int(_gcrc.value(b))


@dataclass
class FeatureArray:
    """One extractor's rows in one (dataset, segmentation) group.

    Read through the methods (:meth:`read`, :meth:`ok`, :meth:`errors`,
    :meth:`done`): they combine the packed arrays with chunks a run has
    written but not packed yet (``staging``)."""

    key: str  # "<extractor>@<version>"
    group: Any  # zarr.Group of the feature array
    expected_rows: int | None = None  # the group's n_items, when known: checked against the metadata
    _data: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.key.split("@", 1)[0]

    @property
    def version(self) -> str:
        return self.key.split("@", 1)[1] if "@" in self.key else ""

    @property
    def provenance(self) -> dict[str, Any]:
        return dict(self.group.attrs.get("provenance", {}))

    def provenance_changes(self, provenance: dict[str, Any]) -> list[str]:
        """What differs between the provenance this array was made with and
        ``provenance`` (what a writer would record), as
        :func:`provenance_changes` words it; empty where they match."""
        return provenance_changes({k: self.provenance.get(k) for k in PROVENANCE_KEYS},
                                  comparable_provenance(provenance))

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
        if self._data is None:
            self._data = self.group["data"]  # opened once: its metadata is read on every open
        return self._data

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
        # "done" is created last: the group is complete once its metadata is
        # there. Removal unlinks that file first (see pack), so a removal cut
        # short leaves a folder that is not read (and is cleared by the next run).
        sdir = self.dir / STAGING
        if not self.packed or not (sdir / "done" / "zarr.json").is_file():
            return None
        if not all((sdir / a / "zarr.json").is_file() for a in ("data", "ok", "error")):
            return None  # the remains of a removal by an older aanbench (its chunks were packed)
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
                        compressors=_crc_codecs(False), dimension_names=["item", "feature"], chunk_key_encoding=flat)
        sg.create_array("ok", shape=(n,), chunks=(rows,), dtype="bool", fill_value=False, dimension_names=["item"],
                        chunk_key_encoding=flat, compressors=_crc_codecs(True))
        sg.create_array("error", shape=(n,), chunks=(rows,), dtype=str, fill_value="", dimension_names=["item"],
                        chunk_key_encoding=flat, compressors=_crc_codecs(True))
        sg.create_array("done", shape=(n_chunks,), chunks=(1,), dtype="bool", fill_value=False,
                        dimension_names=["chunk"], chunk_key_encoding=flat, compressors=_crc_codecs(True))
        return sg

    def _chunkwise(self, arr: Any, what: str, damage: _Damage, fill: Any, rows_per_chunk: int,
                   chunks: Sequence[int] | None = None) -> np.ndarray:
        """All of a 1-d or 2-d Zarr array, read whole, or chunk by chunk when a
        chunk fails its check: a failed chunk reads as ``fill`` and its rows
        (of the feature array; ``rows_per_chunk`` rows per chunk of ``arr``)
        are recorded in ``damage``. ``chunks``: read only these chunks."""
        step = int(arr.chunks[0])  # inner chunks of a sharded array
        per_file = int(arr.shards[0]) if getattr(arr, "shards", None) else step
        if chunks is None:
            try:
                return np.asarray(arr[:])
            except Exception:  # noqa: BLE001 - a codec's error on corrupt bytes (ValueError, zstd's, ...)
                chunks = range(math.ceil(arr.shape[0] / step))
        out = np.full(arr.shape, fill, dtype=object if arr.dtype.kind in "OTU" else arr.dtype)
        for c in chunks:
            sl = slice(c * step, min(arr.shape[0], (c + 1) * step))
            try:
                out[sl] = arr[sl]
            except Exception:  # noqa: BLE001
                key = arr.metadata.encode_chunk_key((sl.start // per_file,) + (0,) * (arr.ndim - 1))
                r0 = sl.start * rows_per_chunk
                r1 = sl.stop * rows_per_chunk
                damage.add(slice(r0, min(self.n_items, r1)), f"checksum mismatch in {self.dir / what / key}")
        return out

    def check_metadata(self) -> None:
        """Refuse an array whose metadata disagrees with the group or itself
        (shape, dtype, row count): :class:`AanbenchError` naming the array."""
        n = self.n_items if self.expected_rows is None else self.expected_rows
        where = f"store array {self.dir}"
        data = self.data
        if data.ndim != 2 or data.shape[0] != n:
            raise AanbenchError(f"{where}/data: metadata says shape {tuple(data.shape)}, but the group holds "
                                f"{n} items; the metadata disagrees with the data (extract into a new store)")
        if str(data.dtype) != "float32":
            raise AanbenchError(f"{where}/data: metadata says dtype {data.dtype}, aanbench writes float32")
        want = {"ok": (n,), "error": (n,), "done": (max(1, math.ceil(n / self.chunk_rows)),)}
        for name, shape in want.items():
            try:
                a = self.group[name]
            except KeyError:
                raise AanbenchError(f"{where}: array {name!r} is missing") from None
            if tuple(a.shape) != shape:
                raise AanbenchError(f"{where}/{name}: metadata says shape {tuple(a.shape)}, expected {shape} "
                                    f"for {n} items; the metadata disagrees with the data")
        if str(self.group["ok"].dtype) != "bool" or str(self.group["done"].dtype) != "bool":
            raise AanbenchError(f"{where}: ok and done must be bool arrays")

    @property
    def checksummed(self) -> bool:
        """Whether ``data``'s chunks carry a CRC32C (arrays written since
        checksums were added); older arrays are read without that check."""
        try:
            meta = json.loads((self.dir / "data" / "zarr.json").read_text())
        except (OSError, ValueError):
            return False
        names = [c.get("name") for c in meta.get("codecs", [])]
        if names == ["sharding_indexed"]:
            names = [c.get("name") for c in meta["codecs"][0]["configuration"].get("codecs", [])]
        return "crc32c" in names

    # ------------------------------------------------------------ reading
    def _flags(self, name: str, damage: _Damage) -> np.ndarray:
        a = self.group[name]
        rows = self.chunk_rows if name == "done" else 1
        fill = "" if name == "error" else False
        out = self._chunkwise(a, name, damage, fill, rows)
        return out.astype(object) if name == "error" else np.asarray(out, dtype=bool)

    def _staged(self, st: Any, damage: _Damage | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Staged chunks: (done per chunk, failed-not-done per chunk, errors per row).
        A staged chunk whose flags fail their check is not done (a rerun recomputes it)."""
        dmg = _Damage(self.n_items)
        sdone = np.asarray(self._chunkwise(st["done"], f"{STAGING}/done", dmg, False, self.chunk_rows), dtype=bool)
        serr = self._chunkwise(st["error"], f"{STAGING}/error", dmg, "", 1).astype(object)
        has_err = np.zeros(len(sdone), dtype=bool)
        np.logical_or.at(has_err, self._chunk_of_rows(), np.array([bool(e) for e in serr], dtype=bool))
        bad_chunks = np.zeros(len(sdone), dtype=bool)
        np.logical_or.at(bad_chunks, self._chunk_of_rows(), dmg.rows)
        sdone &= ~bad_chunks
        if damage is not None:
            damage.merge(dmg)
        return sdone, has_err & ~sdone & ~bad_chunks, serr

    def _signature(self) -> tuple:
        """Identity of the files that hold ``data`` and the flags (cache key)."""
        sig = []
        for sub in ("data", "ok", "error", "done", STAGING):
            base = self.dir / sub
            for root, _dirs, files in os.walk(base):
                for f in files:
                    with contextlib.suppress(FileNotFoundError):
                        s = os.stat(os.path.join(root, f))
                        sig.append((os.path.join(root, f), s.st_ino, s.st_size, s.st_mtime_ns))
        return tuple(sorted(sig))

    def _read_checked(self, threads: int | None = None) -> tuple[np.ndarray, _Damage]:
        """The whole matrix with staged chunks applied, and the rows whose
        bytes failed their check (NaN in the matrix)."""
        self.check_metadata()
        sig = self._signature()
        damage = _Damage(self.n_items)
        out = None
        if self.packed:
            got = self._read_packed(threads, damage)
            if got is not None:
                out = got
        if out is None:
            damage = _Damage(self.n_items)
            out = np.asarray(self._chunkwise(self.data, "data", damage, np.nan, 1), dtype=np.float32)
            out[damage.rows] = np.nan
        st = self._staging()
        if st is not None:
            sdone, _, _ = self._staged(st)
            rows_of = self._chunk_of_rows()
            sd = _Damage(self.n_items)
            staged = self._chunkwise(st["data"], f"{STAGING}/data", sd, np.nan, 1, chunks=np.flatnonzero(sdone))
            take = sdone[rows_of]
            out[take] = staged[take]
            damage.rows[take] = False  # rows replaced by staged chunks: the packed bytes no longer matter
            damage.reasons[take] = ""
            damage.merge(sd)
            out[sd.rows] = np.nan
        _DAMAGE_CACHE[str(self.dir)] = (sig, damage)
        if len(_DAMAGE_CACHE) > 256:
            _DAMAGE_CACHE.pop(next(iter(_DAMAGE_CACHE)))
        return out, damage

    def damage(self) -> _Damage:
        """Rows whose stored bytes (``data``, or the flags ``ok``/``error``/
        ``done``, packed or staged) failed their check, with "checksum mismatch
        in FILE" per row. Verifies the files unless the last read of this array
        did and they have not changed since."""
        sig = self._signature()
        whole = _DAMAGE_CACHE.get(str(self.dir) + "|all")
        if whole is not None and whole[0] == sig:
            return whole[1]
        cached = _DAMAGE_CACHE.get(str(self.dir))
        if cached is not None and cached[0] == sig:
            data_damage = cached[1]
        else:
            data_damage = self._read_checked()[1]
        damage = _Damage(self.n_items)
        damage.merge(data_damage)
        for name in ("ok", "error", "done"):
            self._flags(name, damage)
        st = self._staging()
        if st is not None:
            self._staged(st, damage)
            d2 = _Damage(self.n_items)
            self._chunkwise(st["ok"], f"{STAGING}/ok", d2, False, 1)
            damage.merge(d2)
        _DAMAGE_CACHE[str(self.dir) + "|all"] = (sig, damage)
        return damage

    def ok(self) -> np.ndarray:
        """``bool (n_items,)``: the row holds a valid feature vector (False
        where its stored bytes failed their check, see :meth:`damage`)."""
        flags = _Damage(self.n_items)
        ok = self._flags("ok", flags)
        st = self._staging()
        if st is not None:
            sdone, sfailed, _ = self._staged(st)
            rowchunk = self._chunk_of_rows()
            take = sdone[rowchunk]
            sok = np.asarray(self._chunkwise(st["ok"], f"{STAGING}/ok", flags, False, 1), dtype=bool)
            ok[take] = sok[take]
            failed = sfailed[rowchunk]
            ok[failed] = sok[failed]  # False for every row of a chunk that failed whole
        ok &= ~self.damage().rows
        return ok

    def errors(self) -> np.ndarray:
        """``object (n_items,)``: why each row is not valid ('' when it is)."""
        scratch = _Damage(self.n_items)
        err = self._flags("error", scratch)
        st = self._staging()
        if st is not None:
            sdone, sfailed, serr = self._staged(st)
            take = (sdone | sfailed)[self._chunk_of_rows()]
            err[take] = serr[take]
        damage = self.damage()
        err[damage.rows] = damage.reasons[damage.rows]
        return err

    def done(self) -> np.ndarray:
        """``bool (n_chunks,)``: work chunk c is computed and its bytes pass
        their checks (a damaged chunk is not done: the next run recomputes it)."""
        scratch = _Damage(self.n_items)
        done = self._flags("done", scratch)
        st = self._staging()
        if st is not None:
            done |= self._staged(st)[0]
        bad = np.zeros(len(done), dtype=bool)
        np.logical_or.at(bad, self._chunk_of_rows(), self.damage().rows)
        return done & ~bad

    def read(self, threads: int | None = None) -> np.ndarray:
        """The whole ``(n_items, dim)`` float32 matrix (NaN in rows not written
        and in rows whose bytes failed their check: :meth:`ok` is False there
        and :meth:`errors` says "checksum mismatch in FILE").

        A packed array is read straight from its shard files into one buffer
        (one thread per shard, at most ``threads``, default the CPU count),
        each chunk verified against its CRC32C."""
        return self._read_checked(threads)[0]

    def _packed_geometry(self) -> tuple[int, int, int, int, bool] | None:
        """(rows per shard, rows per inner chunk, rows, dim, chunks carry a
        CRC32C) of ``data`` when its metadata is exactly the packed layout the
        fast reader knows; else None (then Zarr reads it)."""
        if sys.byteorder != "little":
            return None
        try:
            meta = json.loads((self.dir / "data" / "zarr.json").read_text())
            (codec,) = meta["codecs"]
            inner = codec["configuration"]["chunk_shape"]
            shard = meta["chunk_grid"]["configuration"]["chunk_shape"]
            _, dim = meta["shape"]
            inner_codecs = codec["configuration"].get("codecs")
            ok = (meta["data_type"] == "float32" and meta.get("fill_value") == "NaN"
                  and codec["name"] == _EXPECTED_SHARDING["name"]
                  and all(codec["configuration"].get(k) == v for k, v in _EXPECTED_SHARDING["configuration"].items())
                  and inner_codecs in (_INNER_WITH_CRC, _INNER_WITHOUT_CRC)
                  and inner[1] == dim and shard[1] == dim and shard[0] % inner[0] == 0
                  and meta["chunk_key_encoding"] == {"name": "default", "configuration": {"separator": "/"}}
                  and not meta.get("storage_transformers"))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not ok:
            return None
        return int(shard[0]), int(inner[0]), int(meta["shape"][0]), int(dim), inner_codecs == _INNER_WITH_CRC

    def _read_packed(self, threads: int | None, damage: _Damage | None = None) -> np.ndarray | None:
        """``data`` read straight from its shard files into one buffer, one
        thread per shard (at most ``threads``); None if that is not possible.
        Damaged chunks, and chunks marked done but missing, go into ``damage``."""
        geometry = self._packed_geometry()
        if geometry is None:
            return None
        shard_rows, chunk_rows, n, dim, crc = geometry
        damage = damage if damage is not None else _Damage(n)
        out = np.empty((n, dim), dtype=np.float32)
        ddir = self.dir / "data"

        def one(job: tuple[int, int, tuple[int, int]]) -> tuple[list[int], list[int]]:
            i, r0, part = job
            return _read_shard_into(ddir / "c" / str(i) / "0", out, r0, shard_rows, chunk_rows, crc, part)

        # jobs of about 8 MiB (whole inner chunks), so threads share large
        # shards: one reads while another verifies checksums
        per_job = max(1, (8 << 20) // max(1, chunk_rows * dim * 4))
        shards = list(enumerate(range(0, n, shard_rows)))
        jobs = [(i, r0, (j, j + per_job)) for i, r0 in shards
                for j in range(0, math.ceil((min(n, r0 + shard_rows) - r0) / chunk_rows), per_job)]
        workers = min(len(jobs), threads or os.cpu_count() or 1)
        if workers <= 1:
            results = [one(j) for j in jobs]
        else:
            with ThreadPoolExecutor(workers) as pool:
                results = list(pool.map(one, jobs))
        merged: dict[int, tuple[list[int], list[int]]] = {}
        for (i, _, _), (bad, missing) in zip(jobs, results):
            merged.setdefault(i, ([], []))
            merged[i][0].extend(bad)
            merged[i][1].extend(missing)
        results = [merged.get(i, ([], [])) for i, _ in shards]
        jobs = shards
        if any(missing for _, missing in results):
            # Zarr does not store a chunk that is all fill (NaN: every row
            # failed), so a missing chunk is damage only where a row says ok
            ok = self._flags("ok", _Damage(n))
        for (i, r0), (bad, missing) in zip(jobs, results):
            fname = ddir / "c" / str(i) / "0"
            for j in bad:
                damage.add(slice(r0 + j * chunk_rows, min(n, r0 + (j + 1) * chunk_rows)),
                           f"checksum mismatch in {fname}")
            for j in missing:
                rows = slice(r0 + j * chunk_rows, min(n, r0 + (j + 1) * chunk_rows))
                if ok[rows].any():  # valid rows, yet their chunk is not there
                    damage.add(rows, f"checksum mismatch in {fname} (chunk missing)")
        return out

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
        writer lock may call it (it rewrites whole shards).

        Chunks whose bytes fail their check (staged or packed, data or flags)
        are written as not done, not ok, with the reason "checksum mismatch in
        FILE", so the next run recomputes them; nothing damaged becomes valid
        by being rewritten."""
        st = self._staging()
        if st is None:
            return 0
        n, cr = self.n_items, self.chunk_rows
        lost = _Damage(n)  # rows found damaged here, and not replaced by staged chunks
        sdone, sfailed, serr = self._staged(st, lost)
        rowchunk = self._chunk_of_rows()
        if sdone.any() or sfailed.any() or lost.rows.any():
            shard_rows = int(self.data.metadata.chunk_grid.chunk_shape[0])
            geometry = self._packed_geometry()
            for i, s0 in enumerate(range(0, n, shard_rows)):  # shard by shard: memory stays about one shard
                s1 = min(n, s0 + shard_rows)
                cs = range(s0 // cr, -(-s1 // cr))
                new = [c for c in cs if sdone[c]]
                if not new:
                    continue  # shards without new chunks are not rewritten
                block = np.full((s1 - s0, self.dim), np.nan, dtype=np.float32)
                shard_file = self.dir / "data" / "c" / str(i) / "0"
                if len(new) < len(cs):  # keep the old shard's other chunks
                    if geometry is not None:
                        bad, _ = _read_shard_into(shard_file, block, 0, geometry[0], geometry[1], geometry[4])
                        for j in bad:
                            lost.add(slice(s0 + j * geometry[1], min(s1, s0 + (j + 1) * geometry[1])),
                                     f"checksum mismatch in {shard_file}")
                    else:
                        try:
                            block = np.asarray(self.data[s0:s1], dtype=np.float32)
                        except Exception:  # noqa: BLE001 - a codec's error on corrupt bytes
                            lost.add(slice(s0, s1), f"checksum mismatch in {shard_file}")
                for c in new:
                    r = slice(c * cr, min(n, (c + 1) * cr))
                    try:
                        block[r.start - s0 : r.stop - s0] = st["data"][r]
                    except Exception:  # noqa: BLE001
                        sdone[c] = False
                        block[r.start - s0 : r.stop - s0] = np.nan
                        lost.add(r, f"checksum mismatch in {self.dir / STAGING / 'data' / f'c.{c}.0'}")
                    else:
                        lost.rows[r] = False
                        lost.reasons[r] = ""
                self.data[s0:s1] = block
            flags = _Damage(n)
            ok = self._flags("ok", flags)
            err = self._flags("error", flags)
            done = self._flags("done", flags)
            take = sdone[rowchunk]
            flags.rows[take] = False  # replaced below
            lost.merge(flags)
            sok = np.asarray(self._chunkwise(st["ok"], f"{STAGING}/ok", lost, False, 1), dtype=bool)
            ok[take] = sok[take]
            failed_rows = sfailed[rowchunk]
            ok[failed_rows] = sok[failed_rows]  # False for every row of a chunk that failed whole
            err[take | failed_rows] = serr[take | failed_rows]
            done |= sdone
            bad_rows = lost.rows & ~take
            ok[bad_rows] = False
            err[bad_rows] = lost.reasons[bad_rows]
            bad_chunks = np.zeros(len(done), dtype=bool)
            np.logical_or.at(bad_chunks, rowchunk, bad_rows)
            done &= ~bad_chunks
            self.group["ok"][:] = ok
            self.group["error"][:] = np.array([str(e) for e in err], dtype=object).astype(str)
            self.group["done"][:] = done
        moved = int(sdone.sum())
        remove_staging(self.dir / STAGING)
        return moved

    def write_all(self, values: np.ndarray, ok: np.ndarray, errors: Sequence[str]) -> None:
        """Write every row at once and mark every chunk done (imports; one writer)."""
        if not self.packed:
            rows = self.chunk_rows
            for c in range(max(1, math.ceil(self.n_items / rows))):
                sl = slice(c * rows, min(self.n_items, (c + 1) * rows))
                self.write_chunk(c, sl, values[sl], ok[sl], list(errors[sl.start:sl.stop]))
            return
        remove_staging(self.dir / STAGING)
        self.data[:] = values.astype(np.float32, copy=False)
        self.group["ok"][:] = ok.astype(bool, copy=False)
        self.group["error"][:] = np.array(list(errors), dtype=object).astype(str)
        self.group["done"][:] = True


def remove_staging(sdir: Path) -> None:
    """Remove a staging folder: its ``done`` metadata first (one unlink, so a
    removal cut short leaves a folder that is not read as staging), then the rest."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(sdir / "done" / "zarr.json")
    shutil.rmtree(sdir, ignore_errors=True)
    if sdir.exists():  # e.g. a file that could not be removed: said, not hidden
        raise AanbenchError(f"could not remove {sdir} (its chunks are packed): remove it by hand with `rm -r {sdir}`")


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
    def _whole(self, name: str) -> np.ndarray:
        """A whole item or label array, its length checked against ``n_items``
        and its bytes against their checksums: else :class:`AanbenchError` naming it."""
        where = Path(self.store.root) / self.path / name
        try:
            arr = self.group[name]
        except KeyError:
            raise AanbenchError(f"store group {self.path}: array {name} is missing ({where})") from None
        if tuple(arr.shape) != (self.n_items,):
            raise AanbenchError(f"store array {where}: metadata says shape {tuple(arr.shape)}, but the group holds "
                                f"{self.n_items} items; the metadata disagrees with the data")
        try:
            return np.asarray(arr[:])
        except Exception as exc:  # noqa: BLE001 - a codec's error on corrupt bytes
            raise AanbenchError(f"store array {where}: checksum mismatch in {where / 'c' / '0'} "
                                f"({type(exc).__name__}); extract into a new store") from None

    def item_ids(self) -> list[str]:
        return [str(x) for x in self._whole("items/id")]

    def groups(self) -> np.ndarray:
        return np.array([str(x) for x in self._whole("items/group")], dtype=str)

    def splits(self) -> np.ndarray:
        return np.array([str(x) for x in self._whole("items/split")], dtype=str)

    def starts(self) -> np.ndarray:
        """``float64 (n_items,)`` window starts in seconds (NaN: the file's beginning)."""
        return np.asarray(self._whole("items/start"), dtype=np.float64)

    def ends(self) -> np.ndarray:
        """``float64 (n_items,)`` window ends in seconds (NaN: the file's end)."""
        return np.asarray(self._whole("items/end"), dtype=np.float64)

    def paths(self) -> list[str]:
        return [str(x) for x in self._whole("items/path")]

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
        return np.asarray(self._whole(f"labels/{target}"), dtype=np.float32)

    # ---------------------------------------------------------- features
    def feature_keys(self) -> list[str]:
        if "features" not in self.group:
            return []
        with _partials_unremarked():
            return sorted(k for k, _ in self.group["features"].groups())

    def feature(self, key: str) -> FeatureArray:
        return FeatureArray(key, self.group[f"features/{key}"], self.n_items)

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
                return FeatureArray(exact, node, self.n_items)
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
        with self.store.creation_lock():
            return self._create_feature(key, dim, provenance)

    def _create_feature(self, key: str, dim: int, provenance: dict[str, Any]) -> FeatureArray:
        path = f"features/{key}"
        fdir = Path(self.store.root) / self.path / path
        if fdir.exists() and not self._feature_complete(path):
            # a creation cut short (disk full, kill -9): nothing was ever
            # written into it (chunks come after the provenance), so it is made again
            shutil.rmtree(fdir)
        if path in self.group:
            arr = self.feature(key)
            old = {k: arr.provenance.get(k) for k in PROVENANCE_KEYS}
            new = comparable_provenance(provenance)
            if old != new:
                diff = [k for k in PROVENANCE_KEYS if old.get(k) != new.get(k)]
                raise ProvenanceMismatch(
                    f"store {self.store.root}: array {self.path}/{path} was made with a different "
                    f"{', '.join(diff)} ({'; '.join(provenance_changes(old, new))}); it is left untouched. "
                    + ("Rows from two versions of the libraries are never mixed in one array: extract into a new "
                       "store (--store), or run with the versions that made it." if diff == ["libraries"] else
                       "Extract into a new store, or bump the extractor's version."), old, new
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
                        fill_value=float("nan"), compressors=_crc_codecs(False), dimension_names=["item", "feature"])
        fg.create_array("ok", shape=(n,), chunks=(max(n, 1),), dtype="bool", fill_value=False,
                        dimension_names=["item"], compressors=_crc_codecs(True))
        fg.create_array("error", shape=(n,), chunks=(max(n, 1),), dtype=str, fill_value="",
                        dimension_names=["item"], compressors=_crc_codecs(True))
        fg.create_array("done", shape=(self.n_chunks,), chunks=(self.n_chunks,), dtype="bool", fill_value=False,
                        dimension_names=["chunk"], compressors=_crc_codecs(True))
        prov = {k: _jsonable(v) for k, v in provenance.items()}
        fg.update_attributes({  # one write (attrs.update writes once per key): complete, or absent
            "provenance": prov,
            "layout": LAYOUT_PACKED,
            "chunk_rows": int(rows),
            "description": (
                f"Features from extractor {key}: data[i] is the {dim}-d float32 vector of item i "
                "(items/id); ok[i] says whether it is valid, error[i] why not; done[c] marks work chunk c "
                f"(rows {rows}*c ...) as computed. data is sharded: {rows}-row chunks in {shard_rows}-row "
                "shard files, uncompressed; every chunk (of data, ok, error, done) ends with its CRC32C."
            ),
        })
        arr = FeatureArray(key, fg, n)
        arr._ensure_staging(clean=True)
        return arr

    def drop_feature(self, key: str) -> bool:
        """Remove feature array ``key`` and its rows (for a cache whose array
        was made by other versions: the curve's store). Its metadata goes
        first, so a removal cut short leaves an incomplete array, which the
        next :meth:`create_feature` clears. Returns whether it existed."""
        with self.store.creation_lock():
            fdir = Path(self.store.root) / self.path / "features" / key
            if not fdir.is_dir():
                return False
            (fdir / "zarr.json").unlink(missing_ok=True)
            shutil.rmtree(fdir)
            return True

    def _feature_complete(self, path: str) -> bool:
        """Whether the feature array at ``path`` was created whole: its group
        with provenance (written after its four arrays) and the arrays' metadata."""
        fdir = Path(self.store.root) / self.path / path
        try:
            meta = json.loads((fdir / "zarr.json").read_text())
        except (OSError, ValueError):
            return False
        attrs = meta.get("attributes", {})
        if "provenance" not in attrs:
            return False
        try:  # packed data (sharded) without its layout: attributes written key by key, cut short
            sharded = json.loads((fdir / "data" / "zarr.json").read_text())["codecs"][0]["name"] == "sharding_indexed"
        except (OSError, ValueError, KeyError, IndexError):
            return False
        if sharded and not {"layout", "chunk_rows"} <= set(attrs):
            return False
        return all((fdir / a / "zarr.json").is_file() for a in ("data", "ok", "error", "done"))

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
            existed = self.root.is_dir()
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise AanbenchError(f"{self.root}: cannot create the store folder ({exc.strerror})") from None
            # Under the creation lock: two runs started at once on a new store would otherwise
            # both find no root group and both create it (Zarr's ContainsGroupError for the second).
            with self.creation_lock():
                if not (self.root / "zarr.json").exists() and any(
                        not p.name.endswith(".partial") for p in self.root.iterdir()):  # a write cut short is no content
                    raise AanbenchError(f"{self.root}: a non-empty directory that is not a feature store")
                try:
                    self.zroot = zarr.open_group(str(self.root), mode="a")
                    if "aanbench_store" not in self.zroot.attrs:
                        self.zroot.update_attributes({
                            "aanbench_store": STORE_FORMAT,
                            "description": "aanbench feature store: "
                                           "<dataset>/<segmentation>/features/<extractor>@<version>"})
                except BaseException:
                    if not existed and not any(self.root.iterdir()):
                        self.root.rmdir()  # leave no empty folder behind a failed creation
                    raise

    @contextlib.contextmanager
    def creation_lock(self, timeout: float = 600.0) -> Iterator[None]:
        """Exclusive right to create or repair groups and arrays in this store:
        an ``flock`` on the store's folder itself (no file is left behind), held
        for the few moments a creation takes. Two runs started at once on a new
        store then create it once; the second finds it complete and waits on
        (or is refused by) the group's :meth:`DatasetGroup.writer_lock`."""
        fd = os.open(self.root, os.O_RDONLY)
        try:
            t0 = time.monotonic()
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() - t0 > timeout:
                        raise AanbenchError(f"store {self.root}: another run is creating arrays in it "
                                            f"(waited {timeout:.0f} s); try again when it is done") from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # releases the lock

    def drop_group(self, dataset: str, segmentation: str = "default") -> bool:
        """Remove the group of ``dataset``/``segmentation`` and every array in
        it (for a cache whose group no longer fits: the curve's store). Its
        metadata goes first, so a removal cut short leaves an incomplete
        group, which the next :meth:`ensure_group` clears. Returns whether it
        existed."""
        with self.creation_lock():
            gdir = self.root / dataset / segmentation
            if not gdir.is_dir():
                return False
            (gdir / "zarr.json").unlink(missing_ok=True)
            shutil.rmtree(gdir)
            return True

    def _group_complete(self, path: str) -> bool:
        try:
            meta = json.loads((self.root / path / "zarr.json").read_text())
        except (OSError, ValueError):
            return False
        return {"items_sha256", "n_items", "chunk_rows"} <= set(meta.get("attributes", {}))

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
        with self.creation_lock():
            return self._ensure_group(dataset, items, segmentation, chunk_rows, targets, dataset_version,
                                      dataset_config)

    def _ensure_group(self, dataset: str, items: Sequence[Item], segmentation: str, chunk_rows: int,
                      targets: Sequence[str], dataset_version: str,
                      dataset_config: dict[str, Any] | None) -> DatasetGroup:
        path = f"{dataset}/{segmentation}"
        fp = items_fingerprint(items)
        gdir = self.root / dataset / segmentation
        if gdir.exists() and not self._group_complete(path):
            # a creation cut short (disk full, kill -9): its attributes, written
            # last, are missing; it holds no features yet, so it is made again
            shutil.rmtree(gdir)
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
            a = ig.create_array(name, shape=(n,), chunks=(max(n, 1),), dtype=str, fill_value="", dimension_names=["item"],
                                compressors=_crc_codecs(True))
            a[:] = np.array(values, dtype=object).astype(str)
        for name, values in (("start", [it.start for it in items]), ("end", [it.end for it in items])):
            a = ig.create_array(name, shape=(n,), chunks=(max(n, 1),), dtype="float64", fill_value=float("nan"),
                                compressors=_crc_codecs(True),
                                dimension_names=["item"])
            a[:] = np.array([_nan_if_none(v) for v in values])
        lg = zg.create_group("labels")
        all_targets = list(dict.fromkeys([*targets, *(t for it in items for t in it.labels)]))
        for t in all_targets:
            a = lg.create_array(t, shape=(n,), chunks=(max(n, 1),), dtype="float32", fill_value=float("nan"),
                                compressors=_crc_codecs(True),
                                dimension_names=["item"])
            a[:] = np.array([it.labels.get(t, float("nan")) for it in items], dtype=np.float32)
        zg.update_attributes({  # one write (attrs.update writes once per key): complete, or absent
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


def comparable_provenance(provenance: dict[str, Any]) -> dict[str, Any]:
    """The values of ``provenance`` that an existing array must match
    (:data:`PROVENANCE_KEYS`), as the store records them (JSON types)."""
    return {k: _jsonable(provenance.get(k)) for k in PROVENANCE_KEYS}


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, sort_keys=True, default=str))


@dataclass
class StoreVerification:
    """What :func:`verify_store` found: ``problems`` (one line each: an array
    whose metadata disagrees with its data, or rows whose bytes fail their
    check, with the file), ``unchecked`` (arrays written before checksums,
    read without that check), and counts."""

    root: Path
    groups: int = 0
    arrays: int = 0
    rows: int = 0
    damaged_rows: int = 0
    problems: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        """A report for people: a summary line, then one line per problem."""
        head = (f"store {self.root}: {self.groups} group(s), {self.arrays} feature array(s), {self.rows} rows checked: "
                + ("no problems" if self.ok else f"{len(self.problems)} problem(s), {self.damaged_rows} damaged row(s)"))
        out = [head] + [f"  {p}" for p in self.problems]
        if self.unchecked:
            out.append(f"  without checksums (written by an older aanbench; only the shard index is checked): "
                       f"{', '.join(self.unchecked)}")
        if not self.ok and self.damaged_rows:
            out.append("  rerun `aanbench extract` on this store to recompute the damaged chunks")
        return out


def verify_store(path: str | Path) -> StoreVerification:
    """Read every array of the store at ``path`` and check it: metadata
    against the group (shapes, dtypes, row counts), every chunk against its
    CRC32C, shard files against their size and index. Nothing is written.
    Raises :class:`AanbenchError` only when ``path`` is not a feature store."""
    store = FeatureStore(path, mode="r")
    rep = StoreVerification(Path(path))
    for gpath in store.group_paths():
        try:
            g = store.open_group(*gpath.split("/", 1))
            n = g.n_items
        except (AanbenchError, KeyError, ValueError) as exc:
            rep.problems.append(f"{gpath}: not a complete group ({exc}); rerun `aanbench extract` to make it again")
            continue
        rep.groups += 1
        for name in ("items/id", "items/group", "items/split", "items/path", "items/start", "items/end",
                     *(f"labels/{t}" for t in g.targets())):
            try:
                g._whole(name)
            except AanbenchError as exc:
                rep.problems.append(str(exc))
        for key in g.feature_keys():
            rep.arrays += 1
            arr = g.feature(key)
            where = f"{gpath}/features/{key}"
            try:
                arr.check_metadata()
                if not arr.checksummed:
                    rep.unchecked.append(where)
                damage = arr.damage()
            except AanbenchError as exc:
                rep.problems.append(str(exc))
                continue
            rep.rows += n
            rep.damaged_rows += int(damage.rows.sum())
            for reason in damage.files:
                rows = np.flatnonzero(damage.reasons == reason)
                rep.problems.append(f"{where}: {reason}: {len(rows)} row(s) ({_row_ranges(rows)}) "
                                    "read as invalid")
    return rep


def _row_ranges(rows: np.ndarray) -> str:
    parts: list[str] = []
    start = prev = None
    for r in rows.tolist() + [None]:
        if start is None:
            start = prev = r
        elif r is not None and r == prev + 1:
            prev = r
        else:
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = r
    return ", ".join(parts[:8]) + (" ..." if len(parts) > 8 else "")
