"""No wedged store: a disk that fills, or a kill -9, at any step of creating
a group or an array, writing chunks, packing them or removing ``staging``,
and the next run of the same command completes and leaves a store equal,
value for value, to one written without trouble. Two runs started at once
on a new store: the second is told another run is writing.

The failure is injected by a fault hook around Zarr's own file write
(``zarr.storage._local._put``, which every chunk and metadata write of the
store goes through) and around the store's removal of ``staging``; kill -9
is a real ``os._exit`` in a child process."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import aanbench.store as store_mod
from aanbench.contracts import AanbenchError, Item
from aanbench.store import FeatureStore, verify_store

N, CHUNK = 10, 4  # 3 work chunks, the last one short
DIMS = {"a@1": 5, "b@2": 3}


def _items() -> list[Item]:
    return [Item(id=f"it{i:03d}", path=None, labels={"valence": float(i) / 10, "arousal": -float(i)},
                 group=f"g{i % 3}", split="train") for i in range(N)]


def _values(key: str) -> np.ndarray:
    v = np.random.default_rng(DIMS[key]).standard_normal((N, DIMS[key])).astype(np.float32)
    v[5] = np.nan  # a failed row
    return v


def extract_like(root: Path, pause: float = 0.0) -> int:
    """The store's side of ``aanbench extract``: open or create the group and
    its arrays (checking provenance), then under the writer lock write every
    chunk not yet done and pack at the end. Returns the chunks written."""
    import time

    store = FeatureStore(root)
    g = store.ensure_group("ds", _items(), chunk_rows=CHUNK, targets=["valence", "arousal"])
    todo = {}
    for key, dim in DIMS.items():
        arr = g.create_feature(key, dim, {"extractor": key.split("@")[0], "version": key.split("@")[1], "dim": dim})
        todo[key] = np.flatnonzero(~arr.done())
    written = 0
    with g.writer_lock():
        for key, chunks in todo.items():
            values = _values(key)
            arr = g.feature(key)
            for c in chunks:
                rows = g.chunk_slice(c)
                ok = np.isfinite(values[rows]).all(axis=1)
                arr.write_chunk(int(c), rows, values[rows], ok, ["" if o else "no audio" for o in ok])
                written += 1
                time.sleep(pause)
    return written


def _snapshot(root: Path) -> dict:
    g = FeatureStore(root, mode="r").open_group("ds")
    out = {"ids": g.item_ids(), "valence": g.labels("valence"), "arousal": g.labels("arousal"),
           "attrs": {k: v for k, v in g.attrs.items()}}
    for key in g.feature_keys():
        arr = g.feature(key)
        out[key] = (arr.read(), arr.ok(), list(arr.errors()), arr.done(), arr.provenance)
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], tuple):
            np.testing.assert_array_equal(a[k][0], b[k][0])
            for x, y in zip(a[k][1:], b[k][1:]):
                assert np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y, k
        elif isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k])
        else:
            assert a[k] == b[k], k


def _assert_finished(root: Path) -> None:
    assert verify_store(root).ok
    gdir = root / "ds" / "default"
    assert not (gdir / ".writer.lock").exists()
    assert not any(p.name == "staging" for p in (gdir / "features").rglob("*"))


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[dict, list[str]]:
    """A store written without trouble, and the files it wrote, in order."""
    root = tmp_path_factory.mktemp("clean") / "store"
    count: list[str] = []
    real = store_mod.zarr.storage._local._put

    def counting(path, *a, **k):
        count.append(str(Path(path).relative_to(root)))
        return real(path, *a, **k)

    store_mod.zarr.storage._local._put = counting
    try:
        extract_like(root)
    finally:
        store_mod.zarr.storage._local._put = real
    _assert_finished(root)
    return _snapshot(root), count


class DiskFull:
    """From the ``at``-th file write on, every write fails with ENOSPC (a disk
    that stays full), until the hook is removed."""

    def __init__(self, at: int) -> None:
        self.at, self.seen, self.real = at, 0, store_mod.zarr.storage._local._put

    def __call__(self, path, value, exclusive=False):
        self.seen += 1
        if self.seen >= self.at:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return self.real(path, value, exclusive=exclusive)


def _steps(writes: list[str]) -> list[int]:
    """The write numbers (from 1) of each file's first write, and the last
    write: every step of the run (zarr rewrites the parents' metadata with
    each new member; those repeats are the same step, already covered)."""
    first: dict[str, int] = {}
    for i, p in enumerate(writes, 1):
        if "/b@2/staging/c" not in p and "/b@2/staging/" not in p.rsplit("/", 1)[0] + "/":
            first.setdefault(p, i)  # b@2's staged chunks: the same steps as a@1's
    return sorted(set(first.values()) | {len(writes)})


@pytest.mark.slow
def test_disk_full_at_every_step_then_space_back_completes_and_equals_clean(tmp_path: Path, clean,
                                                                           monkeypatch) -> None:
    snapshot, writes = clean
    assert {"ds/default/zarr.json", "ds/default/items/id/c/0", "ds/default/labels/valence/c/0",
            "ds/default/features/a@1/data/zarr.json", "ds/default/features/a@1/staging/data/c.0.0",
            "ds/default/features/b@2/staging/done/c.2", "ds/default/features/a@1/data/c/0/0",
            "ds/default/features/b@2/done/c/0"} <= set(writes)  # group, arrays, staged chunks, packing
    for at in _steps(writes):
        root = tmp_path / f"s{at}"
        hook = DiskFull(at)
        monkeypatch.setattr(store_mod.zarr.storage._local, "_put", hook)
        with pytest.raises((OSError, AanbenchError)):
            extract_like(root)
        monkeypatch.setattr(store_mod.zarr.storage._local, "_put", hook.real)
        extract_like(root)  # the same command, with space back
        _assert_finished(root)
        _assert_same(_snapshot(root), snapshot)
        shutil.rmtree(root)


def test_disk_full_while_removing_staging(tmp_path: Path, clean, monkeypatch) -> None:
    """The removal of ``staging`` cut short after part of it is gone (the chunks
    are packed): the store reads complete, the next run finishes the removal."""
    snapshot, _ = clean
    root = tmp_path / "store"
    real_rmtree = shutil.rmtree

    def partial_rmtree(path, *a, **k):
        path = Path(path)
        if path.name == "staging" and path.exists():
            real_rmtree(path / "error")  # part of it, then the "failure"
            raise OSError(errno.EIO, "Input/output error", str(path))
        return real_rmtree(path, *a, **k)

    monkeypatch.setattr(store_mod.shutil, "rmtree", partial_rmtree)
    with pytest.raises(OSError):
        extract_like(root)
    monkeypatch.setattr(store_mod.shutil, "rmtree", real_rmtree)
    _assert_same(_snapshot(root), snapshot)  # complete as it is
    assert extract_like(root) == 0
    _assert_finished(root)


def test_staging_half_removed_by_an_older_aanbench_is_not_read(tmp_path: Path, clean) -> None:
    """The state that gave ``KeyError: 'error'`` everywhere: ``staging`` with its
    ``done`` metadata but without ``error`` (removed in directory order after
    packing). Reads pass over it, the next run clears it."""
    snapshot, _ = clean
    root = tmp_path / "store"
    extract_like(root)
    for key in DIMS:
        arr = FeatureStore(root).open_group("ds").feature(key)
        arr._create_staging()
        shutil.rmtree(arr.dir / "staging" / "error")
    _assert_same(_snapshot(root), snapshot)
    assert extract_like(root) == 0
    _assert_finished(root)


KILLER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {tests!r})
    import aanbench.store as store_mod
    from test_store_wedge import extract_like
    at, seen = int(sys.argv[1]), [0]
    real = store_mod.zarr.storage._local._put
    def put(path, value, exclusive=False):
        seen[0] += 1
        if seen[0] == at:
            os._exit(137)  # kill -9: no finally, no cleanup
        return real(path, value, exclusive=exclusive)
    store_mod.zarr.storage._local._put = put
    real_rm = store_mod.remove_staging
    def rm(sdir):  # kill -9 halfway through removing staging
        if at < 0:
            os.unlink(sdir / "done" / "zarr.json")
            os._exit(137)
        return real_rm(sdir)
    store_mod.remove_staging = rm
    extract_like(__import__("pathlib").Path(sys.argv[2]))
""")


@pytest.mark.slow
def test_kill_9_at_steps_of_a_first_extraction_then_rerun_completes(tmp_path: Path, clean) -> None:
    snapshot, writes = clean
    writes = len(writes)
    script = tmp_path / "killer.py"
    script.write_text(KILLER.format(tests=str(Path(__file__).parent)))
    # group metadata, items, labels, array creation, staging, chunks, packing; and removing staging
    points = sorted({1, 2, 5, 12, 17, 20, 24, writes // 2, writes - 8, writes - 3, writes - 1, writes, -1})
    for at in points:
        root = tmp_path / f"k{at}"
        r = subprocess.run([sys.executable, str(script), str(at), str(root)], capture_output=True, text=True,
                           timeout=120, env={**os.environ})
        assert r.returncode == 137, (at, r.stderr[-2000:])
        extract_like(root)
        _assert_finished(root)
        _assert_same(_snapshot(root), snapshot)


RACER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from aanbench.contracts import AanbenchError
    from test_store_wedge import extract_like
    try:
        extract_like(__import__("pathlib").Path(sys.argv[1]), pause=0.3)
    except AanbenchError as exc:
        print(exc)
        sys.exit(2)
""")


def test_two_runs_started_at_once_on_a_new_store(tmp_path: Path, clean) -> None:
    snapshot, _ = clean
    script = tmp_path / "racer.py"
    script.write_text(RACER.format(tests=str(Path(__file__).parent)))
    root = tmp_path / "store"
    procs = [subprocess.Popen([sys.executable, str(script), str(root)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    codes = sorted(rc for rc, _, _ in outs)
    assert codes == [0, 2], outs
    (loser,) = [o for o in outs if o[0] == 2]
    assert "another run is writing ds/default" in loser[1] and "stored null" not in loser[1], loser
    _assert_finished(root)
    _assert_same(_snapshot(root), snapshot)
